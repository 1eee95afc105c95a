"""Shared machinery of the input-gradient penalties R1, R2, GP and DRAGAN (docs/methods.md 4.2).

Every norm is the per-sample L2 norm over all but the batch dimension, of the gradient of D's
raw logit with respect to D's (or T's) input. Every gradient is taken with ``create_graph=True``
so that the penalty trains D (double backprop). Every random draw comes from the run generator.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tuneable_gan.config import Config
from tuneable_gan.precision import input_grad
from tuneable_gan.regularizers.base import DBatch, Regularizer, Tensor

Side = Literal["real", "fake"]
Wrt = Literal["raw", "augmented"]
WRT: tuple[str, ...] = ("raw", "augmented")


def split(batch: DBatch, side: Side) -> tuple[Tensor, Tensor | None]:
    """The un-augmented images of one side of the batch and their labels (None if unconditional).

    ``batch.labels`` holds the fakes' labels first, then the reals', like ``batch.x``.
    """
    n = batch.n_fake
    if side == "real":
        return batch.real_raw, None if batch.labels is None else batch.labels[n:]
    return batch.fake_raw, None if batch.labels is None else batch.labels[:n]


def uniform_per_sample(like: Tensor, generator: torch.Generator) -> Tensor:
    """One U[0, 1) draw per sample from ``generator``, shaped (n, 1, ..., 1) to broadcast."""
    shape = (like.shape[0],) + (1,) * (like.dim() - 1)
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def input_gradient(D: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """Per-sample gradient of D's raw logit w.r.t. ``x``, flattened to (n, C*H*W), from an extra
    D forward on ``x`` (GP's interpolates, DRAGAN's perturbed reals: inputs the loss forward
    never saw).

    ``x`` becomes a fresh leaf, so nothing flows back into whatever produced it (G for fakes).
    Summing the logits gives per-sample gradients because D mixes no samples. ``create_graph``
    also retains the graph of this extra forward for the D loss's backward. The gradient is
    fp32 whatever ``train.precision`` (``precision.input_grad``).
    """
    x = x.detach().requires_grad_(True)
    return input_grad(D(x, y).sum(), x, create_graph=True).flatten(1)


def one_centred(grad: Tensor) -> Tensor:
    """mean_i (||grad_i|| - 1)^2 over flattened per-sample gradients (GP-1, DRAGAN)."""
    return (grad.norm(dim=1) - 1.0).pow(2).mean()


class SquaredGradNormPenalty(Regularizer):
    """(gamma / 2) * mean_i ||grad_x D(x_i)||^2 on one side of the batch (R1 on reals, R2 on
    fakes); gamma = ``regularizer.weight``, paper default 10.

    ``wrt`` picks the convention. ``"raw"`` (default, StyleGAN2 + DiffAugment and StudioGAN):
    the gradient is w.r.t. the un-augmented image, with T inside the differentiated call, taken
    on the loss forward itself (``DBatch.raw``; StudioGAN ``src/worker.py`` sets requires_grad on
    the reals before augmenting and reuses the loss's D output, ``cal_r1_reg``): no extra D
    forward and no second augmentation draw. ``"augmented"`` (DigGAN's BigGAN path): the gradient
    w.r.t. D's augmented input of the loss forward, read from ``DBatch.grad_norms``. Either way
    the gradient of the batch's summed logits gives each sample's own (D mixes no samples, T is
    per sample).
    """

    side: Side = "real"

    def __init__(self, cfg: Config, *, wrt: Wrt = "raw") -> None:
        super().__init__(cfg)
        if wrt not in WRT:
            raise ValueError(f"wrt must be one of {', '.join(WRT)}; got {wrt!r}")
        self.wrt: Wrt = wrt
        # Instance attributes: the convention decides what the D step computes for this term.
        self.needs_grad_norms = wrt == "augmented"
        self.needs_raw_grad = wrt == "raw"

    @classmethod
    def default_weight(cls, cfg: Config) -> float:
        # gamma = 10: Mescheder et al. 2018, the DiffAugment low-shot config (docs/methods.md 4.2).
        return 10.0

    def squared_norms(self, batch: DBatch) -> Tensor:
        """Per-sample ||grad||^2 on this regularizer's side of the batch, with a graph."""
        if self.wrt == "augmented":
            g = batch.grad_norms
            assert g is not None and g.requires_grad, (
                "wrt='augmented' needs DBatch.grad_norms with a graph (needs_grad_norms)")
            part = g[batch.n_fake:] if self.side == "real" else g[:batch.n_fake]
            return part.pow(2)
        assert batch.raw is not None and batch.raw.requires_grad, "wrt='raw' needs DBatch.raw"
        grad = input_grad(batch.logits.sum(), batch.raw, create_graph=True)
        grad = grad[batch.n_fake:] if self.side == "real" else grad[:batch.n_fake]
        # Sum of squares rather than norm()**2: same value, and no sqrt to differentiate at 0.
        return grad.flatten(1).pow(2).sum(dim=1)

    def penalty(self, batch: DBatch) -> Tensor:
        return 0.5 * self.weight * self.squared_norms(batch).mean()

