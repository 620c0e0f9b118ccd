"""Optimiser, learning-rate schedule and the EMA of the weights.

* AdamW (Loshchilov & Hutter, 2019); no weight decay on biases, norms, positional embeddings and query tokens.
* Linear warm-up, then a constant rate: a stream has no end to anneal towards.
* EMA of the weights (Polyak averaging; the "momentum" of Carreira et al., 2024, and of V-JEPA's target encoder) for
  evaluation and export: a smoother, better model than the last step's weights. The decay ramps up as
  ``min(decay, (1 + t) / (10 + t))`` so a short run's EMA is not dominated by the random initialisation.
"""

from __future__ import annotations

import copy
from typing import Generic, TypeVar

import torch
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

from trainer.config import OptimConfig

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def build_optimizer(model: nn.Module, config: OptimConfig) -> AdamW:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 and parameter.shape[0] > 1 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


class WarmupConstant:
    """Multiplier of the base rate at scheduler step ``t``: ``(t + 1) / warmup`` during warm-up, then 1.

    A class rather than a lambda, so :class:`LambdaLR` can be checkpointed.
    """

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)


def build_scheduler(optimizer: Optimizer, config: OptimConfig) -> LambdaLR:
    return LambdaLR(optimizer, WarmupConstant(config.warmup_steps))


class EmaModel(Generic[ModuleT]):
    """An exponential moving average of a model's parameters; buffers (batch-norm statistics) are copied."""

    def __init__(self, model: ModuleT, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = 0
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.module.parameters(), model.parameters(), strict=True):
            average.lerp_(current.detach(), 1 - decay)
        for average_buffer, current_buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            average_buffer.copy_(current_buffer)

    def state_dict(self) -> dict[str, object]:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        model_state = state["model"]
        assert isinstance(model_state, dict)
        self.module.load_state_dict(model_state)
        updates = state["updates"]
        assert isinstance(updates, int)
        self.updates = updates
