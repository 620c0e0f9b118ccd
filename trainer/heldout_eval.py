"""Evaluation of the EMA model on the held-out windows, as metrics, log lines and ``eval.jsonl`` entries."""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt
import torch

from trainer.config import ModelConfig
from trainer.data.heldout import HeldOutSet
from trainer.evaluate import EvalLog, evaluate_model, prepare_windows
from trainer.metrics import TrainerMetrics
from trainer.model.streamssl_model import StreamSSLModel
from trainer.optim import EmaModel

log = logging.getLogger("trainer")


class HeldOutEvaluator:
    """Evaluates the EMA model on the held-out set; its windows are prepared once per version of the set.

    Args:
        heldout: the held-out windows.
        ema: the EMA copy of the model, the one evaluated.
        model_config: the window shape.
        batch_size: evaluation batch size.
        device: where the model runs.
        eval_log: where each evaluation is appended.
        metrics: the trainer's metrics.
    """

    def __init__(
        self,
        heldout: HeldOutSet,
        ema: EmaModel[StreamSSLModel],
        model_config: ModelConfig,
        batch_size: int,
        device: torch.device,
        eval_log: EvalLog,
        metrics: TrainerMetrics,
    ) -> None:
        self.heldout = heldout
        self.ema = ema
        self.model_config = model_config
        self.batch_size = batch_size
        self.device = device
        self.eval_log = eval_log
        self.metrics = metrics
        self.last: dict[str, float] = {}
        self._last_step = -1
        self._cache: tuple[int, npt.NDArray[np.uint8]] | None = None

    def frames(self) -> npt.NDArray[np.uint8]:
        """The held-out windows, prepared for the model (``[N, T, H, W, C]``)."""
        if self._cache is None or self._cache[0] != self.heldout.version:
            config = self.model_config
            frames = prepare_windows(
                [w.data for w in self.heldout.windows],
                config.frame_height,
                config.frame_width,
                config.channels,
                config.window,
            )
            self._cache = (self.heldout.version, frames)
        return self._cache[1]

    def evaluate(self, step: int) -> dict[str, float]:
        """Evaluate now; {} (and nothing recorded) while there are fewer than two held-out windows."""
        frames = self.frames()
        if frames.shape[0] < 2:
            log.info("step %d: evaluation skipped, %d held-out windows so far", step, frames.shape[0])
            return {}
        started = time.monotonic()
        metrics = evaluate_model(self.ema.module, frames, self.batch_size, self.device)
        for name, value in metrics.items():
            self.metrics.eval_metric.labels(name).set(value)
        self.eval_log.write("eval", step, metrics)
        self._last_step = step
        log.info(
            "eval step %d (%d windows, %.1f s): order accuracy %.3f (chance %.3f), future top-1 %.3f, pixel PSNR "
            "%.2f dB vs copy-last %.2f dB",
            step,
            int(metrics["windows"]),
            time.monotonic() - started,
            metrics["order_accuracy"],
            1 / 24,
            metrics.get("future_top1", float("nan")),
            metrics["pixel_psnr_db"],
            metrics["copy_last_psnr_db"],
        )
        self.last = metrics
        return metrics

    def at(self, step: int) -> dict[str, float]:
        """The metrics of ``step``: the evaluation already run at it, else a new one."""
        return dict(self.last if self._last_step == step else self.evaluate(step))
