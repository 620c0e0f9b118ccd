"""The training objective: the weighted sum of the three tasks, with every part reported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from trainer.config import LossConfig, ModelConfig
from trainer.losses.infonce import info_nce
from trainer.losses.order import order_loss
from trainer.losses.pixel import pixel_loss, psnr
from trainer.model.streamssl_model import ModelOutputs


@dataclass
class LossParts:
    """``total`` carries the graph; the rest are detached scalars for logging."""

    total: Tensor
    future: Tensor
    order: Tensor
    pixel: Tensor
    future_top1: Tensor
    order_accuracy: Tensor
    pixel_psnr_db: Tensor
    copy_last_psnr_db: Tensor

    def scalars(self) -> dict[str, float]:
        return {
            "total": float(self.total.detach()),
            "future": float(self.future),
            "order": float(self.order),
            "pixel": float(self.pixel),
            "future_top1": float(self.future_top1),
            "order_accuracy": float(self.order_accuracy),
            "pixel_psnr_db": float(self.pixel_psnr_db),
            "copy_last_psnr_db": float(self.copy_last_psnr_db),
        }


def compute_losses(
    outputs: ModelOutputs,
    order_labels: Tensor,
    model: ModelConfig,
    loss: LossConfig,
    gather: Callable[[Tensor], tuple[Tensor, int]] | None = None,
) -> LossParts:
    """Future InfoNCE (targets: embeddings of frames K..K+M-1), order cross-entropy, pixel L1(+SSIM).

    ``gather`` (DDP with ``loss.global_negatives``) makes every rank's targets negatives, see :func:`info_nce`.
    """
    k, m = model.context_frames, model.future_frames
    target = outputs.embeddings[:, k : k + m]
    future, future_top1 = info_nce(outputs.predicted, target, loss.temperature, gather)
    order, order_accuracy = order_loss(outputs.order_logits, order_labels)
    pixel = pixel_loss(outputs.next_frame, outputs.next_frame_target, loss.ssim_weight, loss.pixel_norm)
    total = loss.future_weight * future + loss.order_weight * order + loss.pixel_weight * pixel
    return LossParts(
        total=total,
        future=future.detach(),
        order=order.detach(),
        pixel=pixel.detach(),
        future_top1=future_top1.detach(),
        order_accuracy=order_accuracy.detach(),
        pixel_psnr_db=psnr(outputs.next_frame.detach(), outputs.next_frame_target).mean(),
        copy_last_psnr_db=psnr(outputs.last_frame, outputs.next_frame_target).mean(),
    )
