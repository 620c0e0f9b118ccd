"""Batches: the planner decides what each step trains on; the assembler turns a plan into tensors off-thread.

Every decision that changes state — which records are taken from the bus, which are held out or dead-lettered,
which replayed windows join a batch, what enters the replay buffer, every random draw — happens in
:meth:`BatchPlanner.plan`, on the training thread, in step order. Plans are made ``prefetch_batches`` steps ahead
and carry their windows' bytes, so a checkpoint (planner state + replay buffer + pending plans) describes exactly
what the following steps will train on, and a resumed run continues as the uninterrupted one would.

The expensive part — decoding JPEGs, cropping, jittering, stacking — runs on the decode pool and a collator thread
(:class:`BatchAssembler`), so the model does not wait for pixels unless decoding is slower than training.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import torch
from torch import Tensor

from ingest.bus import Record, TopicPartition
from ingest.contract import WindowDecodeError
from ingest.runtime.dead_letters import DeadLetters
from trainer.config import DataConfig, ModelConfig
from trainer.data.decode_pool import DecodePool
from trainer.data.heldout import HeldOutSet, held_out_by_hash
from trainer.data.replay import ReplayBuffer, StoredWindow
from trainer.data.window_source import SourceItem, WindowSource, check_record
from trainer.losses.order import sample_order_task
from trainer.metrics import TrainerMetrics

log = logging.getLogger(__name__)

Origin = Literal["fresh", "replay"]


def record_state(record: Record) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "value": record.value,
        "headers": [[name, value] for name, value in record.headers],
        "timestamp_ms": record.timestamp_ms,
    }


def record_from_state(state: dict[str, Any]) -> Record:
    return Record(
        topic=state["topic"],
        partition=int(state["partition"]),
        offset=int(state["offset"]),
        key=state["key"],
        value=bytes(state["value"]),
        headers=tuple((str(name), bytes(value)) for name, value in state["headers"]),
        timestamp_ms=int(state["timestamp_ms"]),
    )


@dataclass(frozen=True)
class PlannedWindow:
    """One window of a planned batch, with every random choice already made."""

    key: str
    camera: str
    data: bytes
    origin: Origin
    frame_start: int  # first of the T frames taken from a longer window
    seed: int  # of the clip-consistent augmentation
    order_offset: int
    order_permutation: int
    record: Record | None = None  # where a fresh window came from (to dead-letter it if its frames do not decode)

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "camera": self.camera,
            "data": self.data if self.record is None else b"",
            "origin": self.origin,
            "frame_start": self.frame_start,
            "seed": self.seed,
            "order_offset": self.order_offset,
            "order_permutation": self.order_permutation,
            "record": None if self.record is None else record_state(self.record),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PlannedWindow:
        record = None if state["record"] is None else record_from_state(state["record"])
        return cls(
            key=state["key"],
            camera=state["camera"],
            data=record.value if record is not None else bytes(state["data"]),
            origin=state["origin"],
            frame_start=int(state["frame_start"]),
            seed=int(state["seed"]),
            order_offset=int(state["order_offset"]),
            order_permutation=int(state["order_permutation"]),
            record=record,
        )


@dataclass
class BatchPlan:
    step: int  # the step (0-based) this batch is for
    windows: list[PlannedWindow]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "windows": [window.state_dict() for window in self.windows]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BatchPlan:
        return cls(int(state["step"]), [PlannedWindow.from_state(window) for window in state["windows"]])


@dataclass
class Batch:
    """A batch ready for the model. ``failed``: planned windows whose frames did not decode, with the reason."""

    plan: BatchPlan
    frames: Tensor  # uint8 [B, T, H, W, C]
    order_offsets: Tensor  # long [B]
    order_permutations: Tensor  # long [B]
    origins: list[Origin]
    failed: list[tuple[PlannedWindow, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.frames.shape[0])


class BatchAssembler:
    """Decodes and augments a plan's windows on the pool, then stacks them on a collator thread."""

    def __init__(self, pool: DecodePool, pin_memory: bool = False) -> None:
        self.pool = pool
        self.pin_memory = pin_memory
        self._collator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collate")

    def submit(self, plan: BatchPlan) -> Future[Batch]:
        frames = [self.pool.submit_train(w.data, w.frame_start, w.seed) for w in plan.windows]
        return self._collator.submit(self._collate, plan, frames)

    def _collate(self, plan: BatchPlan, futures: list[Future[np.ndarray[Any, Any]]]) -> Batch:
        arrays: list[np.ndarray[Any, Any]] = []
        kept: list[PlannedWindow] = []
        failed: list[tuple[PlannedWindow, str]] = []
        for window, future in zip(plan.windows, futures, strict=True):
            try:
                arrays.append(future.result())
                kept.append(window)
            except WindowDecodeError as error:
                failed.append((window, str(error)))
        frames = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty((0,), dtype=torch.uint8)
        if self.pin_memory and arrays:
            frames = frames.pin_memory()
        return Batch(
            plan=plan,
            frames=frames,
            order_offsets=torch.tensor([w.order_offset for w in kept], dtype=torch.long),
            order_permutations=torch.tensor([w.order_permutation for w in kept], dtype=torch.long),
            origins=[w.origin for w in kept],
            failed=failed,
        )

    def shutdown(self) -> None:
        self._collator.shutdown(wait=True, cancel_futures=True)


