"""The frame encoder: a small ResNet (He et al., CVPR 2016) for edge devices, ``[N, C, H, W] → [N, D]``.

A 3×3 stride-2 stem, then ``stages`` stages of basic blocks whose width doubles while the resolution halves, global
average pooling and a linear projection to ``D``. Batch norm (the default) folds into the convolutions when exported,
so the edge graph is convolutions, ReLUs and one matrix product; group norm is the choice when batches are tiny.

Pixels enter as uint8 ``[..., H, W, C]`` and are normalised by :func:`normalise_frames`, the same op the exported
ONNX graph runs, so training and serving see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from trainer.config import ModelConfig


def make_norm(kind: str, channels: int) -> nn.Module:
    """Batch norm, or group norm with up to 8 groups (Wu & He, ECCV 2018)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), make_norm(norm, out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FrameEncoder(nn.Module):
    """``[N, C, H, W]`` normalised pixels → ``[N, D]`` features (not normalised; see :func:`embed`).

    Args:
        channels: input channels (3 RGB or 1 gray).
        width: channels of the first stage; stage ``i`` has ``width · 2^i``.
        stages: number of stages; the first keeps the stem's resolution, each later one halves it.
        blocks_per_stage: basic blocks per stage.
        embedding_dim: ``D``.
        norm: ``"batch"`` or ``"group"``.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        stages: int,
        blocks_per_stage: int,
        embedding_dim: int,
        norm: str,
        spatial_grid: int = 1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), make_norm(norm, width), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        in_channels = width
        for stage in range(stages):
            out_channels = width * 2**stage
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride, norm))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.spatial_grid = spatial_grid
        self.head = nn.Linear(in_channels * spatial_grid**2, embedding_dim)
        self.out_channels = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last norm of each residual branch (Goyal et al., 2017): every block starts as an identity.
        for residual in blocks:
            assert isinstance(residual, BasicBlock)
            if isinstance(residual.norm2, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.zeros_(residual.norm2.weight)

    @classmethod
    def from_config(cls, config: ModelConfig) -> FrameEncoder:
        return cls(
            config.channels,
            config.encoder_width,
            config.stages,
            config.blocks_per_stage,
            config.embedding_dim,
            config.norm,
            config.spatial_grid,
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.blocks(self.stem(x))
        if self.spatial_grid == 1:
            pooled = features.mean(dim=(2, 3))
        else:
            # Frame sizes are fixed per model, so the pooling window is a constant of the exported graph.
            kernel = (int(features.shape[-2]) // self.spatial_grid, int(features.shape[-1]) // self.spatial_grid)
            pooled = F.avg_pool2d(features, kernel).flatten(1)
        out: Tensor = self.head(pooled)
        return out


class PixelNormaliser(nn.Module):
    """uint8 ``[..., H, W, C]`` → (float ``[..., C, H, W]`` in [0, 1], normalised float ``[..., C, H, W]``).

    The per-channel mean and std are buffers derived from the config (not trained, not saved: the config is).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        leading = list(range(frames.dim() - 3))
        last = frames.dim() - 1
        unit = frames.to(torch.float32).div(255.0).permute(*leading, last, last - 2, last - 1)
        return unit, (unit - self.mean) / self.std


def embed(features: Tensor) -> Tensor:
    """The embedding space of every task and of the exported models: L2-normalised features."""
    return F.normalize(features, dim=-1, eps=1e-6)
