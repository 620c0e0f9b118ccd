"""Multi-process training with torchrun (DistributedDataParallel): process group set-up and the few collectives
the loop needs. Without ``WORLD_SIZE`` > 1 in the environment everything here is a single-process no-op.

Every rank joins the same consumer group, so the bus splits the topic's partitions among them; rank 0 writes
checkpoints (with every rank's data state gathered), evaluates, exports and runs the gate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist

# Rank 0 exports and gates while the others wait in a barrier: allow that much.
_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_rank() -> int:
    """This process's rank on its machine, as torchrun sets ``LOCAL_RANK`` (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device_type: str) -> Distributed:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) if there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank = int(os.environ["RANK"])
    if not torch_dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return Distributed(rank, world_size, local_rank())


def any_true(flags: list[bool], dist: Distributed, device: torch.device) -> list[bool]:
    """Element-wise OR of ``flags`` over ranks (so every rank takes the same decision)."""
    if not dist.enabled:
        return flags
    tensor = torch.tensor([int(flag) for flag in flags], dtype=torch.int32, device=device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return [bool(value) for value in tensor.tolist()]


def gather_objects(value: Any, dist: Distributed) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not dist.enabled:
        return [value]
    gathered: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, value)
    return gathered


def gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's ``[n_r, ...]`` rows concatenated in rank order, and where this rank's rows start.

    This rank's rows keep their autograd graph; the others arrive without one (as in MoCo's and CLIP's gathered
    negatives). Ranks may hold different counts (a window that failed to decode): rows are padded for the exchange.
    Without a process group it returns ``(local, 0)``.
    """
    if not torch_dist.is_available() or not torch_dist.is_initialized() or torch_dist.get_world_size() == 1:
        return local, 0
    world, rank = torch_dist.get_world_size(), torch_dist.get_rank()
    count = torch.tensor([local.shape[0]], dtype=torch.int64, device=local.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    torch_dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local.detach()
    gathered = [torch.empty_like(padded) for _ in range(world)]
    torch_dist.all_gather(gathered, padded)
    parts = [part[:size] for part, size in zip(gathered, sizes, strict=True)]
    parts[rank] = local
    return torch.cat(parts), sum(sizes[:rank])


def barrier(dist: Distributed) -> None:
    if dist.enabled:
        torch_dist.barrier()


def shutdown(dist: Distributed) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
