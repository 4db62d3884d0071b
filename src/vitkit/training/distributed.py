"""One process or many: the process group from torchrun's environment, sharded batches, reductions.

``torchrun --nproc_per_node=N -m vitkit train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; ``Dist.from_env``
joins the group (nccl on GPUs, gloo on CPU). Batches are drawn per *global* step from one seeded
permutation and split across ranks, so N processes see exactly the samples one process would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..runtime import pick_device

logger = logging.getLogger(__name__)


@dataclass
class Dist:
    """This process's place in the run: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str | None = None) -> Dist:
        """Join the process group torchrun describes, or run alone when WORLD_SIZE is unset or 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        dev = pick_device(device, local_rank)
        if world == 1:
            return cls(device=dev)
        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend=backend)
            logger.info("joined %s process group: rank %d of %d on %s", backend, rank, world, dev)
        if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # processes share the cores: a full thread pool each would oversubscribe them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
        return cls(rank=rank, world_size=world, local_rank=local_rank, device=dev, initialized=True)

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks (a no-op alone)."""
        if self.initialized:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized = False


class GlobalBatchSampler:
    """Yield this rank's share of each global batch of one epoch, as ``(epoch, index)`` keys.

    The epoch's order is a permutation seeded by (seed, epoch); global batch ``b`` is positions
    ``b * B .. (b + 1) * B`` of it and rank ``r`` takes every ``world``-th sample from ``r``. The last
    incomplete global batch is dropped so every step has the same size on every rank.
    ``start_batch`` skips batches already trained (resuming mid-epoch).
    """

    def __init__(self, num_samples: int, *, global_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, epoch: int = 0, start_batch: int = 0) -> None:
        if global_batch % world_size:
            raise ConfigError(f"The batch size {global_batch} does not divide among {world_size} processes; "
                              f"use a multiple of {world_size}.")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(self.num_samples // self.global_batch - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=gen).tolist()
        for b in range(self.start_batch, self.num_samples // self.global_batch):
            batch = order[b * self.global_batch:(b + 1) * self.global_batch]
            yield [(self.epoch, i) for i in batch[self.rank::self.world_size]]


class ShardBatchSampler:
    """Every sample once, in order, split across ranks (evaluation): rank r takes indices r, r + world, ..."""

    def __init__(self, num_samples: int, *, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start:start + self.batch_size]
