"""The trainer's data path: bus consumer → batch planner → decode pool → batches, in step order."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future

from ingest.runtime.dead_letters import DeadLetters
from trainer.config import ModelConfig, TrainerSettings
from trainer.data.augment import ClipAugment
from trainer.data.batches import Batch, BatchAssembler, BatchPlan, BatchPlanner
from trainer.data.decode_pool import DecodePool
from trainer.data.replay import ReplayBuffer
from trainer.data.window_source import WindowSource
from trainer.metrics import TrainerMetrics


class BatchFeed:
    """Plans batches on the training thread, ``prefetch_batches`` ahead, and decodes them on the decode pool.

    Args:
        planner: takes records from the source (set by :meth:`start`) and replay into plans.
        restored: the batches a checkpoint had planned but not trained; they come first.
        plan_stop: stops planning (a plan is never abandoned half-way).
        settings, model_config: data settings and the window shape.
        replay, dead_letters, metrics: where windows that fail to decode are dropped, parked and counted.
        pin_memory: pin batches for a faster copy to the GPU.
    """

    def __init__(
        self,
        planner: BatchPlanner,
        restored: list[BatchPlan],
        plan_stop: threading.Event,
        settings: TrainerSettings,
        model_config: ModelConfig,
        replay: ReplayBuffer,
        dead_letters: DeadLetters,
        metrics: TrainerMetrics,
        pin_memory: bool,
    ) -> None:
        self.planner = planner
        self._restored = restored
        self._plan_stop = plan_stop
        self._prefetch = settings.data.prefetch_batches
        self._replay = replay
        self._dead_letters = dead_letters
        self._metrics = metrics
        self.pool = DecodePool(settings.data.decode_workers, ClipAugment(model_config, settings.data))
        self.assembler = BatchAssembler(self.pool, pin_memory=pin_memory)
        self._pending: deque[tuple[BatchPlan, Future[Batch]]] = deque()

    def start(self, source: WindowSource) -> None:
        """Consume ``source``; the restored batches are decoded first."""
        self.planner.source = source
        source.start()
        for plan in self._restored:
            self._submit(plan)
        self._restored = []

    def stop_planning(self) -> None:
        self._plan_stop.set()

    def in_flight(self) -> list[BatchPlan]:
        """The planned batches not yet trained on, oldest first (a checkpoint holds them)."""
        return [plan for plan, _ in self._pending]

    def next_batch(self) -> Batch | None:
        """Plan ahead to ``prefetch_batches``, then take the oldest planned batch (None: stop requested)."""
        while len(self._pending) < self._prefetch:
            plan = self.planner.plan(self._plan_stop)
            if plan is None:
                break
            self._submit(plan)
        if not self._pending:
            return None
        _, future = self._pending.popleft()
        return future.result()

    def discard_failed(self, batch: Batch) -> None:
        """The batch's windows that failed to decode: counted, dropped from replay, dead-lettered."""
        for window, reason in batch.failed:
            self._metrics.skipped.labels("decode_error").inc()
            self._replay.discard(window.key)
            if window.record is not None:
                self._metrics.dead_letters.inc()
                self._dead_letters.send(window.record, reason)

    def close(self) -> None:
        """Stops the consumer, the decode pool and the journal (not the dead letters: the run closes them last)."""
        if self.planner.source is not None:
            self.planner.source.stop()
        self.assembler.shutdown()
        self.pool.shutdown()
        self.planner.journal.close()

    def _submit(self, plan: BatchPlan) -> None:
        self._pending.append((plan, self.assembler.submit(plan)))
