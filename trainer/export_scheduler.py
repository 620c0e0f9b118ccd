"""When the trainer exports (rank 0 only): periodic exports in a child process, the final one in this process."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from ingest.contract import decode_window
from ingest.contract.model_input import model_input
from ingest.registry import RegistryError
from trainer.config import ModelConfig, TrainerSettings
from trainer.data.heldout import HeldOutSet
from trainer.data.replay import ReplayBuffer
from trainer.export_job import BackgroundExport, ExportJob, ExportOutcome, ExportSpec, run_export
from trainer.heldout_eval import HeldOutEvaluator
from trainer.metrics import TrainerMetrics
from trainer.model.streamssl_model import StreamSSLModel
from trainer.optim import EmaModel
from trainer.promotion_gate import GateDecision

log = logging.getLogger("trainer")


class ExportScheduler:
    """Exports the EMA model and records every outcome (metrics, and :attr:`version` / :attr:`decision`).

    A periodic export runs in a child process while training goes on; one that comes due while the previous still
    runs is skipped and counted (``skipped_busy``). The export that ends a bounded run runs in this process.

    Args:
        settings: the resolved settings (export, registry, evaluation).
        model_config: the architecture.
        config_hash: the hash of architecture and loss, for the metadata.
        ema: the EMA copy of the model, the one exported.
        evaluator: the held-out evaluation (its metrics go into the metadata; its windows check parity).
        replay: more windows for parity and calibration when the held-out set is small.
        heldout: the held-out set, for the promotion gate.
        metrics: the trainer's metrics.
    """

    def __init__(
        self,
        settings: TrainerSettings,
        model_config: ModelConfig,
        config_hash: str,
        ema: EmaModel[StreamSSLModel],
        evaluator: HeldOutEvaluator,
        replay: ReplayBuffer,
        heldout: HeldOutSet,
        metrics: TrainerMetrics,
    ) -> None:
        self.settings = settings
        self.model_config = model_config
        self.config_hash = config_hash
        self.ema = ema
        self.evaluator = evaluator
        self.replay = replay
        self.heldout = heldout
        self.metrics = metrics
        self.version: str | None = None  # of the last recorded export (None: it published nothing)
        self.decision: GateDecision | None = None
        self.error: str | None = None  # why the last recorded export published nothing, if it failed
        self._background: BackgroundExport | None = None

    def after_step(self, step: int) -> None:
        """Record a finished background export; start a periodic one if due (not at the last step of a bounded run:
        that one runs in this process, :meth:`export_now`)."""
        self.collect()
        if step % self.settings.export_every == 0 and step != self.settings.max_steps:
            self._start_background(step)

    def collect(self, wait: bool = False) -> None:
        """Record the background export if it has finished (with ``wait``, once it has); nothing if none runs."""
        if self._background is None:
            return
        outcome = self._background.wait(self.settings.export.timeout_s) if wait else self._background.poll()
        if outcome is None:
            return
        self._background = None
        self._record(outcome)

    def export_now(self, step: int) -> None:
        """Export in this process (the end of a bounded run). A failure is recorded (``error``), counted and
        logged like a background one; the checkpoint is already written, so no training is lost."""
        job = self._job(step)
        if job is None:
            self.version, self.decision = None, None
            self.error = "no window to check parity on"
            return
        try:
            outcome = run_export(job)
        except RegistryError as error:  # e.g. a full registry disk: the message says what and where, no traceback
            outcome = ExportOutcome("failed", step, error=str(error))
        except Exception as error:  # the run's training is checkpointed; report the export's failure, not a crash
            log.exception("the export at the end of the run failed")
            outcome = ExportOutcome("failed", step, error=f"{type(error).__name__}: {error}")
        self._record(outcome)

    def _start_background(self, step: int) -> None:
        """A periodic export in a child process; skipped (counted) while the previous one still runs."""
        if self._background is not None:
            log.warning("export at step %d skipped: the one of step %d is still running", step, self._background.step)
            self.metrics.exports.labels("skipped_busy").inc()
            return
        job = self._job(step)
        if job is None:
            return
        try:
            self._background = BackgroundExport(job, threads=self.settings.threads)
        except Exception:  # a periodic export must not stop training
            log.exception("could not start the export of step %d", step)
            self.metrics.exports.labels("failed").inc()

    def _record(self, outcome: ExportOutcome) -> None:
        metrics = self.metrics
        metrics.exports.labels(outcome.result).inc()
        if outcome.result == "failed":
            log.error("export at step %d failed: %s", outcome.step, outcome.error)
        if outcome.version is not None:
            metrics.last_exported_version.set(int(outcome.version))
        if outcome.decision is not None:  # only a gate knows the production version; a failed export leaves it
            metrics.gate_decisions.labels("promoted" if outcome.decision.promoted else "refused").inc()
            metrics.production_version.set(int(outcome.production) if outcome.production else 0)
        self.version, self.decision = outcome.version, outcome.decision
        self.error = outcome.error

    def _job(self, step: int) -> ExportJob | None:
        """Snapshot what an export of the EMA model at ``step`` needs; None (counted) without windows to check."""
        settings, export = self.settings, self.settings.export
        frames = self._sample_frames(step, export.parity_windows)
        if frames.shape[0] == 0:
            log.error("export skipped: no window to check parity on")
            self.metrics.exports.labels("failed").inc()
            return None
        metrics = self.evaluator.at(step)
        calibration = self._sample_frames(step, export.calibration_windows) if export.int8 else frames[:0]
        spec = ExportSpec(
            step=step,
            registry=settings.registry,
            export=export,
            model=self.model_config,
            loss=settings.loss,
            ema_decay=settings.optim.ema_decay,
            eval_batch_size=settings.eval.batch_size,
            config_hash=self.config_hash,
            metrics={k: float(v) for k, v in metrics.items()},
            eval_log=self.evaluator.eval_log.path,
        )
        weights = {name: value.detach().to("cpu", copy=True) for name, value in self.ema.module.state_dict().items()}
        return ExportJob(spec, weights, frames, calibration, [w.data for w in self.heldout.windows])

    def _sample_frames(self, step: int, count: int) -> npt.NDArray[np.uint8]:
        """Real windows for parity and calibration: held-out ones, else replayed ones, prepared for the model."""
        frames = self.evaluator.frames()
        if frames.shape[0] >= count:
            return frames[:count]
        config = self.model_config
        replayed = self.replay.sample(count, np.random.default_rng(step))
        extra = [
            model_input(
                decode_window(w.data).frames, config.frame_height, config.frame_width, config.channels, config.window
            )
            for w in replayed
        ]
        stacked = np.concatenate([frames, np.stack(extra)]) if extra else frames
        return stacked[:count]
