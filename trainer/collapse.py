"""Collapse monitors for embeddings: per-dimension standard deviation and effective rank.

* Std per dimension of L2-normalised embeddings (as in SimSiam, Chen & He 2021, and VICReg, Bardes et al. 2022):
  a collapsed encoder gives ~0; embeddings spread evenly over the sphere give ``1/sqrt(D)``.
* Effective rank (Roy & Vetterli, 2007; used for SSL by RankMe, Garrido et al. 2023): ``exp`` of the entropy of the
  normalised singular values of the centred embedding matrix; 1 for a collapse to a line, ``D`` at best.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CollapseStats:
    embedding_std: float  # mean over dimensions
    embedding_std_ideal: float  # 1/sqrt(D)
    effective_rank: float


def collapse_stats(embeddings: Tensor) -> CollapseStats:
    """``embeddings [..., D]`` (L2-normalised) → stats over all rows."""
    rows = embeddings.detach().float().reshape(-1, embeddings.shape[-1])
    dim = rows.shape[1]
    std = rows.std(dim=0).mean() if rows.shape[0] > 1 else torch.zeros(())
    centred = rows - rows.mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    total = singular.sum()
    if total <= 0:
        rank = 1.0
    else:
        p = singular / total
        p = p[p > 0]
        rank = float(torch.exp(-(p * p.log()).sum()))
    return CollapseStats(float(std), dim**-0.5, rank)
