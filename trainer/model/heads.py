"""The task heads on top of the frame encoder.

* :class:`FuturePredictor` — Dense Predictive Coding (Han et al., ICCVW 2019), after CPC (van den Oord et al., 2018):
  from the embeddings of the first K frames, predict the embeddings of the next M. The temporal context network
  reads K context tokens and M learned query tokens; the outputs at the query positions are the predictions.
* :class:`OrderHead` — VCOP (Xu et al., CVPR 2019): features of 4 frames in shuffled order → pairwise relation
  features → one of 4! = 24 permutations.
* :class:`PixelHead` — a light next-frame predictor at low resolution (PredNet, Lotter et al. 2016; Liu et al.,
  CVPR 2018 use prediction error as an anomaly score): the K context frames, block-averaged to ``h×w``, and the
  predicted embedding of frame K+1 → a residual on the last context frame. Its last layer starts at zero, so an
  untrained head is exactly the copy-last-frame baseline.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from trainer.config import ORDER_FRAMES
from trainer.model.frame_encoder import embed
from trainer.model.temporal_context import TemporalContext

# Class i is the permutation PERMUTATIONS[i]: shuffled position p shows frame PERMUTATIONS[i][p] of the sorted four.
PERMUTATIONS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(ORDER_FRAMES)))
_PAIRS = tuple(itertools.combinations(range(ORDER_FRAMES), 2))


class FuturePredictor(nn.Module):
    """``context [N, K, D]`` (embeddings) → ``predicted [N, M, D]`` (L2-normalised embeddings)."""

    def __init__(self, dim: int, context_frames: int, future_frames: int, layers: int, heads: int) -> None:
        super().__init__()
        self.context_frames = context_frames
        self.future_frames = future_frames
        self.input = nn.Linear(dim, dim)
        self.queries = nn.Parameter(torch.zeros(future_frames, dim))
        nn.init.normal_(self.queries, std=0.02)
        self.context = TemporalContext(dim, layers, heads, context_frames + future_frames)
        self.output = nn.Linear(dim, dim)

    def forward(self, context: Tensor) -> Tensor:
        batch = context.shape[0]
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([self.input(context), queries], dim=1)
        mixed = self.context(tokens)[:, self.context_frames :]
        return embed(self.output(mixed))


class OrderHead(nn.Module):
    """``features [N, 4, D]`` of 4 frames in shuffled order → ``logits [N, 24]`` over :data:`PERMUTATIONS`.

    VCOP's pairwise design: each frame feature (minus the four frames' mean) goes through a shared layer, each of the
    6 pairs through a relation layer (both frames and their difference, which flips sign with their order), and
    the concatenated relations through the classifier.
    """

    left: Tensor
    right: Tensor

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.frame = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU())
        self.pair = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU())
        self.classify = nn.Linear(len(_PAIRS) * hidden, len(PERMUTATIONS))
        self.register_buffer("left", torch.tensor([i for i, _ in _PAIRS]), persistent=False)
        self.register_buffer("right", torch.tensor([j for _, j in _PAIRS]), persistent=False)

    def forward(self, features: Tensor) -> Tensor:
        # Order lives in how frames differ, not in the scene they share: remove the four frames' mean first.
        frames = self.frame(features - features.mean(dim=1, keepdim=True))
        first, second = frames[:, self.left], frames[:, self.right]
        pairs = self.pair(torch.cat([first, second, second - first], dim=-1))
        out: Tensor = self.classify(pairs.flatten(1))
        return out


class PixelHead(nn.Module):
    """``frames [N, K, C, H, W]`` in [0, 1] and ``predicted [N, D]`` → next frame ``[N, C, h, w]`` in [0, 1].

    Args:
        channels: ``C``.
        context_frames: ``K``.
        dim: ``D``.
        scale: ``(H // h, W // w)``; targets and inputs are block means over these blocks.
        hidden: channels of the convolutions.
    """

    def __init__(self, channels: int, context_frames: int, dim: int, scale: tuple[int, int], hidden: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.code = nn.Linear(dim, hidden)
        # A per-pixel linear filter over the context frames (e.g. averaging away sensor noise) learns in a few steps;
        # the convolutions learn motion.
        self.linear = nn.Conv2d(context_frames * channels, channels, 1)
        self.net = nn.Sequential(
            nn.Conv2d(context_frames * channels + hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 3, padding=1),
        )
        for layer in (self.net[-1], self.linear):
            assert isinstance(layer, nn.Conv2d)
            assert layer.bias is not None
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def low_resolution(self, frames: Tensor) -> Tensor:
        """``[..., C, H, W]`` → ``[..., C, h, w]`` block means (area downsampling)."""
        flat = frames.reshape(-1, *frames.shape[-3:])
        low = F.avg_pool2d(flat, self.scale) if self.scale != (1, 1) else flat
        return low.reshape(*frames.shape[:-2], *low.shape[-2:])

    def forward(self, frames: Tensor, predicted: Tensor) -> Tensor:
        low = self.low_resolution(frames)  # [N, K, C, h, w]
        batch, _, _, height, width = low.shape
        code = F.relu(self.code(predicted))[:, :, None, None].expand(-1, -1, height, width)
        stacked = low.reshape(batch, -1, height, width)
        delta = self.net(torch.cat([stacked, code], dim=1)) + self.linear(stacked)
        return torch.clamp(low[:, -1] + delta, 0.0, 1.0)
