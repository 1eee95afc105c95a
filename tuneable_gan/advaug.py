"""AdvAug: feature-level adversarial augmentation (docs/methods.md 3.3, pitfall 8), as step terms.

D side: ``h = D.trunk(x)`` (pooled features); only ``D.head`` is re-run on ``h + delta``.
G side: ``u = G.stem(z, y)``; ``u + delta_u`` goes through ``G.rest`` and the full D.

The perturbation is FGSM/PGD without random start or projection, as in the reference code:
``delta <- delta + gamma * sign(grad objective)``, ``steps`` times, computed on a detached copy
of the features and returned as a constant.

Two references implement it differently; ``augment.advaug_form`` picks one (``FORMS``):

- ``sngan`` (``SNGAN/functions_adv.py``): the objective of ``code_increase_logit`` is the mean
  D logit on every branch; on the G side T (DiffAugment, when configured) runs between
  ``G.rest`` and D in the PGD step(s) and in the adversarial branch (the reference script has
  its DiffAugment calls commented out; T there is this project's, as in every D/G call).
- ``biggan`` (``BigGAN and DiffAugGAN/train_eval_impg.py``, ``PGD`` / ``PGD_G`` and the
  ``ProjGAN_adv`` branches): on the D side ``code_increase_logit`` ascends the *real* hinge term
  ``-mean(relu(1 - out))`` for the real half and, the same term, for the fake half, so a
  sample whose logit is already >= 1 gets delta = 0; on the G side neither the PGD step(s) nor
  the adversarial branch ``D(G.rest(u + delta_u))`` go through T (only the clean branch does).

The objective (``mode``), per form:

- ``code_increase_logit`` (the reference code): raise the D logit; the mean logit on every
  branch (``sngan``), the real hinge term on both D halves and the mean logit for G
  (``biggan``). Adversarial for D on fakes, "friendly" for D on reals and for G.
- ``worst_case``: the respective loss: D's loss (real and fake parts) in the D step, G's loss
  in the G step; the same in both forms, which then differ only in T on the G side.

Losses are ``1/2 clean + 1/2 adversarial``; the adversarial branch reuses the clean features
(``h + delta``, ``u + delta_u``), so gradients reach D's trunk / G's stem through both branches.
``AdvAugD`` and ``AdvAugG`` are adversarial step terms with ``share = 1/2`` (``terms``): the step
weighs the plain loss by the other half. Both run in lottery stage II (``train``) only: tickets
are found without AdvAug.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tuneable_gan.config import AugmentConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.losses import Loss
from tuneable_gan.precision import input_grad
from tuneable_gan.terms import DBatch, GBatch, Schedule, Term
from tuneable_gan.training_stats import StepStats

Tensor = torch.Tensor

MODES = ("code_increase_logit", "worst_case")
FORMS = ("sngan", "biggan")
# An unresolved config (``advaug_form: null``, terms built directly): the generic form. The
# trainer always passes the resolved config, where null became the arch's reference form.
DEFAULT_FORM = "sngan"


def _check(gamma: float, mode: str, steps: int, form: str = "sngan") -> None:
    if mode not in MODES:
        raise ValueError(f"advaug mode must be one of {', '.join(MODES)}; got {mode!r}")
    if form not in FORMS:
        raise ValueError(f"advaug form must be one of {', '.join(FORMS)}; got {form!r}")
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
        grad = input_grad(obj, pert, create_graph=False)
        delta = delta + gamma * grad.sign()
    return delta.detach()


def d_objective(mode: str, loss: Loss, n_fake: int,
                form: str = "sngan") -> Callable[[Tensor], Tensor]:
    """The D-side ascent objective on head logits of the ``[fakes; reals]`` batch.

    The BigGAN form's ``code_increase_logit`` objective is the hinge real term whatever the
    training loss (the reference hard-codes it), so with ``loss.name=ns`` it still stops at 1.
    """
    if mode == "code_increase_logit" and form == "biggan":
        # The reference's PGD ascends -loss_real(out) = -mean(relu(1 - out)) once on the reals'
        # features and once (the same loss_real) on the fakes'. The head is per sample, so the
        # sum of the two half means gives each row the gradient of its own half's call.
        return lambda logits: -(F.relu(1.0 - logits[n_fake:]).mean()
                                + F.relu(1.0 - logits[:n_fake]).mean())
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
               gamma: float, mode: str, steps: int = 1, form: str = "sngan") -> Tensor:
    """D's loss on the perturbed features ``h + delta`` of the ``[fakes; reals]`` batch.

    ``h = D.trunk(X)`` with its graph (``X`` = the D input the clean loss uses); the first
    ``n_fake`` rows are fakes. ``form`` picks the ascent objective (module docstring). Combine
    as ``0.5 * clean + 0.5 * d_adv_loss(...)``.
    """
    _check(gamma, mode, steps, form)
    delta = feature_delta(lambda f: D.head(f, y), h, d_objective(mode, loss, n_fake, form),
                          gamma, steps)
    adv = D.head(h + delta, y)
    return loss.d_loss(adv[n_fake:], adv[:n_fake])


def g_adv_loss(G: nn.Module, D: nn.Module, u: Tensor, y: Tensor | None, loss: Loss,
               augment: Callable[[Tensor], Tensor] | None, gamma: float, mode: str,
               steps: int = 1) -> Tensor:
    """G's loss on the perturbed stem output: ``g_loss(D(T(G.rest(u + delta_u))))``.

    ``u = G.stem(z, y)`` with its graph. Each D call goes through ``augment`` (T) afresh, so a
    random T draws once per call (one per PGD step, one for the loss); ``augment=None`` (the
    BigGAN form) runs neither the PGD step(s) nor the loss through T.
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
        self.form = cfg.advaug_form or DEFAULT_FORM
        check_config(cfg)


