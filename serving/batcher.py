"""Dynamic batching: requests wait in a bounded queue and run in batches on a worker thread, off the event loop.

The worker takes the oldest request, then keeps adding requests from the head of the queue that can share its batch
(same model object, same kind, same item shape) until the batch holds ``max_batch_size`` rows or the oldest request
has waited ``max_queue_delay_s`` (Triton's dynamic batcher). It waits only while more requests are *arriving*
(announced by the HTTP layer while it reads and parses them): a lone request does not sit out the delay for
company that is not coming. A request larger than the maximum runs alone. While a
batch runs, new requests queue up, so under load batches fill without any delay. The queue is bounded: when it is
full, :meth:`Batcher.submit` raises :class:`~serving.errors.QueueFullError` (HTTP: 503 + Retry-After) or, for stream
mode, blocks (back-pressure on the consumer).

Results come back as :class:`concurrent.futures.Future` objects, which HTTP handlers await with
:func:`asyncio.wrap_future` and stream mode waits on directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.errors import QueueFullError
from serving.metrics import ServingMetrics
from serving.model import LoadedModel, WindowOutputs

log = logging.getLogger(__name__)


class TaskKind(StrEnum):
    FRAMES = "frames"  # [N, H, W, C] images → [N, D] embeddings
    WINDOWS = "windows"  # [N, T, H, W, C] windows → WindowOutputs


@dataclass(eq=False)
class _Task:
    model: LoadedModel
    kind: TaskKind
    inputs: npt.NDArray[np.uint8]
    future: Future[Any]
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return int(self.inputs.shape[0])

    def joins(self, other: _Task) -> bool:
        return other.model is self.model and other.kind is self.kind and other.inputs.shape[1:] == self.inputs.shape[1:]


class Batcher:
    """Worker threads running batches, each a batch at a time; ``submit_*`` may be called from any thread.

    Several workers are model instances in Triton's sense: with single-threaded sessions, N workers keep N cores
    busy with whole batches, and a core borrowed by the HTTP thread delays one batch instead of stalling every
    intra-op thread at the next barrier.

    ``adaptive``: the workers share the cores by load. A batch that leaves the queue empty while no other batch
    runs gets every core (the model's all-core sessions: a lone request is as fast as it can be), and no other batch
    starts beside it; a batch with more work waiting behind it runs on a one-thread session, beside the others.
    """

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue: int,
        metrics: ServingMetrics,
        workers: int = 1,
        adaptive: bool = False,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_queue_delay_s < 0 or workers < 1:
            raise ValueError("max_batch_size, max_queue and workers must be positive, max_queue_delay_s not negative")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: deque[_Task] = deque()
        self._arriving = 0
        self._changed = threading.Condition()
        self._stopping = False
        self.adaptive = adaptive
        self._busy = 0  # batches running
        self._all_cores_taken = False  # an adaptive batch on every core runs: no other may start
        self._workers = [
            threading.Thread(target=self._run, name=f"batcher-{index}", daemon=True) for index in range(workers)
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Run what is queued, then stop the worker (new submissions are refused meanwhile)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))

    def __len__(self) -> int:
        with self._changed:
            return len(self._queue)

    def announce(self) -> None:
        """A request is on its way (being read or parsed): worth waiting for, up to the queue delay."""
        with self._changed:
            self._arriving += 1

    def withdraw(self) -> None:
        """An announced request was submitted or failed: stop waiting for it."""
        with self._changed:
            self._arriving -= 1
            self._changed.notify_all()

    def submit_frames(
        self, model: LoadedModel, frames: npt.NDArray[np.uint8], *, block: bool = False
    ) -> Future[npt.NDArray[np.float32]]:
        """Queue ``[N, H, W, C]`` images; the future gives their ``[N, D]`` embeddings."""
        return self._submit(model, TaskKind.FRAMES, frames, block)

    def submit_windows(
        self, model: LoadedModel, frames: npt.NDArray[np.uint8], *, block: bool = False
    ) -> Future[WindowOutputs]:
        """Queue ``[N, T, H, W, C]`` windows; the future gives their embeddings and raw scores."""
        return self._submit(model, TaskKind.WINDOWS, frames, block)

    def _submit(self, model: LoadedModel, kind: TaskKind, inputs: npt.NDArray[np.uint8], block: bool) -> Future[Any]:
        task = _Task(model, kind, inputs, Future())
        with self._changed:
            while len(self._queue) >= self.max_queue and not self._stopping:
                if not block:
                    raise QueueFullError(
                        f"the inference queue is full ({self.max_queue} requests waiting); retry shortly"
                    )
                self._changed.wait()
            if self._stopping:
                raise QueueFullError("the node is shutting down and takes no new requests")
            self._queue.append(task)
            self.metrics.queue_depth.set(len(self._queue))
            self._changed.notify_all()
        return task.future

    def _next_batch(self) -> tuple[list[_Task], bool] | None:
        """Block for the next batch and whether it runs on every core; None once stopping and drained."""
        with self._changed:
            while not self._queue or self._all_cores_taken:
                if self._stopping and not self._queue:
                    return None
                self._changed.wait()
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            deadline = first.enqueued_at + self.max_queue_delay_s
            while rows < self.max_batch_size:
                if self._queue:
                    candidate = self._queue[0]
                    if not first.joins(candidate) or rows + candidate.rows > self.max_batch_size:
                        break
                    batch.append(self._queue.popleft())
                    rows += candidate.rows
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping or self._arriving <= 0:
                    break
                self._changed.wait(remaining)
            self.metrics.queue_depth.set(len(self._queue))
            all_cores = not self.adaptive or (not self._queue and self._busy == 0)
            self._busy += 1
            self._all_cores_taken = self.adaptive and all_cores
            self._changed.notify_all()  # blocked submitters may have room now
            return batch, all_cores

    def _run(self) -> None:
        while (next_batch := self._next_batch()) is not None:
            batch, all_cores = next_batch
            try:
                # A request whose client went away (its future was cancelled) is dropped before it costs anything.
                live = [task for task in batch if task.future.set_running_or_notify_cancel()]
                if live:
                    self._execute(live, single_thread=not all_cores)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._all_cores_taken = False if all_cores else self._all_cores_taken
                    self._changed.notify_all()

    def _execute(self, batch: list[_Task], single_thread: bool = False) -> None:
        kind = batch[0].kind
        started = time.monotonic()
        for task in batch:
            self.metrics.queue_wait.labels(kind.value).observe(started - task.enqueued_at)
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([task.inputs for task in batch])
        try:
            model = batch[0].model
            outputs: Any = (
                model.embed_frames(inputs, single_thread)
                if kind is TaskKind.FRAMES
                else model.run_windows(inputs, single_thread)
            )
        except Exception as error:  # a failing batch fails its requests, never the worker
            log.exception("inference of a batch of %d %s failed", len(inputs), kind.value)
            for task in batch:
                task.future.set_exception(error)
            return
        self.metrics.inference_duration.labels(kind.value).observe(time.monotonic() - started)
        self.metrics.batch_size.labels(kind.value).observe(len(inputs))
        start = 0
        for task in batch:
            stop = start + task.rows
            task.future.set_result(outputs[start:stop] if kind is TaskKind.FRAMES else outputs.rows(start, stop))
            start = stop
