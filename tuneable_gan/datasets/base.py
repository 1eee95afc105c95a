"""What every dataset shares: the in-memory split type, the ``DATASETS`` registry, resizing
and the uint8 quantisation every evaluated image goes through.

A loader is registered under its ``data.name`` and maps ``(DataConfig, split)`` to a
``RealData``; ``tuneable_gan.data.load_data`` looks it up and applies the fraction subset.
Loaders import this module only, never ``tuneable_gan.data``, so the package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tuneable_gan.config import DataConfig
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


def split_indices(n: int, test_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a fixed, seeded split of ``n`` items (sorted)."""
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


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images (N, C, H, W) -> uint8 (N, 3, H, W) in [0, 255], gray repeated to RGB.

    Real and generated images both go through here, so quantisation can never tell them apart.
    """
    x = ((x.float() + 1.0) * 127.5).round().clamp(0.0, 255.0).to(torch.uint8)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
