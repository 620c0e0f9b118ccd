"""The one dead-letter message format: a message a consumer of ``T`` cannot use goes to ``T.dlq`` unchanged (key,
value, its headers) plus the reason and where it came from, so an operator can inspect it and replay it."""

from __future__ import annotations

from ingest.contract.records import Headers, Record

HEADER_ERROR = "streamssl-error"  # why the message was parked (UTF-8, at most MAX_REASON_BYTES)
HEADER_SOURCE = "streamssl-source"  # topic[partition]@offset of the input the dead letter came from
MAX_REASON_BYTES = 4096


def dead_letter_headers(record: Record, reason: str) -> Headers:
    """The record's own headers plus the reason (cut at a character boundary) and its position."""
    cut = reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", errors="ignore")
    return (*record.headers, (HEADER_ERROR, cut.encode("utf-8")), (HEADER_SOURCE, record.position.encode()))
