"""Adversarial losses on raw D logits: hinge and non-saturating (ns)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tuneable_gan.registry import Registry

Tensor = torch.Tensor


@dataclass(frozen=True)
class Loss:
    """A GAN loss: D's loss from real and fake logits, G's loss from fake logits."""

    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]


LOSSES: Registry[Loss] = Registry("loss")

LOSSES.register("hinge")(Loss(
    d_loss=lambda real, fake: F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean(),
    g_loss=lambda fake: -fake.mean(),
))

# softplus(-t) = -log(sigmoid(t)): the JS/BCE GAN loss written stably on logits.
LOSSES.register("ns")(Loss(
    d_loss=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
    g_loss=lambda fake: F.softplus(-fake).mean(),
))
