"""Lazy regularisation (StyleGAN2, Karras et al. 2020, appendix B; stylegan2-ada-pytorch
``training/loss.py`` and ``training_loop.py``): R1 on D every ``loss.r1_interval`` G iterations
and path-length regularisation on G every ``loss.pl_interval``, each as its own update (its own
forward, backward and optimizer step after the net's main update: the reference's ``Dreg`` and
``Greg`` phases), the penalty multiplied by its interval so its average strength is that of a
penalty applied every step. A net with a lazy update trains with Adam's learning rate times
``r = interval / (interval + 1)`` and betas to the power ``r`` (the reference's ``mb_ratio``), so
that ``interval`` main steps plus one regularisation step move as far as ``interval`` steps
without lazy regularisation would.

Both run on the iteration's phase steps 0, ``interval``, ``2 * interval``, ... (the reference's
``batch_idx % interval == 0``). Lazy R1 differentiates w.r.t. the un-augmented reals of the
iteration's (last) D step with the augmentation inside the differentiated D call (the reference
and its DiffAugment port: ``run_D`` augments); path-length regularisation draws its own
``batch_size // pl_batch_shrink`` latents with style mixing, as the reference's ``Greg`` does.
These are ``loss.r1_gamma`` / ``loss.pl_weight``: separate from ``regularizer.*``, so DigGAN,
LeCam or any other regularizer combines with them (DigGAN's Table 4 is StyleGAN2-ADA with R1 plus
DigGAN).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tuneable_gan.config import LossConfig
from tuneable_gan.terms import Schedule, Term
from tuneable_gan.training_stats import StepStats

Tensor = torch.Tensor


@dataclass
class LazyBatch:
    """What a lazy update sees: the nets, T, the run's stream, the reals (and their labels) of
    the iteration's last D step, a draw of fake labels for ``n`` fakes, the batch size, and
    where D's logits on reals go (the D terms' ``observe_real``)."""

    G: nn.Module
    D: nn.Module
    augment: Callable[[Tensor], Tensor]
    generator: torch.Generator
    reals: Tensor
    real_labels: Tensor | None
    fake_labels: Callable[[int], Tensor | None]
    batch_size: int
    step: int
    observe_real: Callable[[Tensor], None] = lambda logits: None


class LazyUpdate(Term):
    """A penalty that trains its net in an update of its own every ``interval`` iterations;
    ``net`` is "D" or "G"."""

    group = "update"
    net: str = "D"
    interval: int = 1

    @property
    def ratio(self) -> float:
        """The reference's ``mb_ratio``: Adam's lr is scaled by it and its betas raised to it."""
        return self.interval / (self.interval + 1)


class LazyR1(LazyUpdate):
    """``interval * mean_i (gamma / 2) ||grad_x D(T(x_i), y_i)||^2`` over the reals ``x``;
    records ``r1_penalty`` (the batch mean of the squared norms)."""

    name, net = "lazy_r1", "D"

    def __init__(self, gamma: float, interval: int) -> None:
        self.gamma, self.interval = gamma, interval
        self.schedule = Schedule(interval=interval)

    def loss(self, batch: LazyBatch, stats: StepStats) -> Tensor:
        raw = batch.reals.detach().requires_grad_(True)
        logits = batch.D(batch.augment(raw), batch.real_labels)
        batch.observe_real(logits)
        (grad,) = torch.autograd.grad(logits.sum(), raw, create_graph=True)
        penalty = grad.float().square().sum(dim=tuple(range(1, grad.dim())))
        stats.report("r1_penalty", penalty.mean())
        return (penalty * (self.gamma / 2)).mean() * self.interval


class PathLength(LazyUpdate):
    """Path-length regularisation: for fakes ``g(w)`` and image-space noise ``y ~ N(0, I) /
    sqrt(H W)``, the lengths ``a_i = sqrt(mean_layers ||d(g(w_i) . y_i)/dw_i||^2)``; the running
    mean ``m <- lerp(m, mean(a), decay)`` (kept in the checkpoint) and the penalty
    ``interval * weight * mean_i (a_i - m)^2``, with the new ``m`` inside the graph as the
    reference has it. Records ``pl_length`` and ``pl_mean``."""

    name, net = "path_length", "G"

    def __init__(self, weight: float, interval: int, decay: float, shrink: int) -> None:
        self.weight, self.interval, self.decay, self.shrink = weight, interval, decay, shrink
        self.schedule = Schedule(interval=interval)
        self.mean = torch.zeros(())

    def loss(self, batch: LazyBatch, stats: StepStats) -> Tensor:
        G, gen = batch.G, batch.generator
        n = max(batch.batch_size // self.shrink, 1)
        device = gen.device
        z = G.sample_z(n, gen, device)
        y = batch.fake_labels(n)
        ws = G.train_stem(z, y, gen)
        img = G.rest(ws, y)
        noise = torch.randn(img.shape, generator=gen, device=device) / math.sqrt(
            img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.float().square().sum(2).mean(1).sqrt()
        mean = self.mean.to(lengths.device).lerp(lengths.mean(), self.decay)
        self.mean = mean.detach()
        stats.report("pl_length", lengths.mean())
        stats.report("pl_mean", self.mean)
        return (lengths - mean).square().mean() * self.weight * self.interval

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state["mean"].clone()


def lazy_step(active: list[LazyUpdate], batch: LazyBatch, net: nn.Module,
              opt: torch.optim.Optimizer, autocast: Callable[[], Any], stats: StepStats,
              masks: Any = None) -> None:
    """One update of their own for the lazy updates ``active`` of ``net``: their summed loss
    in ``autocast``, backward, ``opt``'s step; ``masks`` (the lottery phase, for G) constrains
    the gradients before the step and the weights after, as in the main update. A parameter
    the penalty does not reach (D's output bias, G's toRGB biases) gets a zero gradient, so
    Adam steps every parameter, as the reference's ``logits * 0 + penalty`` gives it."""
    with autocast():
        loss = functools.reduce(operator.add, [u.loss(batch, stats) for u in active])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for p in net.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
    if masks is not None:
        masks.constrain_grads(batch.G)
    opt.step()
    if masks is not None:
        masks.constrain_weights(batch.G)


def lazy_updates(cfg: LossConfig) -> tuple[list[LazyUpdate], list[LazyUpdate]]:
    """(D's, G's) lazy updates of the loss config: lazy R1 when ``r1_gamma > 0``, path-length
    regularisation when ``pl_weight > 0``."""
    d = [LazyR1(cfg.r1_gamma, cfg.r1_interval)] if cfg.r1_gamma > 0 else []
    g = ([PathLength(cfg.pl_weight, cfg.pl_interval, cfg.pl_decay, cfg.pl_batch_shrink)]
         if cfg.pl_weight > 0 else [])
    return d, g


def lazy_ratio(updates: list[LazyUpdate]) -> float:
    """The Adam rescaling of a net with these lazy updates (1.0 with none)."""
    return math.prod(u.ratio for u in updates)
