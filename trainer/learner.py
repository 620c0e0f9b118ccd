"""The model being trained and what updates it: EMA copy, optimiser, learning-rate schedule, and one training step."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer import distributed
from trainer.config import ModelConfig, TrainerSettings
from trainer.data.batches import Batch
from trainer.distributed import Distributed
from trainer.losses.total import LossParts, compute_losses
from trainer.model.streamssl_model import StreamSSLModel
from trainer.optim import EmaModel, build_optimizer, build_scheduler


class Learner:
    """The model, its EMA copy, optimiser and schedule, built from the run's seed (so a run is reproducible).

    Args:
        model_config: the architecture (the checkpoint's when resuming).
        settings: the resolved settings (optimiser, loss, compile).
        dist: the process group (or none).
        device: where the model lives.
    """

    def __init__(
        self, model_config: ModelConfig, settings: TrainerSettings, dist: Distributed, device: torch.device
    ) -> None:
        self.model_config = model_config
        self.settings = settings
        self.dist = dist
        self.device = device
        torch.manual_seed(settings.optim.seed)
        self.model = StreamSSLModel(model_config).to(device)
        self.ema: EmaModel[StreamSSLModel] = EmaModel(self.model, settings.optim.ema_decay)
        self.optimizer = build_optimizer(self.model, settings.optim)
        self.scheduler = build_scheduler(self.optimizer, settings.optim)
        self.train_model: nn.Module = self.model

    def wrap(self) -> None:
        """DDP and ``torch.compile`` around the model for training, once its weights are final (restored): DDP
        broadcasts rank 0's. Checkpoints keep the plain model's state, so a run resumes with or without either."""
        if self.dist.enabled:
            device = self.device
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if self.settings.compile:
            self.train_model = torch.compile(self.train_model)  # type: ignore[assignment]

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def train_step(self, batch: Batch) -> tuple[LossParts, torch.Tensor]:
        """Forward every task, backward, clip, optimiser and schedule step, EMA update; the losses and embeddings."""
        device, settings = self.device, self.settings
        frames = batch.frames.to(device, non_blocking=True)
        offsets = batch.order_offsets.to(device, non_blocking=True)
        permutations = batch.order_permutations.to(device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        with autocast:
            outputs = self.train_model(frames, offsets, permutations)
            gather = distributed.gather_rows if self.dist.enabled and settings.loss.global_negatives else None
            parts = compute_losses(outputs, permutations, self.model_config, settings.loss, gather)
        self.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        return parts, outputs.embeddings.detach()

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's share of the learner: weights, EMA, optimiser, schedule and random states."""
        device = self.device
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` saved (``payload`` may hold more: the whole checkpoint)."""
        self.model.load_state_dict(payload["model"])
        self.ema.load_state_dict(payload["ema"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["torch"])
        if self.device.type == "cuda" and payload["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(payload["rng"]["cuda"], self.device)
