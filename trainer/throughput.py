"""Step timing, throughput and data wait, the per-step metrics, and the progress line."""

from __future__ import annotations

import logging
import time

import torch

from trainer.collapse import collapse_stats
from trainer.data.batches import Batch
from trainer.data.heldout import HeldOutSet
from trainer.data.replay import ReplayBuffer
from trainer.evaluate import EvalLog
from trainer.losses.total import LossParts
from trainer.metrics import TrainerMetrics

log = logging.getLogger("trainer")


class ThroughputMeter:
    """Times each step (waiting for its batch, then all of it) and reports every ``progress_every`` steps.

    A report sets the collapse metrics, windows/s and the data-wait fraction over the steps since the previous
    report, and (``show_progress``: rank 0) logs the progress line. Its JSON line also says which bus records the
    steps since the previous report trained on (``fresh_offsets``: partition → first and last offset and count of
    the fresh windows; per partition they are trained in offset order), so a crashed and resumed run can be
    audited: what was trained, what was trained again after a resume, what never was.

    Args:
        metrics: the trainer's metrics.
        replay: the replay buffer (its fill is a metric).
        heldout: the held-out set (its size is a metric).
        batch_size: windows per batch (for the ETA).
        progress_every: steps between reports.
        max_steps: the bound of the run, if any (its last step reports too; the line shows the ETA).
        show_progress: whether this process logs the progress line.
        log: where each report is also appended as JSON (``kind: "train"``), for plots; None: nowhere.
    """

    def __init__(
        self,
        metrics: TrainerMetrics,
        replay: ReplayBuffer,
        heldout: HeldOutSet,
        batch_size: int,
        progress_every: int,
        max_steps: int | None,
        show_progress: bool,
        log: EvalLog | None = None,
    ) -> None:
        self.metrics = metrics
        self.replay = replay
        self.heldout = heldout
        self.batch_size = batch_size
        self.progress_every = progress_every
        self.max_steps = max_steps
        self.show_progress = show_progress
        self.log = log
        self._iteration_start = 0.0
        self._waited = 0.0
        self._unreported: tuple[int, LossParts, torch.Tensor] | None = None  # the last step, if not reported yet
        self.begin_interval()

    def begin_interval(self) -> None:
        """Start measuring throughput afresh (from when training starts, not from when the run was built)."""
        self._interval_start = time.monotonic()
        self._windows = 0
        self._fresh = 0
        self._fresh_offsets: dict[int, list[int]] = {}  # partition → [first, last, count]
        self._wait = 0.0
        self._busy = 0.0

    def iteration_started(self) -> None:
        self._iteration_start = time.monotonic()

    def batch_taken(self) -> None:
        """The step's batch is here: the time since :meth:`iteration_started` was spent waiting for data."""
        self._waited = time.monotonic() - self._iteration_start

    def step_done(
        self, step: int, parts: LossParts, batch: Batch, embeddings: torch.Tensor, learning_rate: float
    ) -> None:
        """Record the step that just trained (``step`` is the count after it); report if one is due."""
        busy = time.monotonic() - self._iteration_start
        self._wait += self._waited
        self._busy += busy
        self._windows += batch.size
        self._note_fresh(batch)
        self._record(step, parts, batch, busy, learning_rate)
        if step % self.progress_every == 0 or step == self.max_steps:
            self._unreported = None
            self._report(step, parts, embeddings)
        else:
            self._unreported = (step, parts, embeddings.detach())

    def finish(self) -> None:
        """Report the steps since the last report: a run that ends between two reports (a time budget, a stop)
        still logs its last losses, and one shorter than ``progress_every`` steps still leaves a line."""
        if self._unreported is not None:
            step, parts, embeddings = self._unreported
            self._unreported = None
            self._report(step, parts, embeddings)

    def _note_fresh(self, batch: Batch) -> None:
        """The bus records of the batch's fresh windows that decoded (replayed windows have no record)."""
        failed = {id(window) for window, _ in batch.failed}
        for window in batch.plan.windows:
            record = window.record
            if record is None or id(window) in failed:
                continue
            self._fresh += 1
            span = self._fresh_offsets.setdefault(record.partition, [record.offset, record.offset, 0])
            span[0], span[1], span[2] = min(span[0], record.offset), max(span[1], record.offset), span[2] + 1

    def _record(self, step: int, parts: LossParts, batch: Batch, busy: float, learning_rate: float) -> None:
        metrics, replay = self.metrics, self.replay
        scalars = parts.scalars()
        for task in ("total", "future", "order", "pixel"):
            metrics.loss.labels(task).set(scalars[task])
        for name in ("future_top1", "order_accuracy", "pixel_psnr_db", "copy_last_psnr_db"):
            metrics.train_metric.labels(name).set(scalars[name])
        metrics.steps.inc()
        metrics.step.set(step)
        metrics.learning_rate.set(learning_rate)
        fresh = sum(1 for origin in batch.origins if origin == "fresh")
        metrics.windows.labels("fresh").inc(fresh)
        metrics.windows.labels("replay").inc(batch.size - fresh)
        metrics.step_seconds.observe(busy)
        metrics.data_wait_seconds.inc(self._waited)
        metrics.replay_windows.set(len(replay))
        metrics.replay_bytes.set(replay.nbytes)
        metrics.replay_fill.set(max(len(replay) / replay.max_windows, replay.nbytes / replay.max_bytes))
        metrics.heldout_windows.set(len(self.heldout))

    def _report(self, step: int, parts: LossParts, embeddings: torch.Tensor) -> None:
        metrics = self.metrics
        stats = collapse_stats(embeddings)
        metrics.embedding_std.set(stats.embedding_std)
        metrics.embedding_rank.set(stats.effective_rank)
        elapsed = time.monotonic() - self._interval_start
        windows_per_s = self._windows / max(elapsed, 1e-9)
        wait_fraction = self._wait / max(self._busy, 1e-9)
        metrics.windows_per_second.set(windows_per_s)
        metrics.data_wait_fraction.set(wait_fraction)
        if self.show_progress:
            self._progress(step, parts, windows_per_s, wait_fraction, stats.effective_rank)
        if self.log is not None:
            scalars = parts.scalars()
            self.log.write(
                "train",
                step,
                {
                    **{f"loss_{task}": scalars[task] for task in ("total", "future", "order", "pixel")},
                    **{name: scalars[name] for name in ("future_top1", "order_accuracy")},
                    "windows_per_s": windows_per_s,
                    "data_wait_fraction": wait_fraction,
                    "effective_rank": stats.effective_rank,
                    "fresh_windows": self._fresh,
                    "replay_windows": self._windows - self._fresh,
                    "fresh_offsets": {str(p): span for p, span in sorted(self._fresh_offsets.items())},
                },
            )
        self.begin_interval()

    def _progress(self, step: int, parts: LossParts, windows_per_s: float, wait_fraction: float, rank: float) -> None:
        scalars = parts.scalars()
        position = str(step)
        max_steps = self.max_steps
        if max_steps:
            steps_per_s = windows_per_s / max(1, self.batch_size)
            eta = (max_steps - step) / max(steps_per_s, 1e-9)
            position = f"{step}/{max_steps} ({100 * step / max_steps:.0f}%, eta {eta:.0f} s)"
        log.info(
            "step %s | loss %.3f (future %.3f, order %.3f, pixel %.4f) | future top-1 %.2f, order acc %.2f | "
            "%.1f windows/s, data wait %.0f%% | replay %d | eff. rank %.1f",
            position,
            scalars["total"],
            scalars["future"],
            scalars["order"],
            scalars["pixel"],
            scalars["future_top1"],
            scalars["order_accuracy"],
            windows_per_s,
            100 * wait_fraction,
            len(self.replay),
            rank,
        )
