"""Shared machinery of the input-gradient penalties R1, R2, GP and DRAGAN (docs/methods.md 4.2).

Every norm is the per-sample L2 norm over all but the batch dimension, of the gradient of D's
raw logit with respect to D's (or T's) input. Every gradient is taken with ``create_graph=True``
so that the penalty trains D (double backprop). Every random draw comes from the run generator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from tuneable_gan.config import Config
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


def input_gradient(D: nn.Module, x: Tensor, y: Tensor | None,
                   transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Per-sample gradient of D's raw logit w.r.t. ``x``, flattened to (n, C*H*W).

    ``x`` becomes a fresh leaf, so nothing flows back into whatever produced it (G for fakes).
    With ``transform`` (T), the gradient is w.r.t. the input of T, D seeing ``transform(x)``.
    Summing the logits gives per-sample gradients because D mixes no samples. ``create_graph``
    also retains the graph of this extra forward for the D loss's backward.
    """
    x = x.detach().requires_grad_(True)
    out = D(transform(x) if transform is not None else x, y)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1)


def one_centred(grad: Tensor) -> Tensor:
    """mean_i (||grad_i|| - 1)^2 over flattened per-sample gradients (GP-1, DRAGAN)."""
    return (grad.norm(dim=1) - 1.0).pow(2).mean()


class SquaredGradNormPenalty(Regularizer):
    """(gamma / 2) * mean_i ||grad_x D(x_i)||^2 on one side of the batch (R1 on reals, R2 on
    fakes); gamma = ``regularizer.weight``, paper default 10.

    ``wrt`` picks the convention. ``"raw"`` (default, StyleGAN2 + DiffAugment and StudioGAN):
    the gradient is w.r.t. the un-augmented image with T inside the differentiated call,
    ``D(T(x), y)``, at the cost of one extra D forward on that half of the batch. ``"augmented"``
    (DigGAN's BigGAN path): the gradient w.r.t. D's augmented input of the loss forward, read
    from ``DBatch.grad_norms``: no extra forward, but the trainer then double-backprops through
    the norms of the whole batch.
    """

    side: Side = "real"

    def __init__(self, cfg: Config, *, wrt: Wrt = "raw") -> None:
        super().__init__(cfg)
        if wrt not in WRT:
            raise ValueError(f"wrt must be one of {', '.join(WRT)}; got {wrt!r}")
        self.wrt: Wrt = wrt
        # An instance attribute: only the "augmented" convention consumes the trainer's norms.
        self.needs_grad_norms = wrt == "augmented"

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
        x, y = split(batch, self.side)
        # Sum of squares rather than norm()**2: same value, and no sqrt to differentiate at 0.
        return input_gradient(batch.D, x, y, batch.augment).pow(2).sum(dim=1)

    def penalty(self, batch: DBatch) -> Tensor:
        return 0.5 * self.weight * self.squared_norms(batch).mean()

