"""Datasets, fraction subsets, and a seeded sampler whose position is part of the checkpoint.

Every dataset loads fully into memory as one tensor: the data-efficient regime is small by
definition, and indexing a tensor is the fastest possible loader on a 2-core machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tuneable_gan.config import DataConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.registry import Registry

# Fixed so that every run, whatever its seeds, sees the same train/test split of a dataset.
SPLIT_SEED = 0


@dataclass(frozen=True)
class RealData:
    """A split of a dataset in memory: images in [-1, 1] (N, C, H, W), or points (N, 1)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape."""
        return tuple(self.images.shape[1:])

    def subset(self, idx: np.ndarray | torch.Tensor) -> RealData:
        """The rows ``idx``, in that order."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return RealData(self.name, self.images[idx], self.labels[idx], self.num_classes)


Loader = Callable[[DataConfig, str], RealData]
DATASETS: Registry[Loader] = Registry("dataset")


def _split_indices(n: int, test_share: float) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_test = int(round(n * test_share))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def resize_images(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize (N, C, h, w) float images to a square ``resolution`` (antialiased when shrinking)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    shrink = resolution < max(x.shape[-2:])
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=shrink)


@DATASETS.register("toy2pt")
def _toy2pt(cfg: DataConfig, split: str) -> RealData:
    """The two real points 0 and 4 of the DigGAN paper's section 3.3 (train and test alike)."""
    pts = torch.tensor([[0.0], [4.0]])
    return RealData("toy2pt", pts, torch.zeros(2, dtype=torch.long), 0)


@DATASETS.register("digits")
def _digits(cfg: DataConfig, split: str) -> RealData:
    """scikit-learn's bundled 1,797 real 8x8 handwritten digits, one channel, 10 classes.

    A fixed 80/20 train/test split (seeded permutation, independent of every run seed).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = resize_images(x, cfg.resolution).clamp(0.0, 1.0) * 2.0 - 1.0
    y = torch.tensor(d.target, dtype=torch.long)
    train, test = _split_indices(len(x), 0.2)
    idx = train if split == "train" else test
    return RealData("digits", x[idx].contiguous(), y[idx].contiguous(), 10)


def fraction_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of a ``fraction`` subset: a seeded uniform choice without replacement.

    Same recipe as the BigGAN-CIFAR reference (``np.random.seed(s); np.random.choice(N, k,
    replace=False)``), so at seed 0 the subset of a CIFAR archive matches the paper's.
    """
    if fraction >= 1.0:
        return np.arange(n)
    k = max(1, int(n * fraction))
    return np.random.RandomState(seed).choice(n, k, replace=False)


def load_data(cfg: DataConfig, split: str = "train") -> RealData:
    """The ``split`` ('train' or 'test') of ``cfg.name``; the train split is cut to ``fraction``."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"data.name={cfg.name} is not available yet; available: "
                          f"{', '.join(DATASETS.names())}")
    full = DATASETS.get(cfg.name)(cfg, split)
    # All of it needs no gather: indexing with arange(n) would copy every image (600 MB for CIFAR).
    if split != "train" or cfg.fraction >= 1.0:
        return full
    return full.subset(fraction_indices(len(full), cfg.fraction, cfg.subset_seed))


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


# Imported last so the loaders there find DATASETS defined; importing data registers every dataset.
import tuneable_gan.datasets  # noqa: E402, F401
