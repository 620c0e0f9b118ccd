"""Next-frame pixel loss and quality: L1 plus optional SSIM (Wang et al., 2004), and PSNR.

The pixel head predicts frame K+1 at low resolution; Liu et al. (CVPR 2018) score anomalies by the PSNR of such
predictions. Its reference here is the copy-last-frame baseline: a useful head must beat it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

_C1 = 0.01**2
_C2 = 0.03**2
_L2_SCALE = 100.0


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel SSIM with 3×3 mean filters (as in monodepth2), ``[N, C, h, w]`` in [0, 1] → same shape."""
    mu_x = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    mu_y = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
    sigma_x = F.avg_pool2d(x * x, 3, 1, 1, count_include_pad=False) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1, 1, count_include_pad=False) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1, 1, count_include_pad=False) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * sigma_xy + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (sigma_x + sigma_y + _C2)
    return numerator / denominator


def pixel_loss(predicted: Tensor, target: Tensor, ssim_weight: float = 0.0, norm: str = "l1") -> Tensor:
    """``(1 - w)·L1 + w·(1 - SSIM)/2``, averaged; ``[N, C, h, w]`` in [0, 1].

    ``norm="l2"`` uses the mean squared error (scaled by 100, to the magnitude of L1 on these images) instead of L1:
    PSNR is a squared error, and L1's median regression keeps a head near the copy-last baseline for longer.
    """
    predicted, target = predicted.float(), target.float()
    error = predicted - target
    distance = error.abs().mean() if norm == "l1" else error.pow(2).mean() * _L2_SCALE
    loss = (1 - ssim_weight) * distance
    if ssim_weight > 0:
        loss = loss + ssim_weight * ((1 - ssim(predicted, target)) / 2).clamp(0, 1).mean()
    return loss


def psnr(predicted: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """PSNR in dB of each sample, ``[N, ...]`` in [0, 1] → ``[N]``."""
    error = (predicted.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / (error + eps))
