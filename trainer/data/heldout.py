"""Held-out windows for evaluation and the promotion gate, never trained on.

Three sources: a topic read whole at start (``eval.topic``), a windows file (``eval.file``), or, by default, the
stream itself: 1 in ``holdout_every`` windows, chosen by a hash of the window id (so the choice survives restarts
and is the same on every rank), is set aside. The set is bounded and saved in checkpoints. Under DDP each rank
holds out windows of its own partitions and rank 0 evaluates on its own; a topic or file gives every rank the same
set.
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path
from typing import Any

from ingest.bus import Bus
from ingest.contract import WindowDecodeError, decode_header
from trainer.data.replay import StoredWindow
from trainer.data.window_file import read_windows_file

log = logging.getLogger(__name__)

# Reading a held-out topic of a few hundred windows takes well under a second; give a slow broker a minute.
_TOPIC_READ_TIMEOUT_S = 60.0


def held_out_by_hash(window_id: str, every: int) -> bool:
    """True for the 1-in-``every`` windows the stream holds out (stable across processes and restarts)."""
    return every > 0 and zlib.crc32(window_id.encode("utf-8")) % every == 0


class HeldOutSet:
    """An append-only list of up to ``max_windows`` encoded windows; ``fixed`` sets come from a topic or a file."""

    def __init__(self, max_windows: int, fixed: bool = False) -> None:
        self.max_windows = max_windows
        self.fixed = fixed
        self.windows: list[StoredWindow] = []
        self.version = 0  # bumped on every change, so evaluators can cache decoded pixels

    def __len__(self) -> int:
        return len(self.windows)

    def add(self, window: StoredWindow) -> bool:
        if len(self.windows) >= self.max_windows:
            return False
        self.windows.append(window)
        self.version += 1
        return True

    def add_encoded(self, data: bytes) -> bool:
        header = decode_header(data)
        return self.add(StoredWindow(header.window_id, header.camera_id, data, header.frame_count))

    def state_dict(self) -> dict[str, Any]:
        return {"fixed": self.fixed, "windows": [[w.key, w.camera, w.data, w.frames] for w in self.windows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the stream's held-out windows; a fixed set (topic, file) is read from its source instead."""
        if self.fixed:
            return
        self.windows = [StoredWindow(k, c, bytes(d), int(f)) for k, c, d, f in state["windows"]][: self.max_windows]
        self.version += 1

    @classmethod
    def from_file(cls, path: Path, max_windows: int) -> HeldOutSet:
        held = cls(max_windows, fixed=True)
        for data in read_windows_file(path):
            if not held.add_encoded(data):
                break
        log.info("held-out set: %d windows from %s", len(held), path)
        return held

    @classmethod
    def from_topic(cls, bus: Bus, topic: str, max_windows: int, min_frames: int) -> HeldOutSet:
        """Read the topic from the beginning (no group, nothing committed) to its end, or to ``max_windows``."""
        held = cls(max_windows, fixed=True)
        skipped = 0
        with bus.consumer([topic], group_id=None, start="earliest") as consumer:
            ends = consumer.end_offsets(sorted(consumer.assignment()))
            positions = dict.fromkeys(ends, 0)
            deadline = time.monotonic() + _TOPIC_READ_TIMEOUT_S
            while len(held) < max_windows and any(positions[p] < end for p, end in ends.items()):
                if time.monotonic() > deadline:
                    log.warning("held-out topic %s: stopped reading after %.0f s", topic, _TOPIC_READ_TIMEOUT_S)
                    break
                records = consumer.poll(0.5, max_records=max_windows - len(held))
                for record in records:
                    positions[record.topic_partition] = record.offset + 1
                    try:
                        header = decode_header(record.value)
                    except WindowDecodeError:
                        skipped += 1
                        continue
                    if header.frame_count < min_frames:
                        skipped += 1
                        continue
                    held.add(StoredWindow(header.window_id, header.camera_id, record.value, header.frame_count))
        log.info("held-out set: %d windows from topic %s (%d unusable skipped)", len(held), topic, skipped)
        return held