class AdvAugD(_AdvAugTerm):
    """D's loss on perturbed pooled features, half of the adversarial D loss; logs
    ``d_loss_adv``."""

    name = "advaug_d"

    def loss(self, batch: DBatch, stats: StepStats) -> Tensor:
        assert batch.features is not None and batch.loss is not None
        value = d_adv_loss(batch.D, batch.features, batch.labels, batch.n_fake, batch.loss,
                           self.gamma, self.mode, form=self.form)
        stats.report("d_loss_adv", value)
        return value


class AdvAugG(_AdvAugTerm):
    """G's loss through perturbed stem features, half of the adversarial G loss. T runs in
    its PGD step(s) and its branch in the SNGAN form, not at all in the BigGAN form."""

    name = "advaug_g"

    def loss(self, batch: GBatch, stats: StepStats) -> Tensor:
        assert batch.stem is not None
        augment = batch.augment if self.form == "sngan" else None
        return g_adv_loss(batch.G, batch.D, batch.stem, batch.labels, batch.loss, augment,
                          self.gamma, self.mode)


def check_config(cfg: AugmentConfig) -> None:
    """ConfigError (one line: the key and its valid values) for a form or mode the terms do not
    implement. Every (form, mode) pair has a meaning (module docstring); ``advaug_form: null``
    is the generic form."""
    if cfg.advaug_form is not None and cfg.advaug_form not in FORMS:
        raise ConfigError(f"augment.advaug_form must be one of {', '.join(FORMS)}; "
                          f"got {cfg.advaug_form!r}")
    if cfg.advaug_mode not in MODES:
        raise ConfigError(f"augment.advaug_mode must be one of {', '.join(MODES)}; "
                          f"got {cfg.advaug_mode!r}")


def advaug_terms(cfg: AugmentConfig) -> tuple[list[Term], list[Term]]:
    """(D-side, G-side) AdvAug terms for ``augment.advaug`` (off | d | g | gd), in the form
    ``augment.advaug_form`` (sngan | biggan; the trainer's resolved config never has null)."""
    return ([AdvAugD(cfg)] if cfg.advaug in ("d", "gd") else [],
            [AdvAugG(cfg)] if cfg.advaug in ("g", "gd") else [])