class Journal:
    """JSON lines, one per record taken from the bus (what was done with it); for debugging and tests."""

    def __init__(self, path: Path | None) -> None:
        self._stream: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8")

    def write(self, record: Record, use: str, window_id: str | None) -> None:
        if self._stream is None:
            return
        entry = {"partition": record.partition, "offset": record.offset, "window_id": window_id, "use": use}
        self._stream.write(json.dumps(entry) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


class BatchPlanner:
    """Plans batches from the bus (fresh) and the replay buffer; see the module docstring.

    Args:
        source: the bus consumer thread.
        replay: the replay buffer (its state is the planner's too).
        heldout: where the stream's held-out windows go (None: the held-out set has another source).
        dead_letters: where malformed records go.
        model, data: configuration.
        seed: of the planner's random generator.
    """

    def __init__(
        self,
        source: WindowSource | None,
        replay: ReplayBuffer,
        heldout: HeldOutSet | None,
        dead_letters: DeadLetters | None,
        model: ModelConfig,
        data: DataConfig,
        metrics: TrainerMetrics,
        seed: int,
        journal: Journal | None = None,
    ) -> None:
        self.source = source
        self.replay = replay
        self.heldout = heldout
        self.dead_letters = dead_letters
        self.model = model
        self.data = data
        self.metrics = metrics
        self.journal = journal or Journal(None)
        self.rng = np.random.default_rng(seed)
        self.consumed: dict[TopicPartition, int] = {}
        self.carry: list[SourceItem] = []  # taken from the bus, not yet in a plan
        self.next_step = 0
        self._warned_cameras: set[str] = set()
        self._last_arrival = time.monotonic()

    # --- state --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "consumed": [[tp.topic, tp.partition, offset] for tp, offset in sorted(self.consumed.items())],
            "carry": [record_state(item.record) for item in self.carry],
            "next_step": self.next_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.consumed = {TopicPartition(t, int(p)): int(o) for t, p, o in state["consumed"]}
        self.carry = [check_record(record_from_state(r), self.model.window) for r in state["carry"]]
        self.next_step = int(state["next_step"])

    # --- planning -----------------------------------------------------------------------------------------------
    def plan(self, stop: threading.Event) -> BatchPlan | None:
        """The next batch, waiting for fresh windows as needed; None only when ``stop`` is set first."""
        data = self.data
        size = data.batch_size
        # Wait for fresh windows at most fresh_wait_s after the last one arrived: a stream that went idle (or a
        # bounded topic that is read to its end) does not cost a wait per step. Then, with replay_when_idle, replay
        # fills the batch.
        deadline = self._last_arrival + data.fresh_wait_s
        while not stop.is_set():
            want_replay = round(size * data.replay_ratio) if len(self.replay) else 0
            want_fresh = size - want_replay
            self._fill(want_fresh, deadline, stop)
            if len(self.carry) >= want_fresh:
                return self._make(want_fresh, want_replay)
            joining = self.source is not None and not self.source.assigned.is_set()
            if joining:  # still joining the group (a rebalance can take a session timeout): not an idle stream
                deadline = time.monotonic() + data.fresh_wait_s
            elif time.monotonic() >= deadline:
                fresh = len(self.carry)
                fill = size - fresh if len(self.replay) and (fresh or data.replay_when_idle) else 0
                if fresh + fill >= 2:
                    return self._make(fresh, fill)
                deadline = time.monotonic() + min(1.0, data.fresh_wait_s)
        return None

    def _fill(self, want: int, deadline: float, stop: threading.Event) -> None:
        if self.source is None:
            return
        while len(self.carry) < want and not stop.is_set():
            # Past the deadline, still take whatever is already queued.
            remaining = deadline - time.monotonic()
            item = self.source.get(min(max(remaining, 0.0), 0.1))
            if item is not None:
                self._last_arrival = time.monotonic()
                self._take(item)
            elif remaining <= 0:
                break
        self.source.note_taken(self.consumed)

    def _take(self, item: SourceItem) -> None:
        record = item.record
        self.consumed[record.topic_partition] = record.offset + 1
        header = item.header
        if item.malformed:
            self.metrics.skipped.labels("decode_error").inc()
            self.metrics.dead_letters.inc()
            if self.dead_letters is not None:
                self.dead_letters.send(record, item.problem or "malformed")
            self.journal.write(record, "dead_letter", None)
        elif item.problem is not None or header is None:
            self.metrics.skipped.labels("unusable").inc()
            camera = header.camera_id if header is not None else "?"
            if camera not in self._warned_cameras:
                self._warned_cameras.add(camera)
                log.warning("skipping windows this model cannot use (logged once per camera): %s", item.problem)
            self.journal.write(record, "unusable", header.window_id if header else None)
        elif self.heldout is not None and held_out_by_hash(header.window_id, self.data.holdout_every):
            self.heldout.add(StoredWindow(header.window_id, header.camera_id, record.value, header.frame_count))
            self.metrics.heldout_windows.set(len(self.heldout))
            self.journal.write(record, "holdout", header.window_id)
        else:
            self.carry.append(item)
            self.journal.write(record, "train", header.window_id)

    def _make(self, fresh_count: int, replay_count: int) -> BatchPlan:
        fresh, self.carry = self.carry[:fresh_count], self.carry[fresh_count:]
        replayed = self.replay.sample(replay_count, self.rng)
        windows: list[PlannedWindow] = []
        for item in fresh:
            header = item.header
            assert header is not None
            windows.append(
                self._planned(
                    header.window_id, header.camera_id, item.record.value, "fresh", header.frame_count, item.record
                )
            )
        for stored in replayed:
            windows.append(self._planned(stored.key, stored.camera, stored.data, "replay", stored.frames, None))
        # Offered after sampling, so a batch never replays its own fresh windows.
        for item in fresh:
            header = item.header
            assert header is not None
            self.replay.offer(StoredWindow(header.window_id, header.camera_id, item.record.value, header.frame_count))
        plan = BatchPlan(self.next_step, windows)
        self.next_step += 1
        return plan

    def _planned(
        self, key: str, camera: str, data: bytes, origin: Origin, frames: int, record: Record | None
    ) -> PlannedWindow:
        window = self.model.window
        frame_start = int(self.rng.integers(0, frames - window + 1))
        seed = int(self.rng.integers(0, 2**63 - 1))
        offset, permutation = sample_order_task(self.rng, window, self.model.order_stride)
        return PlannedWindow(key, camera, data, origin, frame_start, seed, offset, permutation, record)
