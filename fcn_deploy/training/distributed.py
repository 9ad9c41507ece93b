"""Multi-process training under ``torchrun``: process group, sampling, reductions.

``torchrun --nproc_per_node N -m fcn_deploy.cli train ...`` starts N processes with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in their environment. Each holds a replica of the
model wrapped in ``DistributedDataParallel`` (gradients averaged every step; gloo on CPU,
nccl on GPU), reads its own shard of every epoch's permutation, and adds its confusion
matrix to the others' before scores are computed. Only rank 0 writes files.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (a no-op for a single process)."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    log.debug("rank %d of %d (%s)", info.rank, info.world_size, dist.get_backend())
    return info


def shutdown_distributed(wait_for_all: bool = True) -> None:
    """Leave the process group. After a normal finish the ranks leave together: one that tears
    gloo down while another is still finishing (rank 0 writes the last checkpoint) can abort
    at exit. After an error nobody waits, since the other ranks may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(array: np.ndarray, device: torch.device) -> np.ndarray:
    """Element-wise sum of ``array`` over all processes (identity for one process).

    Confusion matrices are int64 counts, so the sum is exact.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return array
    t = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def all_reduce_mean(value: float, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class EpochSampler(torch.utils.data.Sampler):
    """This process's share of one epoch's order, resumable part-way through.

    The order is a permutation drawn from ``(seed, epoch)`` alone (like
    ``DistributedSampler``: padded to a multiple of the world size, then strided by rank),
    so it never depends on RNG state the run consumed. :meth:`set_epoch` picks the epoch and
    how many of this process's samples to skip: a run resumed after ``k`` batches sees exactly
    the samples an uninterrupted one would.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0
        self.per_rank = -(-size // world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def order(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            indices = torch.randperm(self.size, generator=g).tolist()
        else:
            indices = list(range(self.size))
        total = self.per_rank * self.world_size
        indices += indices[: total - len(indices)]
        return indices[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def shard(n: int, info: Optional[DistInfo]) -> range:
    """Indices ``rank, rank + world, ...`` of ``n`` items: one process's part of a validation pass."""
    if info is None:
        return range(n)
    return range(info.rank, n, info.world_size)
