"""Crash-safe file writes: data fsynced before a rename, and the directory fsynced after it, so a crash leaves
either the old file or the new one, never half of one. The one way every service writes a file that must survive a
crash: checkpoints, the model registry, held-out window files, the trainer's resolved config. And appends that add a
whole line or nothing (JSON-lines logs on a disk that fills up)."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: a hidden temporary beside it, fsynced, renamed, directory fsynced.

    On any error (a full disk, say) the temporary is removed and ``path`` still holds its previous content.
    """
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        write_durably(temporary, data)
        temporary.replace(path)
        fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the caller renames it into place)."""
    with path.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def fsync_directory(directory: Path) -> None:
    """Make a rename or creation inside ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) entirely or not at all: a write the file system refuses
    half-way (a full disk) is cut back off, so a JSON-lines file never ends in half a line; the error propagates."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(descriptor, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
        except OSError:
            os.ftruncate(descriptor, start)
            raise
    finally:
        os.close(descriptor)


def os_error_reason(error: OSError) -> str:
    """What went wrong with a write, for one log line: a full disk said in words, else the system's message."""
    return "no space left on device (disk full)" if error.errno == errno.ENOSPC else (error.strerror or str(error))
