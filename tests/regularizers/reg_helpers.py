"""Shared by the regularizer tests: tiny Ds with closed-form input gradients, batches, configs.

- QuadD:   D_c(x, y) = 0.5 * c * (1 + y) * ||x||^2  ->  grad_x = c * (1 + y) * x   (y = 0 if None)
- LinearD: D_w(x, y) = (1 + y) * <w, x>             ->  grad_x = (1 + y) * w, for every x
"""

from __future__ import annotations

import torch
from conftest import tiny_config
from torch import nn

from tuneable_gan.config import Config
from tuneable_gan.models import DataSpec
from tuneable_gan.regularizers import REGULARIZERS, DBatch
from tuneable_gan.resolve import resolve

Tensor = torch.Tensor
F64 = torch.float64
SHAPE = (1, 3, 3)
GAMMA = 3.0
DIGITS = DataSpec((1, 8, 8), 10)  # the data of tiny_config (digits at resolution 8)
TRAIN = "train"  # the stage of a dense run


def _factor(y: Tensor | None, like: Tensor) -> Tensor:
    return torch.ones(len(like), dtype=like.dtype) if y is None else 1.0 + y.to(like.dtype)


class QuadD(nn.Module):
    """0.5 * c * (1 + y) * ||x||^2 per sample."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=F64))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return 0.5 * self.c * _factor(y, x) * x.flatten(1).pow(2).sum(1)


class LinearD(nn.Module):
    """(1 + y) * <w, x> per sample."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return _factor(y, x) * (x * self.w).flatten(1).sum(1)


def images(n: int, seed: int, scale: float = 1.0) -> Tensor:
    """n float64 images, sample i scaled by (i + 1) so per-sample and batch statistics differ."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, generator=gen, dtype=F64)
    return scale * x * torch.arange(1, n + 1, dtype=F64).view(-1, 1, 1, 1)


def make_batch(D: nn.Module, fake: Tensor, real: Tensor, labels: Tensor | None = None,
               augment=lambda t: t, gen: torch.Generator | None = None, step: int = 0,
               d_step: int = 0, logits: Tensor | None = None) -> DBatch:
    x = torch.cat([fake, real])
    if logits is None:
        logits = D(x, labels)
    return DBatch(x=x, logits=logits, labels=labels, n_fake=len(fake), grad_norms=None,
                  fake_raw=fake, real_raw=real, D=D, augment=augment,
                  generator=gen if gen is not None else torch.Generator().manual_seed(0),
                  step=step, d_step=d_step)


def resolved(**kw: object) -> Config:
    """tiny_config(**kw) with its paper-default nulls filled, as the trainer resolves it."""
    return resolve(tiny_config(**kw), DIGITS)


def build(name: str, **kw: object):
    return REGULARIZERS.get(name)(resolved(regularizer__name=name, **kw))


def clone(gen: torch.Generator) -> torch.Generator:
    return torch.Generator().set_state(gen.get_state())
