"""The whole self-supervised model: normaliser, frame encoder, future predictor, order head, pixel head.

One ``forward`` computes every task's output, so DistributedDataParallel sees each parameter used in the one call
it wraps. Losses are computed outside (:mod:`trainer.losses`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer.config import ORDER_FRAMES, ModelConfig
from trainer.model.frame_encoder import FrameEncoder, PixelNormaliser, embed
from trainer.model.heads import PERMUTATIONS, FuturePredictor, OrderHead, PixelHead


@dataclass
class ModelOutputs:
    """Shapes: N windows, T frames, K context, M future, D embedding, C channels, h×w pixel-head resolution.

    Attributes:
        features: ``[N, T, D]`` raw frame-encoder features.
        embeddings: ``[N, T, D]`` L2-normalised frame embeddings.
        predicted: ``[N, M, D]`` predicted embeddings of frames K..K+M-1 (normalised).
        order_logits: ``[N, 24]``.
        next_frame: ``[N, C, h, w]`` predicted frame K in [0, 1].
        next_frame_target: ``[N, C, h, w]`` frame K, block-averaged, in [0, 1].
        last_frame: ``[N, C, h, w]`` frame K-1 (the copy-last baseline), block-averaged.
    """

    features: Tensor
    embeddings: Tensor
    predicted: Tensor
    order_logits: Tensor
    next_frame: Tensor
    next_frame_target: Tensor
    last_frame: Tensor


class StreamSSLModel(nn.Module):
    """All trained parts, built from a :class:`~trainer.config.ModelConfig`."""

    permutations: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.normaliser = PixelNormaliser(config.mean, config.std)
        self.encoder = FrameEncoder.from_config(config)
        self.predictor = FuturePredictor(
            dim, config.context_frames, config.future_frames, config.context_layers, config.context_heads
        )
        self.order_head = OrderHead(dim)
        scale = (config.frame_height // config.pixel_height, config.frame_width // config.pixel_width)
        self.pixel_head = PixelHead(config.channels, config.context_frames, dim, scale)
        self.register_buffer("permutations", torch.tensor(PERMUTATIONS), persistent=False)

    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 ``[N, T, H, W, C]`` → (features ``[N, T, D]``, embeddings ``[N, T, D]``, pixels ``[N, T, C, H, W]``
        in [0, 1])."""
        batch, length = frames.shape[:2]
        unit, normalised = self.normaliser(frames)
        features = self.encoder(normalised.flatten(0, 1)).reshape(batch, length, -1)
        return features, embed(features), unit

    def forward(self, frames: Tensor, order_offsets: Tensor, order_permutations: Tensor) -> ModelOutputs:
        """Run every task on a batch.

        Args:
            frames: uint8 ``[N, T, H, W, C]``.
            order_offsets: long ``[N]``: first of the 4 order-task frames (``offset + i·stride``).
            order_permutations: long ``[N]``: index into :data:`PERMUTATIONS` used to shuffle them.
        """
        config = self.config
        k = config.context_frames
        features, embeddings, unit = self.encode(frames)
        predicted = self.predictor(embeddings[:, :k])

        steps = torch.arange(ORDER_FRAMES, device=frames.device) * config.order_stride
        shuffled = order_offsets[:, None] + steps[self.permutations[order_permutations]]  # [N, 4] frame indices
        chosen = torch.gather(features, 1, shuffled[:, :, None].expand(-1, -1, features.shape[-1]))
        order_logits = self.order_head(chosen)

        next_frame = self.pixel_head(unit[:, :k], predicted[:, 0])
        targets = self.pixel_head.low_resolution(unit[:, k - 1 : k + 1])
        return ModelOutputs(
            features=features,
            embeddings=embeddings,
            predicted=predicted,
            order_logits=order_logits,
            next_frame=next_frame,
            next_frame_target=targets[:, 1],
            last_frame=targets[:, 0],
        )
