"""InfoNCE with every rank's targets as negatives (DDP): two gloo processes must get the loss, top-1 and query
gradients of one process holding the whole batch, also when the ranks hold different numbers of windows."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F  # noqa: N812

from trainer.distributed import gather_rows
from trainer.losses.infonce import info_nce

TEMPERATURE = 0.1
SPLIT = (3, 2)  # windows on rank 0 and rank 1


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    predicted = F.normalize(torch.randn(sum(SPLIT), 3, 16, generator=generator), dim=-1)
    target = F.normalize(predicted + 0.8 * torch.randn(sum(SPLIT), 3, 16, generator=generator), dim=-1)
    return predicted, target


def _rank(rank: int, port: int, out: str) -> None:
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        predicted, target = batch()
        start = sum(SPLIT[:rank])
        local_predicted = predicted[start : start + SPLIT[rank]].clone().requires_grad_(True)
        local_target = target[start : start + SPLIT[rank]].clone().requires_grad_(True)
        loss, top1 = info_nce(local_predicted, local_target, TEMPERATURE, gather_rows)
        loss.backward()
        assert local_target.grad is not None
        torch.save(
            {"loss": loss.detach(), "top1": top1, "grad": local_predicted.grad, "target_grad": local_target.grad},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        torch_dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_gathered_negatives_equal_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]

    predicted, target = batch()
    whole_predicted = predicted.clone().requires_grad_(True)
    whole_loss, whole_top1 = info_nce(whole_predicted, target, TEMPERATURE)
    whole_loss.backward()
    assert whole_predicted.grad is not None

    # The whole batch's mean over 15 queries is the rows-weighted mean of the ranks' means.
    weights = [count / sum(SPLIT) for count in SPLIT]
    torch.testing.assert_close(sum(w * r["loss"] for w, r in zip(weights, ranks, strict=True)), whole_loss.detach())
    torch.testing.assert_close(sum(w * r["top1"] for w, r in zip(weights, ranks, strict=True)), whole_top1)
    # Each query's gradient is that of the whole batch (scaled by the rank's share of the mean).
    grads = torch.cat([r["grad"] * w for w, r in zip(weights, ranks, strict=True)])
    torch.testing.assert_close(grads, whole_predicted.grad)
    # Local-only negatives would give a different loss: the test can tell the two apart.
    local_loss, _ = info_nce(predicted[: SPLIT[0]], target[: SPLIT[0]], TEMPERATURE)
    assert not torch.allclose(local_loss, ranks[0]["loss"])


def test_without_a_process_group_gather_is_the_identity() -> None:
    rows = torch.randn(4, 8)
    gathered, offset = gather_rows(rows)
    assert gathered is rows
    assert offset == 0
