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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import CollectorRegistry
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ingest.bus import Bus, BusError, TopicPartition
from ingest.contract import decode_window
from ingest.runtime.dead_letters import DeadLetters
from ingest.runtime.durable_files import write_atomically
from trainer import distributed
from trainer.checkpoint import load_latest, save_checkpoint
from trainer.collapse import collapse_stats
from trainer.config import ModelConfig, TrainerSettings, config_hash
from trainer.data.augment import ClipAugment, evaluation_frames
from trainer.data.batches import Batch, BatchAssembler, BatchPlan, BatchPlanner, Journal, record_from_state
from trainer.data.decode_pool import DecodePool
from trainer.data.heldout import HeldOutSet
from trainer.data.replay import ReplayBuffer
from trainer.data.window_source import WindowSource, check_record
from trainer.distributed import Distributed, local_rank
from trainer.evaluate import EvalLog, evaluate_model, prepare_windows
from trainer.export_job import BackgroundExport, ExportJob, ExportOutcome, ExportSpec, run_export
from trainer.losses.total import LossParts, compute_losses
from trainer.metrics import TrainerMetrics
from trainer.model.streamssl_model import StreamSSLModel
from trainer.optim import EmaModel, build_optimizer, build_scheduler
from trainer.promotion_gate import GateDecision

log = logging.getLogger("trainer")

