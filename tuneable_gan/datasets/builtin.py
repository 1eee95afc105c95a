"""The two datasets that need nothing on disk: ``toy2pt`` and scikit-learn's ``digits``."""

from __future__ import annotations

import torch

from tuneable_gan.config import DataConfig
from tuneable_gan.datasets.base import DATASETS, RealData, resize_images, split_indices


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
    train, test = split_indices(len(x), 0.2)
    idx = train if split == "train" else test
    return RealData("digits", x[idx].contiguous(), y[idx].contiguous(), 10)
