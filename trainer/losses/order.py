"""Temporal order prediction, VCOP-style (Xu et al., CVPR 2019; cf. OPN, Lee et al., ICCV 2017).

Four frames of a window, ``order_stride`` apart, are shown in one of the 24 orders of
:data:`trainer.model.PERMUTATIONS`; the head classifies which. Chance is 1/24. The task is sampled per window
when a batch is planned (:func:`sample_order_task`) so that the data path, not the model, owns the randomness.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from trainer.config import ORDER_FRAMES
from trainer.model.heads import PERMUTATIONS

ORDER_CLASSES = len(PERMUTATIONS)


def order_span(stride: int) -> int:
    """Frames from the first to the last of the four, inclusive."""
    return (ORDER_FRAMES - 1) * stride + 1


def sample_order_task(rng: np.random.Generator, window: int, stride: int) -> tuple[int, int]:
    """(first frame, permutation class) for one window of ``window`` frames."""
    offset = int(rng.integers(0, window - order_span(stride) + 1))
    return offset, int(rng.integers(0, ORDER_CLASSES))


def order_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy over the 24 classes, and accuracy. ``logits [N, 24]``, ``labels [N]`` long."""
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, accuracy

