"""The temporal context network: a small pre-norm transformer (Vaswani et al., 2017) over frame embeddings.

``[N, L, D]`` tokens with learned positional embeddings → ``[N, L, D]``. Attention is written out with matrix
products and a softmax, so the ONNX export is plain ``MatMul``/``Softmax`` on every runtime.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        head_dim = dim // self.heads
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]  # [N, heads, L, head_dim]
        weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)
        mixed = (weights @ value).transpose(1, 2).reshape(batch, length, dim)
        out: Tensor = self.out(mixed)
        return out


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        out: Tensor = x + self.mlp(self.norm2(x))
        return out


class TemporalContext(nn.Module):
    """Transformer over ``[N, L, D]`` tokens, ``L ≤ max_length``; adds a learned embedding per position.

    Args:
        dim: ``D``.
        layers: transformer blocks.
        heads: attention heads (``D`` must be divisible by them).
        max_length: the longest sequence (context + future positions).
    """

    def __init__(self, dim: int, layers: int, heads: int, max_length: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(max_length, dim))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        out: Tensor = self.norm(self.blocks(tokens + self.position[:length]))
        return out
