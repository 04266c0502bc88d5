"""Deterministic data order: every sample's position and random augmentation follow from (seed, epoch, index).

This is what makes ``--resume`` exact: a run restarted mid-epoch sees the same remaining samples with the same
crops and flips, whatever the number of loader workers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch * 998_244_353 + position * 7_919) % (2**63)


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)`` in a permutation seeded by (seed, epoch), starting at ``start``.

    With ``world > 1`` each rank takes every ``world``-th sample of the same permutation, padded (by repeating its
    start) to a multiple of ``world`` so that every rank runs the same number of steps.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.shuffle, self.rank, self.world = size, seed, shuffle, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its ``start``-th sample (of this rank)."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.size))
        else:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0))
            order = torch.randperm(self.size, generator=g).tolist()
        padded = math.ceil(len(order) / self.world) * self.world
        order = [order[i % len(order)] for i in range(padded)]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        for pos in range(self.start, len(order)):
            yield order[pos], sample_seed(self.seed, self.epoch, pos * self.world + self.rank + 1)

    def __len__(self) -> int:
        return max(0, len(self._order()) - self.start)


class SeededDataset(Dataset):
    """Runs the wrapped dataset's ``__getitem__`` with ``random``, numpy and torch seeded for that sample,
    restoring the caller's RNG states afterwards."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.random.default_generator.manual_seed(seed)  # not the CUDA generators (dropout, penalties)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
