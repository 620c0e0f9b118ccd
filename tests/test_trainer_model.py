"""The model and its losses: shapes, the order task's frame bookkeeping, InfoNCE against a reference, the pixel
head's copy-last start, the collapse monitors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import ValidationError
from torch import Tensor, nn

from trainer.collapse import collapse_stats
from trainer.config import LossConfig, ModelConfig
from trainer.losses.infonce import info_nce
from trainer.losses.order import ORDER_CLASSES, sample_order_task
from trainer.losses.pixel import pixel_loss, psnr, ssim
from trainer.losses.total import compute_losses
from trainer.model import PERMUTATIONS, StreamSSLModel

torch.set_num_threads(2)
CONFIG = ModelConfig(encoder_width=8, embedding_dim=32, context_heads=2)


def frames(batch: int = 3, config: ModelConfig = CONFIG) -> Tensor:
    shape = (batch, config.window, config.frame_height, config.frame_width, config.channels)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_forward_shapes_and_losses() -> None:
    model = StreamSSLModel(CONFIG)
    batch = frames()
    out = model(batch, torch.tensor([0, 1, 0]), torch.tensor([0, 5, 23]))
    k, m, d = CONFIG.context_frames, CONFIG.future_frames, CONFIG.embedding_dim
    assert out.embeddings.shape == (3, CONFIG.window, d)
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(3, CONFIG.window))
    assert out.predicted.shape == (3, m, d)
    assert out.order_logits.shape == (3, ORDER_CLASSES)
    assert out.next_frame.shape == (3, 3, CONFIG.pixel_height, CONFIG.pixel_width)
    parts = compute_losses(out, torch.tensor([0, 5, 23]), CONFIG, LossConfig())
    assert parts.total.requires_grad
    parts.total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), "a parameter gets no gradient"
    # The InfoNCE of an untrained model is near log(candidates), the order loss near log(24).
    assert abs(float(parts.future) - math.log(3 * m)) < 1.0
    assert abs(float(parts.order) - math.log(24)) < 1.0
    del k


def test_order_task_shows_the_frames_the_permutation_names() -> None:
    model = StreamSSLModel(CONFIG)
    seen: list[Tensor] = []

    class Capture(nn.Module):
        def forward(self, features: Tensor) -> Tensor:
            seen.append(features)
            return torch.zeros(features.shape[0], ORDER_CLASSES)

    model.order_head = Capture()  # type: ignore[assignment]
    batch = frames(2)
    offsets, labels = torch.tensor([0, 1]), torch.tensor([7, 16])
    out = model(batch, offsets, labels)
    stride = CONFIG.order_stride
    for row in range(2):
        expected = [int(offsets[row]) + stride * index for index in PERMUTATIONS[int(labels[row])]]
        torch.testing.assert_close(seen[0][row], out.features[row, expected])


def test_order_sampling_covers_every_class_and_valid_offsets() -> None:
    rng = __import__("numpy").random.default_rng(0)
    draws = [sample_order_task(rng, window=8, stride=2) for _ in range(2000)]
    assert {label for _, label in draws} == set(range(24))
    assert {offset for offset, _ in draws} == {0, 1}  # 4 frames 2 apart span 7 of 8 frames


def reference_info_nce(predicted: Tensor, target: Tensor, temperature: float) -> Tensor:
    """CPC's loss written naively: for each prediction, -log softmax of its own target among all targets."""
    queries, keys = predicted.reshape(-1, predicted.shape[-1]), target.reshape(-1, target.shape[-1])
    total = torch.zeros(())
    for index, query in enumerate(queries):
        scores = torch.stack([torch.dot(query, key) / temperature for key in keys])
        total = total - (scores[index] - torch.logsumexp(scores, dim=0))
    return total / len(queries)


def test_info_nce_matches_the_reference_and_cannot_collapse() -> None:
    generator = torch.Generator().manual_seed(1)
    predicted = F.normalize(torch.randn(4, 3, 16, generator=generator), dim=-1)
    target = F.normalize(torch.randn(4, 3, 16, generator=generator), dim=-1)
    loss, _ = info_nce(predicted, target, 0.1)
    torch.testing.assert_close(loss, reference_info_nce(predicted, target, 0.1))
    # Perfect predictions: top-1 is 1.
    _, top1 = info_nce(target, target, 0.1)
    assert float(top1) == 1.0
    # A collapsed encoder (every embedding equal) scores exactly log(candidates): no reward for collapse.
    constant = F.normalize(torch.ones(4, 3, 16), dim=-1)
    collapsed, _ = info_nce(constant, constant, 0.1)
    assert float(collapsed) == pytest.approx(math.log(12), rel=1e-5)


def test_pixel_head_starts_as_the_copy_last_baseline() -> None:
    model = StreamSSLModel(CONFIG)
    out = model(frames(), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(out.next_frame, out.last_frame)


def test_pixel_losses() -> None:
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(ssim(x, x), torch.ones_like(x))
    assert float(pixel_loss(x, x, ssim_weight=0.5)) == pytest.approx(0.0, abs=1e-6)
    assert float(pixel_loss(x, x + 0.1)) == pytest.approx(0.1, rel=1e-4)
    assert float(pixel_loss(x, x + 0.1, norm="l2")) == pytest.approx(1.0, rel=1e-4)  # 0.01 × 100
    # An error of 0.1 everywhere is 20 dB.
    torch.testing.assert_close(psnr(x, x + 0.1), torch.full((2,), 20.0))


def test_collapse_monitors() -> None:
    generator = torch.Generator().manual_seed(2)
    spread = F.normalize(torch.randn(256, 32, generator=generator), dim=-1)
    # Complete collapse: every embedding (nearly) the same point. The std catches it.
    point = F.normalize(torch.ones(64, 32) + 1e-4 * torch.randn(64, 32, generator=generator), dim=-1)
    # Dimensional collapse: embeddings spread, but in a 2-D subspace. The effective rank catches it.
    plane = F.normalize(torch.randn(256, 2, generator=generator) @ torch.randn(2, 32, generator=generator), dim=-1)
    good, collapsed, flat = collapse_stats(spread), collapse_stats(point), collapse_stats(plane)
    assert good.embedding_std == pytest.approx(32**-0.5, rel=0.1)
    assert good.effective_rank > 25
    assert collapsed.embedding_std < 1e-3
    assert flat.effective_rank < 3
    assert flat.embedding_std > 0.05


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"context_frames": 6, "future_frames": 3}, "must fit in the window"),
        ({"frame_height": 96}, "multiples of"),
        ({"embedding_dim": 30, "context_heads": 4}, "divisible"),
        ({"pixel_height": 24}, "must divide"),
    ],
)
def test_model_config_refuses_inconsistent_architectures(change: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**change)
