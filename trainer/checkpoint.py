"""Checkpoint files: atomic, self-verifying, loaded without unpickling code.

A checkpoint is ``checkpoint-<step>.ckpt`` in the checkpoint directory::

    offset size  field
    0      8     magic b"SSLCKPT1"
    8      32    SHA-256 of the payload
    40     8     payload length, u64 little-endian
    48     ...   payload: torch.save of plain containers and tensors (model, EMA, optimiser, scheduler, step,
                 random states, replay buffer, held-out set, pending batch plans, consumed offset per partition)

It is written to a hidden temporary file, fsynced, renamed into place and the directory fsynced, so a crash leaves
either the whole file or none. Reading checks magic, length and checksum before ``torch.load(weights_only=True)``
(which refuses anything but tensors and plain containers), so a partial or corrupt file is never loaded.

:func:`load_latest` falls back from an invalid newest file to the previous valid one, loudly, and renames the invalid
ones to ``*.invalid`` (kept for inspection, never tried again); if files exist and none is valid it raises
:class:`CheckpointError` rather than start from scratch (unlike a catch-all loader that silently restarts training
and then commits offsets past everything the lost checkpoints had learned).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ingest.runtime.durable_files import write_atomically

log = logging.getLogger(__name__)

FORMAT = "streamssl.trainer.checkpoint/1"
MAGIC = b"SSLCKPT1"
_HEADER = struct.Struct("<8s32sQ")
_NAME = re.compile(r"checkpoint-(\d{10})\.ckpt")
QUARANTINE_SUFFIX = ".invalid"


class CheckpointError(Exception):
    """A checkpoint is invalid, or checkpoints exist and none can be loaded."""


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    step: int


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"checkpoint-{step:010d}.ckpt"


def checkpoint_files(directory: Path) -> list[CheckpointFile]:
    """Checkpoint files in ``directory``, newest (highest step) first; temporary files are not listed."""
    if not directory.is_dir():
        return []
    found = [
        CheckpointFile(path, int(match[1]))
        for path in directory.iterdir()
        if (match := _NAME.fullmatch(path.name)) and path.is_file()
    ]
    return sorted(found, key=lambda f: f.step, reverse=True)


_BYTES = "__bytes__"


def _pack(value: Any) -> Any:
    """``bytes`` → ``{"__bytes__": uint8 tensor}``: ``weights_only`` loading refuses pickled bytes objects, and a
    tensor is stored as raw data (no per-byte pickle overhead)."""
    if isinstance(value, bytes | bytearray):
        return {
            _BYTES: torch.frombuffer(bytearray(value), dtype=torch.uint8)
            if value
            else torch.empty(0, dtype=torch.uint8)
        }
    if isinstance(value, dict):
        return {key: _pack(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_pack(item) for item in value)
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _BYTES in value:
            return value[_BYTES].numpy().tobytes()
        return {key: _unpack(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_unpack(item) for item in value)
    return value


def encode_checkpoint(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(_pack({"format": FORMAT, **payload}), buffer)
    data = buffer.getvalue()
    return _HEADER.pack(MAGIC, hashlib.sha256(data).digest(), len(data)) + data


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep_last: int) -> Path:
    """Write ``payload`` durably as the checkpoint of ``step``; keep the newest ``keep_last`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    blob = encode_checkpoint(payload)
    final = checkpoint_path(directory, step)
    write_atomically(final, blob)
    for old in checkpoint_files(directory)[keep_last:]:
        old.path.unlink(missing_ok=True)
    for stale in directory.glob(".checkpoint-*.tmp-*"):  # left by a crash mid-write
        stale.unlink(missing_ok=True)
    return final


def decode_checkpoint(blob: bytes, source: str = "checkpoint") -> dict[str, Any]:
    """Verify and load one checkpoint's bytes; :class:`CheckpointError` says what is wrong."""
    if len(blob) < _HEADER.size:
        raise CheckpointError(f"{source}: {len(blob)} bytes, shorter than the {_HEADER.size}-byte header (partial)")
    magic, digest, length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"{source}: not a StreamSSL checkpoint (magic {magic!r})")
    data = blob[_HEADER.size :]
    if len(data) != length:
        raise CheckpointError(f"{source}: payload is {len(data)} bytes, header says {length} (partial write)")
    if hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"{source}: SHA-256 mismatch (corrupt)")
    try:
        payload = _unpack(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except Exception as error:  # the checksum matched, so this is a foreign or future format
        raise CheckpointError(f"{source}: payload does not load: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{source}: payload format is not {FORMAT}")
    return payload


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {error}") from error
    return decode_checkpoint(blob, str(path))


def load_latest(
    directory: Path, on_invalid: Callable[[Path, str], None] | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest valid checkpoint, or None if there is no checkpoint file at all.

    Each invalid file is logged at ERROR and reported to ``on_invalid``; if every file is invalid, raises
    :class:`CheckpointError` listing them.
    """
    files = checkpoint_files(directory)
    if not files:
        return None
    problems: list[str] = []
    for candidate in files:
        try:
            payload = read_checkpoint(candidate.path)
        except CheckpointError as error:
            log.error("INVALID CHECKPOINT, not loaded: %s", error)
            problems.append(str(error))
            if on_invalid is not None:
                on_invalid(candidate.path, str(error))
            continue
        if problems:
            log.error(
                "resuming from %s, an older checkpoint: %d newer file(s) were invalid and are renamed to "
                "*%s; training since then is repeated from the bus",
                candidate.path.name,
                len(problems),
                QUARANTINE_SUFFIX,
            )
            # Set aside (kept for inspection), so they are neither tried again nor counted by keep_last. Only now
            # that a valid checkpoint was found: with none valid, the files must stay and stop the start-up.
            for invalid in files:
                if invalid.step <= candidate.step:
                    break
                invalid.path.replace(invalid.path.with_name(invalid.path.name + QUARANTINE_SUFFIX))
        return candidate.path, payload
    raise CheckpointError(
        f"{len(files)} checkpoint file(s) in {directory} and none is valid ({'; '.join(problems)}). Refusing to "
        "start from scratch over them: restore a good checkpoint, or move the directory away to start over."
    )