CONFIG_FILE = "config.json"
# How long a commit on the consumer thread may take before the loop carries on (it is retried at the next one).
_COMMIT_TIMEOUT_S = 30.0


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
        self.metrics = trainer.metrics
        self.dist = dist
        self.device = device
        self.checkpoint_dir = settings.checkpoint_dir
        self.eval_log = EvalLog(self.checkpoint_dir / settings.eval.log_name)

        loaded = load_latest(self.checkpoint_dir, on_invalid=lambda _p, _r: self.metrics.checkpoint_load_failures.inc())
        self.resumed_from: Path | None = loaded[0] if loaded else None
        payload: dict[str, Any] | None = loaded[1] if loaded else None
        model_config = settings.model
        if payload is not None:
            model_config = ModelConfig.model_validate(payload["model_config"])
            if model_config != settings.model:
                log.warning("the checkpoint's architecture differs from the settings; the checkpoint's is used")
        self.model_config = model_config
        self.config_hash = config_hash(model_config, settings.loss)

        torch.manual_seed(settings.optim.seed)
        self.model = StreamSSLModel(model_config).to(device)
        self.ema: EmaModel[StreamSSLModel] = EmaModel(self.model, settings.optim.ema_decay)
        self.optimizer = build_optimizer(self.model, settings.optim)
        self.scheduler = build_scheduler(self.optimizer, settings.optim)
        self.step = 0

        data = settings.data
        self.replay = ReplayBuffer(data.replay_windows, data.replay_bytes, seed=settings.optim.seed + 7919 * dist.rank)
        self.heldout = self._held_out_set()
        self.dead_letters = DeadLetters(trainer.bus, settings.topic)
        journal_path = data.journal
        if journal_path is not None and dist.enabled:
            journal_path = journal_path.with_name(f"{journal_path.stem}.rank{dist.rank}{journal_path.suffix}")
        self.planner = BatchPlanner(
            None,
            self.replay,
            None if self.heldout.fixed else self.heldout,
            self.dead_letters,
            model_config,
            data,
            self.metrics,
            seed=settings.optim.seed + 104729 * (dist.rank + 1),
            journal=Journal(journal_path),
        )
        self.pending_plans: list[BatchPlan] = []
        if payload is not None:
            self._restore(payload)
        if dist.is_main:
            self._write_config()

        self.train_model: nn.Module = self.model
        if dist.enabled:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if settings.compile:
            self.train_model = torch.compile(self.train_model)  # type: ignore[assignment]

        self.augment = ClipAugment(model_config, data)
        self.pool = DecodePool(data.decode_workers, self.augment)
        self.assembler = BatchAssembler(self.pool, pin_memory=device.type == "cuda")
        self.pending: deque[tuple[BatchPlan, Future[Batch]]] = deque()
        self.last_eval: dict[str, float] = {}
        self._last_eval_step = -1
        self._checkpointed_step = -1
        self._eval_cache: tuple[int, npt.NDArray[np.uint8]] | None = None
        self._background: BackgroundExport | None = None
        self.committed: dict[TopicPartition, int] = {}
        # With DDP every rank must take part in every step's collectives, so a rank never abandons a plan half-way:
        # planning stops only on the agreed stop (checked between steps). A single process stops planning at once.
        self._plan_stop = trainer.stop_requested if not dist.enabled else threading.Event()

    def _held_out_set(self) -> HeldOutSet:
        settings = self.settings
        if settings.eval.file is not None:
            return HeldOutSet.from_file(settings.eval.file, settings.eval.max_windows)
        if settings.eval.topic is not None:
            return HeldOutSet.from_topic(
                self.trainer.bus, settings.eval.topic, settings.eval.max_windows, self.model_config.window
            )
        return HeldOutSet(min(settings.eval.max_windows, settings.data.holdout_windows))

    def _write_config(self) -> None:
        """The run's resolved settings beside its checkpoints (as jepa does), replaced atomically."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.checkpoint_dir / CONFIG_FILE, (self.settings.model_dump_json(indent=2) + "\n").encode())

    # --- checkpoints ----------------------------------------------------------------------------------------
    def _restore(self, payload: dict[str, Any]) -> None:
        dist = self.dist
        self.model.load_state_dict(payload["model"])
        self.ema.load_state_dict(payload["ema"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = int(payload["step"])
        torch.set_rng_state(payload["rng"]["torch"])
        if self.device.type == "cuda" and payload["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(payload["rng"]["cuda"], self.device)
        ranks: list[dict[str, Any]] = payload["ranks"]
        if len(ranks) == dist.world_size:
            mine = ranks[dist.rank]
            self.planner.load_state_dict(mine["planner"])
            self.replay.load_state_dict(mine["replay"])
            self.pending_plans = [BatchPlan.from_state(plan) for plan in mine["pending"]]
            self.heldout.load_state_dict(mine["heldout"])
        else:
            self._restore_resized(ranks)
        self.metrics.step.set(self.step)
        log.info(
            "resumed at step %d; consumer offsets %s",
            self.step,
            {f"{tp.topic}[{tp.partition}]": offset for tp, offset in sorted(self.planner.consumed.items())},
        )

    def _restore_resized(self, ranks: list[dict[str, Any]]) -> None:
        """The world size changed: every rank gets all offsets (highest wins) and a share of the saved data."""
        dist = self.dist
        log.warning(
            "checkpoint from %d process(es), now %d: redistributing its data state", len(ranks), dist.world_size
        )
        consumed: dict[TopicPartition, int] = {}
        for state in ranks:
            for topic, partition, offset in state["planner"]["consumed"]:
                key = TopicPartition(topic, int(partition))
                consumed[key] = max(int(offset), consumed.get(key, 0))
        for old_rank, state in enumerate(ranks):
            if old_rank == dist.rank:  # replay, held-out set and random state of the same rank number
                self.planner.load_state_dict(state["planner"])
                self.replay.load_state_dict(state["replay"])
                self.heldout.load_state_dict(state["heldout"])
        self.planner.carry = []
        for old_rank, state in enumerate(ranks):  # windows taken but not trained: old rank r goes to r % world
            if old_rank % dist.world_size == dist.rank:
                carry = [record_from_state(record) for record in state["planner"]["carry"]]
                self.planner.carry.extend(check_record(record, self.model_config.window) for record in carry)
                self.pending_plans.extend(BatchPlan.from_state(plan) for plan in state["pending"])
        self.planner.consumed = consumed

    def _rank_state(self) -> dict[str, Any]:
        return {
            "planner": self.planner.state_dict(),
            "replay": self.replay.state_dict(),
            "pending": [plan.state_dict() for plan, _ in self.pending],
            "heldout": self.heldout.state_dict(),
        }

    def _checkpoint(self) -> bool:
        """Checkpoint durably, then commit the offsets it holds; False if it could not be written."""
        started = time.monotonic()
        # Dead letters first: the checkpoint's offsets move past them, so they must be on the bus before it exists.
        try:
            self.dead_letters.flush()
            flushed = True
        except Exception as error:
            log.error("checkpoint postponed: dead letters not acknowledged (%s)", error)
            flushed = False
        gathered = distributed.gather_objects(
            {"ok": flushed, "state": self._rank_state() if flushed else None}, self.dist
        )
        if not all(rank["ok"] for rank in gathered):
            return False
        states = [rank["state"] for rank in gathered]
        if self.dist.is_main:
            payload = {
                "step": self.step,
                "model_config": self.model_config.model_dump(mode="json"),
                "settings": self.settings.model_dump_json(),
                "config_hash": self.config_hash,
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                },
                "ranks": states,
                "last_eval": dict(self.last_eval),
                "time": time.time(),
            }
            path = save_checkpoint(self.checkpoint_dir, self.step, payload, self.settings.checkpoint.keep_last)
            log.info("checkpoint %s written in %.2f s", path.name, time.monotonic() - started)
        distributed.barrier(self.dist)  # every rank commits only after rank 0's file is durable
        self._checkpointed_step = self.step
        self.metrics.checkpoint_written()
        self.metrics.checkpoint_seconds.observe(time.monotonic() - started)
        self._commit()
        return True

    def _commit(self) -> None:
        if self._source is None or not self.planner.consumed:
            return
        try:
            committed = self._source.commit(self.planner.consumed).result(timeout=_COMMIT_TIMEOUT_S)
        except Exception as error:  # the next checkpoint commits again; at worst windows are re-read
            log.warning("offsets not committed (they will be at the next checkpoint): %s", error)
            return
        self.committed.update(committed)

    @property
    def _source(self) -> WindowSource | None:
        return self.trainer._source

    # --- evaluation -----------------------------------------------------------------------------------------
    def _eval_frames(self) -> npt.NDArray[np.uint8]:
        if self._eval_cache is None or self._eval_cache[0] != self.heldout.version:
            config = self.model_config
            frames = prepare_windows(
                [w.data for w in self.heldout.windows],
                config.frame_height,
                config.frame_width,
                config.channels,
                config.window,
            )
            self._eval_cache = (self.heldout.version, frames)
        return self._eval_cache[1]

    def _evaluate(self) -> dict[str, float]:
        frames = self._eval_frames()
        if frames.shape[0] < 2:
            log.info("step %d: evaluation skipped, %d held-out windows so far", self.step, frames.shape[0])
            return {}
        started = time.monotonic()
        metrics = evaluate_model(self.ema.module, frames, self.settings.eval.batch_size, self.device)
        for name, value in metrics.items():
            self.metrics.eval_metric.labels(name).set(value)
        self.eval_log.write("eval", self.step, metrics)
        self._last_eval_step = self.step
        log.info(
            "eval step %d (%d windows, %.1f s): order accuracy %.3f (chance %.3f), future top-1 %.3f, pixel PSNR "
            "%.2f dB vs copy-last %.2f dB",
            self.step,
            int(metrics["windows"]),
            time.monotonic() - started,
            metrics["order_accuracy"],
            1 / 24,
            metrics.get("future_top1", float("nan")),
            metrics["pixel_psnr_db"],
            metrics["copy_last_psnr_db"],
        )
        self.last_eval = metrics
        return metrics

    # --- export ---------------------------------------------------------------------------------------------
    def _sample_frames(self, count: int) -> npt.NDArray[np.uint8]:
        """Real windows for parity and calibration: held-out ones, else replayed ones, prepared for the model."""
        frames = self._eval_frames()
        if frames.shape[0] >= count:
            return frames[:count]
        config = self.model_config
        replayed = self.replay.sample(count, np.random.default_rng(self.step))
        extra = [
            evaluation_frames(
                decode_window(w.data).frames, config.frame_height, config.frame_width, config.channels, config.window
            )
            for w in replayed
        ]
        stacked = np.concatenate([frames, np.stack(extra)]) if extra else frames
        return stacked[:count]

    def _export_job(self) -> ExportJob | None:
        """Snapshot what an export of the EMA model at this step needs; None (counted) without windows to check."""
        settings, export = self.settings, self.settings.export
        frames = self._sample_frames(export.parity_windows)
        if frames.shape[0] == 0:
            log.error("export skipped: no window to check parity on")
            self.metrics.exports.labels("failed").inc()
            return None
        metrics = dict(self.last_eval if self._last_eval_step == self.step else self._evaluate())
        calibration = self._sample_frames(export.calibration_windows) if export.int8 else frames[:0]
        spec = ExportSpec(
            step=self.step,
            registry=settings.registry,
            export=export,
            model=self.model_config,
            loss=settings.loss,
            ema_decay=settings.optim.ema_decay,
            eval_batch_size=settings.eval.batch_size,
            config_hash=self.config_hash,
            metrics={k: float(v) for k, v in metrics.items()},
            eval_log=self.eval_log.path,
        )
        weights = {name: value.detach().to("cpu", copy=True) for name, value in self.ema.module.state_dict().items()}
        return ExportJob(spec, weights, frames, calibration, [w.data for w in self.heldout.windows])

    def _export(self) -> tuple[str | None, GateDecision | None]:
        """Export now, in this process (the end of a bounded run); errors other than parity propagate."""
        job = self._export_job()
        return (None, None) if job is None else self._record_export(run_export(job))

    def _record_export(self, outcome: ExportOutcome) -> tuple[str | None, GateDecision | None]:
        metrics = self.metrics
        metrics.exports.labels(outcome.result).inc()
        if outcome.result == "failed":
            log.error("export at step %d failed: %s", outcome.step, outcome.error)
        if outcome.version is not None:
            metrics.last_exported_version.set(int(outcome.version))
        if outcome.decision is not None:  # only a gate knows the production version; a failed export leaves it
            metrics.gate_decisions.labels("promoted" if outcome.decision.promoted else "refused").inc()
            metrics.production_version.set(int(outcome.production) if outcome.production else 0)
        return outcome.version, outcome.decision

    def _start_background_export(self) -> None:
        """A periodic export in a child process; skipped (counted) while the previous one still runs."""
        if self._background is not None:
            log.warning(
                "export at step %d skipped: the one of step %d is still running", self.step, self._background.step
            )
            self.metrics.exports.labels("skipped_busy").inc()
            return
        job = self._export_job()
        if job is None:
            return
        try:
            self._background = BackgroundExport(job, threads=self.settings.threads)
        except Exception:  # a periodic export must not stop training
            log.exception("could not start the export of step %d", self.step)
            self.metrics.exports.labels("failed").inc()

    def _collect_background_export(self, wait: bool = False) -> tuple[str | None, GateDecision | None] | None:
        """The finished background export's (version, decision), recorded; None while none has finished."""
        if self._background is None:
            return None
        outcome = self._background.wait() if wait else self._background.poll()
        if outcome is None:
            return None
        self._background = None
        return self._record_export(outcome)

    # --- training -------------------------------------------------------------------------------------------
    def _submit(self, plan: BatchPlan) -> None:
        self.pending.append((plan, self.assembler.submit(plan)))

    def _next_batch(self) -> Batch | None:
        """Plan ahead to ``prefetch_batches``, then take the oldest planned batch (None: stop requested)."""
        while len(self.pending) < self.settings.data.prefetch_batches:
            plan = self.planner.plan(self._plan_stop)
            if plan is None:
                break
            self._submit(plan)
        if not self.pending:
            return None
        _, future = self.pending.popleft()
        return future.result()

    def _handle_failures(self, batch: Batch) -> None:
        for window, reason in batch.failed:
            self.metrics.skipped.labels("decode_error").inc()
            self.replay.discard(window.key)
            if window.record is not None:
                self.metrics.dead_letters.inc()
                self.dead_letters.send(window.record, reason)

    def _train_step(self, batch: Batch) -> tuple[LossParts, torch.Tensor]:
        device = self.device
        frames = batch.frames.to(device, non_blocking=True)
        offsets = batch.order_offsets.to(device, non_blocking=True)
        permutations = batch.order_permutations.to(device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        with autocast:
            outputs = self.train_model(frames, offsets, permutations)
            gather = distributed.gather_rows if self.dist.enabled and self.settings.loss.global_negatives else None
            parts = compute_losses(outputs, permutations, self.model_config, self.settings.loss, gather)
        self.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        return parts, outputs.embeddings.detach()

    def _every_rank_gets_a_partition(self) -> bool:
        """True if the topic exists with at least a partition per rank (so a consumer without one is stuck)."""
        try:
            return self.trainer.bus.partitions(self.settings.topic) >= self.dist.world_size
        except BusError:  # not created yet: members may legitimately wait
            return False

    def execute(self) -> RunResult:
        settings, metrics, dist = self.settings, self.metrics, self.dist
        trainer = self.trainer
        start_step = self.step
        source = WindowSource(
            trainer.bus,
            settings.topic,
            settings.data.group_id,
            start_offsets=self.planner.consumed,
            min_frames=self.model_config.window,
            queue_records=settings.data.raw_queue_records,
            poll_records=settings.data.poll_records,
            metrics=metrics,
            join_timeout_s=settings.data.join_timeout_s if self._every_rank_gets_a_partition() else None,
        )
        trainer._source = source
        self.planner.source = source
        source.start()
        for plan in self.pending_plans:
            self._submit(plan)
        self.pending_plans = []
        trainer._started.set()
        max_steps = settings.max_steps
        exported: str | None = None
        decision: GateDecision | None = None
        last_checkpoint = time.monotonic()
        stopped = False
        interval_start = time.monotonic()
        interval_windows = 0
        interval_wait = 0.0
        interval_busy = 0.0
        try:
            while max_steps is None or self.step < max_steps:
                stop, time_due = distributed.any_true(
                    [trainer.stop_requested.is_set(), time.monotonic() - last_checkpoint > settings.checkpoint.every_s],
                    dist,
                    self.device,
                )
                if stop:
                    self._plan_stop.set()
                    stopped = True
                    break
                iteration_start = time.monotonic()
                batch = self._next_batch()
                waited = time.monotonic() - iteration_start
                if batch is None:
                    stopped = True
                    break
                self._handle_failures(batch)
                if batch.size == 0:  # every window's frames failed to decode: nothing to train on
                    if dist.enabled:  # the other ranks are about to step: skipping would deadlock them
                        raise RuntimeError(f"rank {dist.rank}: no window of the batch for step {self.step} decodes")
                    log.warning("no window of the batch for step %d decodes; batch skipped", self.step)
                    continue
                parts, embeddings = self._train_step(batch)
                self.step += 1
                busy = time.monotonic() - iteration_start
                interval_wait += waited
                interval_busy += busy
                interval_windows += batch.size
                self._record_step(parts, batch, busy, waited)
                if self.step % settings.progress_every == 0 or self.step == max_steps:
                    stats = collapse_stats(embeddings)
                    metrics.embedding_std.set(stats.embedding_std)
                    metrics.embedding_rank.set(stats.effective_rank)
                    elapsed = time.monotonic() - interval_start
                    windows_per_s = interval_windows / max(elapsed, 1e-9)
                    wait_fraction = interval_wait / max(interval_busy, 1e-9)
                    metrics.windows_per_second.set(windows_per_s)
                    metrics.data_wait_fraction.set(wait_fraction)
                    if dist.is_main:
                        self._progress(parts, windows_per_s, wait_fraction, stats.effective_rank, max_steps)
                    interval_start, interval_windows, interval_wait, interval_busy = time.monotonic(), 0, 0.0, 0.0
                if dist.is_main and self.step % settings.eval_every == 0:
                    self._evaluate()
                due = self.step % settings.checkpoint.every_steps == 0 or time_due
                if due and self._checkpoint():
                    last_checkpoint = time.monotonic()
                if dist.is_main:
                    finished = self._collect_background_export()
                    if finished is not None:
                        exported, decision = finished
                    if self.step % settings.export_every == 0 and self.step != max_steps:
                        self._start_background_export()
            finished = self._collect_background_export(wait=True)
            if finished is not None:
                exported, decision = finished
            if (self.step > start_step or stopped) and self._checkpointed_step != self.step:
                self._checkpoint()
            if self.step == start_step and max_steps is not None and self.step >= max_steps:
                log.info("the checkpoint is already at step %d of --max-steps %d: nothing to do", self.step, max_steps)
            elif max_steps is not None and self.step >= max_steps and settings.export.at_end:
                if dist.is_main:
                    exported, decision = self._export()
                distributed.barrier(dist)
        finally:
            self._close()
        return RunResult(
            step=self.step,
            steps_this_run=self.step - start_step,
            resumed_from=self.resumed_from,
            last_eval=dict(self.last_eval),
            exported_version=exported,
            gate=decision,
            committed=dict(self.committed),
        )

    def _record_step(self, parts: LossParts, batch: Batch, busy: float, waited: float) -> None:
        metrics = self.metrics
        scalars = parts.scalars()
        for task in ("total", "future", "order", "pixel"):
            metrics.loss.labels(task).set(scalars[task])
        for name in ("future_top1", "order_accuracy", "pixel_psnr_db", "copy_last_psnr_db"):
            metrics.train_metric.labels(name).set(scalars[name])
        metrics.steps.inc()
        metrics.step.set(self.step)
        metrics.learning_rate.set(float(self.scheduler.get_last_lr()[0]))
        fresh = sum(1 for origin in batch.origins if origin == "fresh")
        metrics.windows.labels("fresh").inc(fresh)
        metrics.windows.labels("replay").inc(batch.size - fresh)
        metrics.step_seconds.observe(busy)
        metrics.data_wait_seconds.inc(waited)
        metrics.replay_windows.set(len(self.replay))
        metrics.replay_bytes.set(self.replay.nbytes)
        metrics.replay_fill.set(
            max(len(self.replay) / self.replay.max_windows, self.replay.nbytes / self.replay.max_bytes)
        )
        metrics.heldout_windows.set(len(self.heldout))

    def _progress(
        self, parts: LossParts, windows_per_s: float, wait_fraction: float, rank: float, max_steps: int | None
    ) -> None:
        scalars = parts.scalars()
        position = str(self.step)
        if max_steps:
            steps_per_s = windows_per_s / max(1, self.settings.data.batch_size)
            eta = (max_steps - self.step) / max(steps_per_s, 1e-9)
            position = f"{self.step}/{max_steps} ({100 * self.step / max_steps:.0f}%, eta {eta:.0f} s)"
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

    def _close(self) -> None:
        if self._background is not None:  # an error ended the run: let the export finish, it publishes atomically
            self._collect_background_export(wait=True)
        source = self._source
        if source is not None:
            source.stop()
        self.assembler.shutdown()
        self.pool.shutdown()
        self.planner.journal.close()
        try:
            self.dead_letters.close()
        except Exception as error:
            log.warning("closing the dead-letter producer: %s", error)
