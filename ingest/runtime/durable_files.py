"""Crash-safe file writes: data fsynced before a rename, and the directory fsynced after it, so a crash leaves
either the old file or the new one, never half of one. The one way every service writes a file that must survive a
crash: checkpoints, the model registry, held-out window files, the trainer's resolved config."""

from __future__ import annotations

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
