"""AdvAug: feature-level adversarial augmentation (docs/methods.md 3.3, pitfall 8), as step terms.

D side: ``h = D.trunk(x)`` (pooled features); only ``D.head`` is re-run on ``h + delta``.
G side: ``u = G.stem(z, y)``; ``u + delta_u`` goes through ``G.rest``, T and the full D.

The perturbation is FGSM/PGD without random start or projection, as in the reference code:
``delta <- delta + gamma * sign(grad objective)``, ``steps`` times, computed on a detached copy
of the features and returned as a constant. The objective (``mode``):

- ``code_increase_logit`` (the reference code): the mean D logit, for every branch. Adversarial
  for D on fakes, "friendly" for D on reals and for G.
- ``worst_case``: the respective loss: D's loss (real and fake parts) in the D step, G's loss
  in the G step.

Losses are ``1/2 clean + 1/2 adversarial``; the adversarial branch reuses the clean features
(``h + delta``, ``u + delta_u``), so gradients reach D's trunk / G's stem through both branches.
``AdvAugD`` and ``AdvAugG`` are adversarial step terms with ``share = 1/2`` (``terms``): the step
weighs the plain loss by the other half. Both run in lottery stage II (``train``) only: tickets
are found without AdvAug.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tuneable_gan.config import AugmentConfig
from tuneable_gan.losses import Loss
from tuneable_gan.terms import DBatch, GBatch, Schedule, Term
from tuneable_gan.training_stats import StepStats

Tensor = torch.Tensor

MODES = ("code_increase_logit", "worst_case")


def _check(gamma: float, mode: str, steps: int) -> None:
    if mode not in MODES:
        raise ValueError(f"advaug mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not gamma > 0:
        raise ValueError(f"advaug step gamma must be > 0, got {gamma}")
    if steps < 0:
        raise ValueError(f"advaug steps must be >= 0, got {steps}")


def feature_delta(fn: Callable[[Tensor], Tensor], feat: Tensor,
                  objective: Callable[[Tensor], Tensor], gamma: float,
                  steps: int = 1) -> Tensor:
    """The perturbation of ``feat`` that ascends ``objective(fn(feat + delta))``.

    ``steps`` sign-gradient steps of size ``gamma`` from delta = 0, no projection. Only the
    gradient w.r.t. the features is taken (no parameter ``.grad`` is touched); the result is
    detached, a constant for the loss that uses it.
    """
    base = feat.detach()
    delta = torch.zeros_like(base)
    for _ in range(steps):
        pert = (base + delta).requires_grad_(True)
        with torch.enable_grad():
            obj = objective(fn(pert))
        (grad,) = torch.autograd.grad(obj, pert)
        delta = delta + gamma * grad.sign()
    return delta.detach()


def d_objective(mode: str, loss: Loss, n_fake: int) -> Callable[[Tensor], Tensor]:
    """The D-side ascent objective on head logits of the ``[fakes; reals]`` batch."""
    if mode == "code_increase_logit":
        return lambda logits: logits.mean()
    # Both losses are sums of a real and a fake part, so one ascent on the total moves each
    # sample along its own part (the scale differs, the sign does not).
    return lambda logits: loss.d_loss(logits[n_fake:], logits[:n_fake])


def g_objective(mode: str, loss: Loss) -> Callable[[Tensor], Tensor]:
    """The G-side ascent objective on D's logits of the fakes."""
    if mode == "code_increase_logit":
        return lambda logits: logits.mean()
    return loss.g_loss


def d_adv_loss(D: nn.Module, h: Tensor, y: Tensor | None, n_fake: int, loss: Loss,
               gamma: float, mode: str, steps: int = 1) -> Tensor:
    """D's loss on the perturbed features ``h + delta`` of the ``[fakes; reals]`` batch.

    ``h = D.trunk(X)`` with its graph (``X`` = the D input the clean loss uses); the first
    ``n_fake`` rows are fakes. Combine as ``0.5 * clean + 0.5 * d_adv_loss(...)``.
    """
    _check(gamma, mode, steps)
    delta = feature_delta(lambda f: D.head(f, y), h, d_objective(mode, loss, n_fake), gamma,
                          steps)
    adv = D.head(h + delta, y)
    return loss.d_loss(adv[n_fake:], adv[:n_fake])


def g_adv_loss(G: nn.Module, D: nn.Module, u: Tensor, y: Tensor | None, loss: Loss,
               augment: Callable[[Tensor], Tensor] | None, gamma: float, mode: str,
               steps: int = 1) -> Tensor:
    """G's loss on the perturbed stem output: ``g_loss(D(T(G.rest(u + delta_u))))``.

    ``u = G.stem(z, y)`` with its graph. Each D call goes through ``augment`` (T) afresh, so a
    random T draws once per call (one per PGD step, one for the loss).
    """
    _check(gamma, mode, steps)
    T = augment if augment is not None else (lambda x: x)

    def through(f: Tensor) -> Tensor:
        return D(T(G.rest(f, y)), y)

    delta = feature_delta(through, u, g_objective(mode, loss), gamma, steps)
    return loss.g_loss(through(u + delta))


# AdvAug is stage II of the lottery recipe (and every stage of a dense run, which is "train").
TRAIN_STAGE_ONLY = Schedule(stages=("train",))


class _AdvAugTerm(Term):
    """Half of the adversarial loss, on perturbed features, in stage II only."""

    group, share = "adversarial", 0.5
    schedule = TRAIN_STAGE_ONLY
    needs_features = True

    def __init__(self, cfg: AugmentConfig) -> None:
        self.gamma, self.mode = cfg.advaug_step, cfg.advaug_mode


class AdvAugD(_AdvAugTerm):
    """D's loss on perturbed pooled features, half of the adversarial D loss; logs
    ``d_loss_adv``."""

    name = "advaug_d"

    def loss(self, batch: DBatch, stats: StepStats) -> Tensor:
        assert batch.features is not None and batch.loss is not None
        value = d_adv_loss(batch.D, batch.features, batch.labels, batch.n_fake, batch.loss,
                           self.gamma, self.mode)
        stats.report("d_loss_adv", value)
        return value


class AdvAugG(_AdvAugTerm):
    """G's loss through perturbed stem features, half of the adversarial G loss."""

    name = "advaug_g"

    def loss(self, batch: GBatch, stats: StepStats) -> Tensor:
        assert batch.stem is not None
        return g_adv_loss(batch.G, batch.D, batch.stem, batch.labels, batch.loss, batch.augment,
                          self.gamma, self.mode)


def advaug_terms(cfg: AugmentConfig) -> tuple[list[Term], list[Term]]:
    """(D-side, G-side) AdvAug terms for ``augment.advaug`` (off | d | g | gd)."""
    return ([AdvAugD(cfg)] if cfg.advaug in ("d", "gd") else [],
            [AdvAugG(cfg)] if cfg.advaug in ("g", "gd") else [])
