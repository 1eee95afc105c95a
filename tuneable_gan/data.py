"""Loading a split (with its fraction subset) and a seeded sampler whose position is part of
the checkpoint.

Every dataset loads fully into memory as one tensor: the data-efficient regime is small by
definition, and indexing a tensor is the fastest possible loader on a 2-core machine. The loaders
and their registry live in ``tuneable_gan.datasets``.
"""

from __future__ import annotations

import numpy as np
import torch

from tuneable_gan.config import DataConfig
from tuneable_gan.datasets import DATASETS, RealData, resize_images, to_uint8

__all__ = ["DATASETS", "RealData", "Sampler", "fraction_indices", "load_data", "resize_images",
           "to_uint8"]

def fraction_indices(n: int, fraction: float, seed: int, how: str = "random") -> np.ndarray:
    """Indices of a ``fraction`` subset of ``n`` items, k = max(1, int(n * fraction)).

    ``random``: a seeded uniform choice without replacement, the BigGAN-CIFAR reference's recipe
    (``np.random.seed(s); np.random.choice(N, k, replace=False)``), so at seed 0 the subset of a
    CIFAR archive matches the paper's. ``first``: the first k items, as the lottery-ticket SNGAN
    code's ``ImageDatasetLess`` (``Subset(dataset, np.arange(int(len * ratio)))``); no seed.
    """
    if fraction >= 1.0:
        return np.arange(n)
    k = max(1, int(n * fraction))
    if how == "first":
        return np.arange(k)
    return np.random.RandomState(seed).choice(n, k, replace=False)


def load_data(cfg: DataConfig, split: str = "train") -> RealData:
    """The ``split`` ('train' or 'test') of ``cfg.name``; the train split is cut to ``fraction``."""
    full = DATASETS.get(cfg.name)(cfg, split)
    # All of it needs no gather: indexing with arange(n) would copy every image (600 MB for CIFAR).
    if split != "train" or cfg.fraction >= 1.0:
        return full
    return full.subset(fraction_indices(len(full), cfg.fraction, cfg.subset_seed, cfg.subset))


class Sampler:
    """Seeded epochs of shuffled indices; its whole state is two integers.

    Each epoch's permutation is a pure function of (seed, epoch), so the checkpoint stores
    only where we are and a resumed run draws exactly the batches a straight run would.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        assert n > 0 and batch_size > 0
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next(self) -> torch.Tensor:
        """The next ``batch_size`` indices; a batch running past an epoch continues in the next."""
        parts, need = [], self.batch_size
        while need > 0:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            take = min(need, self.n - self.pos)
            parts.append(self._perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
        return torch.cat(parts)

    def state_dict(self) -> dict[str, int]:
        """Position: epoch and offset within it."""
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Jump to a saved position."""
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation(self.epoch)

