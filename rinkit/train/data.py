"""Deterministic, resumable batching.

The example at global position p (counting examples from step 0) is perm_e[p mod n] with
e = p div n and perm_e a permutation seeded by (seed, e). A run that resumes at step s therefore
sees exactly the batches an uninterrupted run would, with no sampler state to save; with several
processes, rank r takes its slice of each global batch."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1, total_steps: int | None = None):
        if n <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.b, self.seed, self.start = n, batch_size, seed, start_step
        self.rank, self.world, self.total = rank, world_size, total_steps
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch cached
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        first = (step * self.world + self.rank) * self.b
        out = []
        for p in range(first, first + self.b):
            out.append(int(self._perm(p // self.n)[p % self.n]))
        return out

    def __iter__(self):
        step = self.start
        while self.total is None or step < self.total:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        return (self.total - self.start) if self.total is not None else 2 ** 62
