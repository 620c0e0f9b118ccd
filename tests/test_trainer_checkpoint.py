"""Checkpoint files: atomic write, keep-last, integrity checks, safe loading, loud fallback, no silent restart."""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import (
    CheckpointError,
    checkpoint_files,
    load_latest,
    read_checkpoint,
    save_checkpoint,
)


def payload(step: int) -> dict[str, object]:
    return {"step": step, "weights": torch.full((3,), float(step)), "replay": [[b"bytes", "cam", 8]], "n": None}


def test_round_trip_and_keep_last(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, payload(step), keep_last=2)
    assert [f.step for f in checkpoint_files(tmp_path)] == [40, 30]
    loaded = load_latest(tmp_path)
    assert loaded is not None
    path, state = loaded
    assert path.name == "checkpoint-0000000040.ckpt"
    assert state["step"] == 40
    torch.testing.assert_close(state["weights"], torch.full((3,), 40.0))
    assert state["replay"] == [[b"bytes", "cam", 8]]
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_no_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    assert load_latest(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda blob: blob[: len(blob) // 2], "partial"),
        (lambda blob: blob[:-1] + bytes([blob[-1] ^ 0xFF]), "SHA-256 mismatch"),
        (lambda blob: b"", "partial"),
        (lambda blob: b"PK\x03\x04" + blob[4:], "not a StreamSSL checkpoint"),
    ],
    ids=["truncated", "bit-flip", "empty", "foreign"],
)
def test_an_invalid_newest_checkpoint_is_never_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    save_checkpoint(tmp_path, 10, payload(10), keep_last=5)
    newest = save_checkpoint(tmp_path, 20, payload(20), keep_last=5)
    newest.write_bytes(damage(newest.read_bytes()))  # type: ignore[operator]
    invalid: list[Path] = []
    with caplog.at_level(logging.ERROR):
        loaded = load_latest(tmp_path, on_invalid=lambda path, _reason: invalid.append(path))
    assert loaded is not None
    assert loaded[1]["step"] == 10
    assert invalid == [newest]
    assert not newest.exists()
    assert newest.with_name(newest.name + ".invalid").exists()  # set aside for inspection, not retried
    assert reason in caplog.text
    assert "INVALID CHECKPOINT" in caplog.text
    assert "older checkpoint" in caplog.text


def test_checkpoints_exist_but_none_is_valid_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    for step in (10, 20):
        save_checkpoint(tmp_path, step, payload(step), keep_last=5).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"none is valid.*Refusing to start from scratch"):
        load_latest(tmp_path)


def test_a_leftover_temporary_file_is_ignored(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 10, payload(10), keep_last=5)
    (tmp_path / ".checkpoint-0000000020.ckpt.tmp-dead").write_bytes(b"half a checkpoint")
    loaded = load_latest(tmp_path)
    assert loaded is not None
    assert loaded[1]["step"] == 10


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("code ran while loading",))


def test_loading_never_unpickles_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A file with a valid magic, length and checksum around a payload that would run code under plain pickle.
    buffer = io.BytesIO()
    torch.save({"format": "streamssl.trainer.checkpoint/1", "step": 1, "x": Exploit()}, buffer)
    data = buffer.getvalue()
    path = tmp_path / "checkpoint-0000000001.ckpt"
    path.write_bytes(struct.pack("<8s32sQ", b"SSLCKPT1", hashlib.sha256(data).digest(), len(data)) + data)
    with pytest.raises(CheckpointError, match="does not load"):
        read_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out
