"""The continual training loop: bus → batches → steps → checkpoints → evaluation → export and promotion gate.

One iteration::

    plan batch s+P (training thread: takes records, replay, random draws)   ─┐ decode + augment + collate on the
    take batch s (decoded while earlier steps ran)                          ─┘ decode pool, P batches ahead
    forward all tasks, backward, clip, AdamW, LR schedule, EMA
    every N steps: evaluate the EMA model on held-out windows (rank 0)
    every N steps / S seconds: flush dead letters, checkpoint (rank 0, with every rank's data state), then commit
        each rank's consumed offsets — only now, so a crash re-reads everything after the checkpoint
    every N steps: export, parity check, publish, promotion gate in a child process, training on meanwhile
        (rank 0; skipped while the previous one runs); at the end of a bounded run the same, in this process

A checkpoint holds everything needed to continue exactly: model, EMA, optimiser, scheduler, step, random states,
replay buffer, held-out set, the planned-but-untrained batches (with their windows' bytes) and the offset after the
last record taken from each partition. On start the consumer resumes at those offsets.

The pieces, each in its module: :class:`~trainer.learner.Learner` (model, EMA, optimiser, the step),
:class:`~trainer.batch_feed.BatchFeed` (bus → batches), :class:`~trainer.checkpoint_coordinator.CheckpointCoordinator`
(restore; checkpoint → commit), :class:`~trainer.heldout_eval.HeldOutEvaluator`,
:class:`~trainer.export_scheduler.ExportScheduler` and :class:`~trainer.throughput.ThroughputMeter` (step metrics,
progress lines). :class:`_Run` builds them in an order that keeps a run reproducible and drives them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from ingest.bus import Bus, BusError, TopicPartition
from ingest.runtime.dead_letters import DeadLetters
from ingest.runtime.durable_files import write_atomically
from trainer import distributed
from trainer.batch_feed import BatchFeed
from trainer.checkpoint import CheckpointError, load_latest
from trainer.checkpoint_coordinator import CheckpointCoordinator
from trainer.config import ModelConfig, TrainerSettings, config_hash
from trainer.data.batches import BatchPlan, BatchPlanner, Journal
from trainer.data.heldout import HeldOutSet
from trainer.data.replay import ReplayBuffer
from trainer.data.window_source import WindowSource
from trainer.distributed import Distributed, local_rank
from trainer.evaluate import EvalLog
from trainer.export_scheduler import ExportScheduler
from trainer.heldout_eval import HeldOutEvaluator
from trainer.learner import Learner
from trainer.metrics import TrainerMetrics
from trainer.promotion_gate import GateDecision
from trainer.throughput import ThroughputMeter

log = logging.getLogger("trainer")

CONFIG_FILE = "config.json"


@dataclass
class RunResult:
    """What a run did, for the command line and tests."""

    step: int
    steps_this_run: int
    resumed_from: Path | None
    last_eval: dict[str, float] = field(default_factory=dict)
    exported_version: str | None = None
    gate: GateDecision | None = None
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    export_error: str | None = None  # why the export that ends a bounded run published nothing


def resolve_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA device")
    return torch.device("cuda", local_rank)


class Trainer:
    """Runs the loop of the module docstring until ``max_steps`` or :meth:`request_stop`.

    Args:
        settings: the resolved settings.
        bus: the bus to consume windows from (and to dead-letter to).
        registry: Prometheus registry for the metrics (a private one by default).
    """

    def __init__(self, settings: TrainerSettings, bus: Bus, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.metrics = TrainerMetrics(registry if registry is not None else CollectorRegistry())
        self.stop_requested = threading.Event()
        self._started = threading.Event()
        self._source: WindowSource | None = None

    def request_stop(self) -> None:
        """Finish the current step, checkpoint, commit, and return (from a signal handler or another thread)."""
        self.stop_requested.set()

    def ready(self) -> tuple[bool, str]:
        if not self._started.is_set():
            return False, "loading the checkpoint and joining the consumer group"
        if self._source is not None and self._source.error is not None:
            return False, f"the bus consumer failed: {self._source.error}"
        return True, "training"

    # --- set-up ---------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        settings = self.settings
        torch.set_num_threads(settings.threads)
        device = resolve_device(settings.device, local_rank())
        if device.type == "cuda":
            # NCCL's object collectives and barriers use the current device: without this every rank would use GPU 0.
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
        dist = distributed.init_distributed(device.type)
        try:
            return _Run(self, dist, device).execute()
        finally:
            distributed.shutdown(dist)


class _Run:
    """One run of the trainer: built in ``__init__``, driven by :meth:`execute`."""

    def __init__(self, trainer: Trainer, dist: Distributed, device: torch.device) -> None:
        self.trainer = trainer
        self.settings = settings = trainer.settings
        self.metrics = metrics = trainer.metrics
        self.dist = dist
        self.device = device
        eval_log = EvalLog(settings.checkpoint_dir / settings.eval.log_name)
        loaded = load_latest(settings.checkpoint_dir, on_invalid=lambda _p, _r: metrics.checkpoint_load_failures.inc())
        self.resumed_from: Path | None = loaded[0] if loaded else None
        payload: dict[str, Any] | None = loaded[1] if loaded else None
        self.model_config = model_config = self._model_config(payload)
        self.config_hash = config_hash(model_config, settings.loss)
        # The order of construction is part of reproducibility: the learner seeds torch before building the model.
        self.learner = Learner(model_config, settings, dist, device)
        self.step = 0
        self.final_export_error: str | None = None
        data, seed = settings.data, settings.optim.seed
        self.replay = ReplayBuffer(data.replay_windows, data.replay_bytes, seed=seed + 7919 * dist.rank)
        self.heldout = self._held_out_set()
        self.dead_letters = DeadLetters(trainer.bus, settings.topic)
        planner = self._planner()
        self.checkpoints = CheckpointCoordinator(
            settings, model_config, self.config_hash, self.learner, planner, self.replay, self.heldout,
            self.dead_letters, dist, metrics,
        )  # fmt: skip
        restored: list[BatchPlan] = []
        if payload is not None:
            self.step, restored = self.checkpoints.restore(payload)
        if dist.is_main:
            self._write_config()
        self.learner.wrap()
        # With DDP every rank must take part in every step's collectives, so a rank never abandons a plan half-way:
        # planning stops only on the agreed stop (checked between steps). A single process stops planning at once.
        plan_stop = trainer.stop_requested if not dist.enabled else threading.Event()
        self.feed = BatchFeed(
            planner, restored, plan_stop, settings, model_config, self.replay, self.dead_letters, metrics,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
        ema = self.learner.ema
        self.evaluator = HeldOutEvaluator(
            self.heldout, ema, model_config, settings.eval.batch_size, device, eval_log, metrics
        )
        self.exports = ExportScheduler(
            settings, model_config, self.config_hash, ema, self.evaluator, self.replay, self.heldout, metrics
        )
        self.meter = ThroughputMeter(
            metrics, self.replay, self.heldout, data.batch_size, settings.progress_every, settings.max_steps,
            show_progress=dist.is_main,
            log=EvalLog(settings.checkpoint_dir / settings.eval.train_log_name) if dist.is_main else None,
        )  # fmt: skip

    def _model_config(self, payload: dict[str, Any] | None) -> ModelConfig:
        """The checkpoint's architecture when resuming (whatever the settings say), else the settings'."""
        if payload is None:
            return self.settings.model
        model_config = ModelConfig.model_validate(payload["model_config"])
        if model_config != self.settings.model:
            log.warning("the checkpoint's architecture differs from the settings; the checkpoint's is used")
        return model_config

    def _held_out_set(self) -> HeldOutSet:
        settings = self.settings
        if settings.eval.file is not None:
            return HeldOutSet.from_file(settings.eval.file, settings.eval.max_windows)
        if settings.eval.topic is not None:
            return HeldOutSet.from_topic(
                self.trainer.bus, settings.eval.topic, settings.eval.max_windows, self.model_config.window
            )
        return HeldOutSet(min(settings.eval.max_windows, settings.data.holdout_windows))

    def _planner(self) -> BatchPlanner:
        settings, dist = self.settings, self.dist
        journal_path = settings.data.journal
        if journal_path is not None and dist.enabled:
            journal_path = journal_path.with_name(f"{journal_path.stem}.rank{dist.rank}{journal_path.suffix}")
        return BatchPlanner(
            None,
            self.replay,
            None if self.heldout.fixed else self.heldout,
            self.dead_letters,
            self.model_config,
            settings.data,
            self.metrics,
            seed=settings.optim.seed + 104729 * (dist.rank + 1),
            journal=Journal(journal_path),
        )

    def _write_config(self) -> None:
        """The run's resolved settings beside its checkpoints (as jepa does), replaced atomically."""
        directory = self.settings.checkpoint_dir
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / CONFIG_FILE, (self.settings.model_dump_json(indent=2) + "\n").encode())

    # --- the loop -------------------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        """Train until ``max_steps`` or an agreed stop; then checkpoint and, at the end of a bounded run, export."""
        settings, dist, stop_requested = self.settings, self.dist, self.trainer.stop_requested
        max_steps, start_step = settings.max_steps, self.step
        self._start_consuming()
        last_checkpoint = time.monotonic()
        deadline = None if settings.max_minutes is None else last_checkpoint + 60 * settings.max_minutes
        stopped = out_of_time = False
        self.meter.begin_interval()
        try:
            while max_steps is None or self.step < max_steps:
                # A collective: every rank takes the same decision, at the same point of every step.
                now = time.monotonic()
                stop, time_due, out_of_time = distributed.any_true(
                    [stop_requested.is_set(), now - last_checkpoint > settings.checkpoint.every_s,
                     deadline is not None and now >= deadline],
                    dist,
                    self.device,
                )  # fmt: skip
                if stop or out_of_time:
                    self.feed.stop_planning()
                    stopped = stop
                    break
                trained = self._train_one()
                if trained is None:  # no batch: a stop was requested
                    stopped = True
                    break
                if not trained:
                    continue
                if dist.is_main and self.step % settings.eval_every == 0:
                    self.evaluator.evaluate(self.step)
                if self.step % settings.checkpoint.every_steps == 0 or time_due:
                    # Written or not (a full disk: logged, nothing committed), the next try is a full interval
                    # away, not at every following step.
                    self._checkpoint()
                    last_checkpoint = time.monotonic()
                if dist.is_main:
                    self.exports.after_step(self.step)
            self.meter.finish()
            self._finish(start_step, stopped, out_of_time)
        finally:
            self._close()
        return RunResult(
            step=self.step,
            steps_this_run=self.step - start_step,
            resumed_from=self.resumed_from,
            last_eval=dict(self.evaluator.last),
            exported_version=self.exports.version,
            gate=self.exports.decision,
            committed=dict(self.checkpoints.committed),
            export_error=self.final_export_error,
        )

    def _start_consuming(self) -> None:
        settings, trainer, feed = self.settings, self.trainer, self.feed
        source = WindowSource(
            trainer.bus,
            settings.topic,
            settings.data.group_id,
            start_offsets=feed.planner.consumed,
            min_frames=self.model_config.window,
            queue_records=settings.data.raw_queue_records,
            poll_records=settings.data.poll_records,
            metrics=self.metrics,
            join_timeout_s=settings.data.join_timeout_s if self._every_rank_gets_a_partition() else None,
        )
        trainer._source = source
        feed.start(source)
        trainer._started.set()

    def _every_rank_gets_a_partition(self) -> bool:
        """True if the topic exists with at least a partition per rank (so a consumer without one is stuck)."""
        try:
            return self.trainer.bus.partitions(self.settings.topic) >= self.dist.world_size
        except BusError:  # not created yet: members may legitimately wait
            return False

    def _train_one(self) -> bool | None:
        """A step on the next batch: True; False if none of its windows decodes (skipped); None if there is none."""
        self.meter.iteration_started()
        batch = self.feed.next_batch()
        self.meter.batch_taken()
        if batch is None:
            return None
        self.feed.discard_failed(batch)
        if batch.size == 0:  # every window's frames failed to decode: nothing to train on
            if self.dist.enabled:  # the other ranks are about to step: skipping would deadlock them
                raise RuntimeError(f"rank {self.dist.rank}: no window of the batch for step {self.step} decodes")
            log.warning("no window of the batch for step %d decodes; batch skipped", self.step)
            return False
        parts, embeddings = self.learner.train_step(batch)
        self.step += 1
        self.meter.step_done(self.step, parts, batch, embeddings, self.learner.learning_rate)
        return True

    def _checkpoint(self) -> bool:
        return self.checkpoints.checkpoint(self.step, self.feed.in_flight(), self.evaluator.last)

    def _finish(self, start_step: int, stopped: bool, out_of_time: bool) -> None:
        """After the loop: wait for a background export, checkpoint what is not yet, export a finished bounded run
        (``max_steps`` reached, or ``max_minutes`` up with at least one step trained)."""
        max_steps = self.settings.max_steps
        finished = (max_steps is not None and self.step >= max_steps) or (out_of_time and self.step > start_step)
        self.exports.collect(wait=True)
        unsaved = (self.step > start_step or stopped) and self.checkpoints.checkpointed_step != self.step
        if unsaved and not self._checkpoint():
            raise CheckpointError(
                f"the checkpoint at step {self.step} that ends the run was not written (see the error above); "
                f"a restart resumes from the newest checkpoint in {self.settings.checkpoint_dir} and trains the "
                "steps since then again from the bus (their offsets were not committed)"
            )
        if self.step == start_step and max_steps is not None and self.step >= max_steps:
            log.info("the checkpoint is already at step %d of --max-steps %d: nothing to do", self.step, max_steps)
        elif finished and not stopped and self.settings.export.at_end:
            if self.dist.is_main:
                self.exports.export_now(self.step)
                self.final_export_error = self.exports.error
            distributed.barrier(self.dist)

    def _close(self) -> None:
        self.exports.collect(wait=True)  # an error ended the run: let the export finish, it publishes atomically
        self.feed.close()
        try:
            self.dead_letters.close()
        except Exception as error:
            log.warning("closing the dead-letter producer: %s", error)
