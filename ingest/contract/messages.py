"""How a window travels as a bus message: key = camera id, value = the wire bytes, schema and type as headers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ingest.contract.errors import WindowDecodeError
from ingest.contract.records import Headers, Record
from ingest.contract.window import Window
from ingest.contract.wire import (
    CONTENT_TYPE,
    DEFAULT_MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    WindowHeader,
    decode_header,
    decode_window,
    encode_window,
)

HEADER_SCHEMA_VERSION = "streamssl-schema-version"
HEADER_CONTENT_TYPE = "content-type"


@dataclass(frozen=True)
class WindowMessage:
    key: bytes
    value: bytes
    headers: Headers


def window_message(window: Window, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> WindowMessage:
    """Encode ``window`` for the bus; raises :class:`WindowTooLargeError` if it is over ``max_bytes``."""
    return WindowMessage(window_key(window), encode_window(window, max_bytes=max_bytes), window_headers(window))


def window_key(window: Window) -> bytes:
    """The Kafka key: the camera id, so one camera's windows share a partition and stay in order."""
    return window.camera_id.encode("utf-8")


def window_headers(window: Window) -> Headers:
    return (
        (HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION).encode()),
        (HEADER_CONTENT_TYPE, f"{CONTENT_TYPE}; codec={window.codec.value}".encode()),
    )


def window_from_record(record: Record) -> Window:
    """Decode a received record; raises :class:`WindowDecodeError` naming the partition and offset on failure."""
    return _checked(record, decode_window)


def header_from_record(record: Record) -> WindowHeader:
    """Check a received record as :func:`window_from_record` does (schema header, wire header, CRC, key) without
    decoding its frames; raises :class:`WindowDecodeError` naming the partition and offset on failure."""
    return _checked(record, decode_header)


_Decoded = TypeVar("_Decoded", Window, WindowHeader)


def _checked(record: Record, decode: Callable[[bytes], _Decoded]) -> _Decoded:
    try:
        _check_schema_header(record)
        decoded = decode(record.value)
        if record.key is not None and record.key != decoded.camera_id.encode("utf-8"):
            raise WindowDecodeError(f"key {record.key!r} does not match the window's camera {decoded.camera_id!r}")
        return decoded
    except WindowDecodeError as error:
        raise WindowDecodeError(f"{record.position}: {error}") from error


def _check_schema_header(record: Record) -> None:
    declared = record.header(HEADER_SCHEMA_VERSION)
    if declared is not None and (not declared.isdigit() or int(declared) > SCHEMA_VERSION):
        raise WindowDecodeError(
            f"header {HEADER_SCHEMA_VERSION}={declared!r} is not a schema version this reader knows "
            f"(up to {SCHEMA_VERSION})"
        )
