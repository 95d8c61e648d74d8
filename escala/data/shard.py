"""Rank-aware batches that cover an epoch exactly once and keep every rank in lock step.

Each epoch draws one permutation of the training set from ``(seed, epoch)``, the same on every rank.
Global step ``k`` takes the slice ``perm[k*G:(k+1)*G]`` with ``G = batch_size * world`` and rank ``r``
takes every ``world``-th element of it starting at ``r``. Every sample appears in exactly one rank's
batch per epoch, and all ranks take the same number of steps (a requirement of collectives).

The last global batch may be short and split unevenly. Each sample carries a weight (1 for real
samples, 0 for a filler sample given to a rank that would otherwise be empty), and the loss is

    loss_r = (world / n_global) * sum_{i in batch_r} w_i * l_i

so that averaging the ranks' gradients (what all-reduce does) yields exactly the gradient of the mean
loss over the global batch, whatever the split. With one worker and batch ``G`` the same formula is the
plain mean, which is why N workers with batch B/N reproduce one worker with batch B.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class ShardBatch:
    indices: torch.Tensor  # int64 sample indices for this rank
    weights: torch.Tensor  # float32, 1 for real samples, 0 for a filler
    global_count: int  # real samples in the global batch, over all ranks
    real: int  # real samples in this rank's batch

    @property
    def has_filler(self) -> bool:
        return self.real < len(self.indices)


class ShardedBatches:
    """The batches of one rank, epoch by epoch."""

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0):
        if num_samples < 1:
            raise ValueError("a data set needs at least one sample")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of {world}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world = world
        self.seed = seed

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.global_batch)

    def permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[ShardBatch]:
        """Batches of ``epoch`` from step ``start_step`` on (for resuming mid-epoch)."""
        perm = self.permutation(epoch)
        g = self.global_batch
        for step in range(start_step, self.steps_per_epoch):
            chunk = perm[step * g : (step + 1) * g]
            mine = chunk[self.rank :: self.world]
            if len(mine) == 0:
                yield ShardBatch(chunk[:1], torch.zeros(1), len(chunk), 0)
            else:
                yield ShardBatch(mine, torch.ones(len(mine)), len(chunk), len(mine))


def eval_shard(num_samples: int, rank: int, world: int) -> torch.Tensor:
    """Indices of the validation samples this rank evaluates (together: each sample exactly once)."""
    return torch.arange(rank, num_samples, world)
