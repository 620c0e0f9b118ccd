"""A file of encoded windows, for a fixed held-out set: each entry is a u32 little-endian length, then that many
bytes of the window wire format (:mod:`ingest.contract.wire`). Written atomically; read whole."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from ingest.contract import WindowDecodeError, decode_header
from ingest.runtime.durable_files import write_atomically

MAGIC = b"SSLWINDOWS1\n"
_LENGTH = struct.Struct("<I")


def write_windows_file(path: Path, messages: Iterable[bytes]) -> int:
    """Write ``messages`` (encoded windows) to ``path`` atomically and durably; return the count."""
    parts = [MAGIC]
    for message in messages:
        parts += [_LENGTH.pack(len(message)), message]
    write_atomically(path, b"".join(parts))
    return (len(parts) - 1) // 2


def read_windows_file(path: Path) -> list[bytes]:
    """Every encoded window in ``path``; ``WindowDecodeError`` if the file is not a windows file or is cut short.

    Each entry's header and CRC are checked, so a damaged file is refused here rather than mid-evaluation.
    """
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise WindowDecodeError(f"{path} is not a windows file (no {MAGIC!r} magic)")
    position = len(MAGIC)
    messages: list[bytes] = []
    while position < len(data):
        if position + _LENGTH.size > len(data):
            raise WindowDecodeError(f"{path}: truncated after {len(messages)} windows")
        (length,) = _LENGTH.unpack_from(data, position)
        position += _LENGTH.size
        message = data[position : position + length]
        if len(message) != length:
            raise WindowDecodeError(f"{path}: window {len(messages)} is truncated")
        try:
            decode_header(message)
        except WindowDecodeError as error:
            raise WindowDecodeError(f"{path}: window {len(messages)}: {error}") from error
        messages.append(message)
        position += length
    return messages
