"""InfoNCE for future prediction, as in CPC (van den Oord et al., 2018) and DPC (Han et al., ICCVW 2019).

Each predicted embedding must pick out its own target among every target in the batch: the other time steps of
the same window and every step of the other windows are its negatives. With negatives a constant embedding scores
chance, so the objective cannot collapse.

Example::

    loss, top1 = info_nce(predicted, target, temperature=0.1)  # both [N, M, D], L2-normalised
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor


def info_nce(
    predicted: Tensor, target: Tensor, temperature: float, gather: Callable[[Tensor], tuple[Tensor, int]] | None = None
) -> tuple[Tensor, Tensor]:
    """Cross-entropy of each prediction against all ``N·M`` targets, and the top-1 accuracy.

    Args:
        predicted: ``[N, M, D]`` L2-normalised predictions.
        target: ``[N, M, D]`` L2-normalised embeddings of the frames they predict.
        temperature: softmax temperature τ; logits are cosine similarities / τ.
        gather: with DDP, :func:`trainer.distributed.gather_rows`: every rank's targets become candidates (more
            negatives for the same batch per rank); this rank's targets start at the returned offset.

    Returns:
        (mean loss, top-1 accuracy among the candidates; chance is ``1 / candidates``).
    """
    if predicted.shape != target.shape or predicted.ndim != 3:
        raise ValueError(f"predicted and target must both be [N, M, D], got {predicted.shape} and {target.shape}")
    queries = predicted.reshape(-1, predicted.shape[-1])
    keys = target.reshape(-1, target.shape[-1])
    offset = 0
    if gather is not None:
        keys, offset = gather(keys.float())
    logits = queries.float() @ keys.float().T / temperature
    labels = torch.arange(queries.shape[0], device=logits.device) + offset
    loss = F.cross_entropy(logits, labels)
    top1 = (logits.argmax(dim=1) == labels).float().mean()
    return loss, top1
