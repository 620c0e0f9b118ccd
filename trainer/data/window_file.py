"""A file of encoded windows, for a fixed held-out set: each entry is a u32 little-endian length, then that many
bytes of the window wire format (:mod:`ingest.contract.wire`). Written atomically; read whole."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

from ingest.contract import WindowDecodeError, decode_header

MAGIC = b"SSLWINDOWS1\n"
_LENGTH = struct.Struct("<I")


def write_windows_file(path: Path, messages: Iterable[bytes]) -> int:
    """Write ``messages`` (encoded windows) to ``path`` via a temporary file and a rename; return the count."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    with temporary.open("wb") as stream:
        stream.write(MAGIC)
        for message in messages:
            stream.write(_LENGTH.pack(len(message)))
            stream.write(message)
            count += 1
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(path)
    return count


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
