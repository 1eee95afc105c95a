"""The terms a training step is composed of, each with its schedule as data.

A G iteration runs ``optim.d_steps`` D updates and one G update (``tuneable_gan.trainer``). Each
update runs a list of terms: the adversarial loss, each regularizer, AdvAug, the gradient-gap
probe, and later lazy R1, path-length regularisation or ADA. A term says, as data, when it runs
(``Schedule``: which D steps, every how many G iterations, from which phase step, in which
lottery stages), what the step must compute for it (the per-sample input-gradient norms, with or
without a graph; D's pooled features; G's stem output) and which sum it joins:

* ``adversarial``: the loss that is logged as ``d_loss`` / ``g_loss``. A term with a ``share``
  (AdvAug's 1/2) takes that share of the adversarial weight from the plain loss.
* ``penalty``: summed into ``reg_loss`` (D) and added after the adversarial sum.
* ``probe``: contributes nothing; it only records values (the logged DIG), so the step skips
  it in iterations whose values nobody reads.

``observe`` runs on every D step for every term of the run, scheduled or not (LeCam's anchors
follow every batch; its penalty only starts at ``start``). So adding a method needs a term, not
a branch in the step functions. Values are recorded with ``StepStats.report`` where they are
computed.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tuneable_gan.losses import Loss
from tuneable_gan.training_stats import StepStats

Tensor = torch.Tensor

ALL_STAGES: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """When a term runs, counted in G iterations of the current phase (``phase.step``).

    ``d_steps``: ``all`` the D steps of an iteration or only the ``first`` (DigGAN's reference);
    ``interval``: every that many iterations (lazy regularisation); ``start``: from that
    iteration on (warm-ups); ``stages``: the lottery stages it runs in (empty: every stage).
    """

    d_steps: str = "all"
    interval: int = 1
    start: int = 0
    stages: tuple[str, ...] = ALL_STAGES

    def __post_init__(self) -> None:
        assert self.d_steps in ("all", "first"), self.d_steps
        assert self.interval >= 1 and self.start >= 0

    def fires(self, step: int, d_step: int, stage: str) -> bool:
        """Whether the term runs at phase step ``step``, D step ``d_step`` (0 in the G update),
        in lottery stage ``stage``."""
        return (step >= self.start and step % self.interval == 0
                and (self.d_steps == "all" or d_step == 0)
                and (not self.stages or stage in self.stages))


@dataclass
class DBatch:
    """One D step, as its terms see it. Fakes come first, then reals (DigGAN reference).

    ``x`` is D's actual (augmented) input, ``logits`` the raw D output of the loss forward pass,
    ``features`` D's pooled features of that pass (when a term asked for them), ``grad_norms``
    the per-sample L2 norms of d(sum logits)/dx (when a term asked; with a graph when a term
    differentiates through them). ``fake_raw``/``real_raw`` are the un-augmented images; ``raw``
    is their concatenation as a tensor that requires grad, T applied to it gives ``x`` (only when
    a term differentiates w.r.t. the un-augmented input: R1/R2 on the loss forward); ``augment``
    is T; ``generator`` the run's random stream.
    """

    x: Tensor
    logits: Tensor
    labels: Tensor | None
    n_fake: int
    grad_norms: Tensor | None
    fake_raw: Tensor
    real_raw: Tensor
    D: nn.Module
    augment: Callable[[Tensor], Tensor]
    generator: torch.Generator
    step: int
    d_step: int
    features: Tensor | None = None
    loss: Loss | None = None
    raw: Tensor | None = None


@dataclass
class GBatch:
    """One G update, as its terms see it: ``fake = G.rest(stem, labels)`` (``stem`` only when a
    term asked for it, else ``fake = G(z, labels)``), with its graph; D is frozen."""

    z: Tensor
    labels: Tensor | None
    stem: Tensor | None
    fake: Tensor
    G: nn.Module
    D: nn.Module
    augment: Callable[[Tensor], Tensor]
    loss: Loss
    step: int


class Term:
    """Base of every step term; see the module docstring. Subclasses set the class attributes
    (or instance attributes, when they depend on the config) and implement ``loss``."""

    name: str = "term"
    group: str = "penalty"          # adversarial | penalty | probe
    share: float = 0.0              # adversarial terms: share of the adversarial weight taken
    schedule: Schedule = Schedule()
    needs_grad_norms: bool = False  # differentiates through DBatch.grad_norms
    reads_grad_norms: bool = False  # reads them without a graph
    needs_raw_grad: bool = False    # differentiates w.r.t. the un-augmented D input (DBatch.raw)
    needs_features: bool = False    # D's pooled features (D side) / G's stem output (G side)

    def fires(self, step: int, d_step: int, stage: str) -> bool:
        """``schedule.fires``; a term may narrow it (never widen it)."""
        return self.schedule.fires(step, d_step, stage)

    def fake_labels(self, real_labels: Tensor | None, fake_labels: Tensor | None) -> Tensor | None:
        """Labels for the fakes of a D step this term runs in (pairings may pin them)."""
        return fake_labels

    def observe(self, batch: DBatch, stats: StepStats) -> None:
        """Called on every D step, before any term's loss (running statistics)."""

    def end_iteration(self) -> None:
        """Called once at the end of every G iteration, after all its updates (D's, the lazy
        ones, G's) and before the G EMA (ADA adjusts its p here, as the reference does)."""

    def observe_real(self, real_logits: Tensor) -> None:
        """Called with D's logits on the reals of a lazy update (``tuneable_gan.lazy``): ADA
        counts their signs as the reference does."""

    def loss(self, batch: Any, stats: StepStats) -> Tensor | None:
        """The term's contribution (weighted), or None for a probe."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""


def total(parts: Sequence[Tensor]) -> Tensor:
    """Left-to-right sum of ``parts`` without a leading 0 (same floats as ``a + b + ...``)."""
    return functools.reduce(operator.add, parts)


def adversarial_sum(terms: Sequence[Term], batch: Any, stats: StepStats) -> Tensor:
    """The weighted sum of the adversarial terms, in order: each term with a ``share`` gets
    that weight, the plain loss the rest (1 - shares), unweighted when it is 1."""
    taken = sum(t.share for t in terms)
    parts = []
    for t in terms:
        value = t.loss(batch, stats)
        assert value is not None, f"adversarial term {t.name} gave no loss"
        w = t.share if t.share else 1.0 - taken
        parts.append(value if w == 1.0 else w * value)
    return total(parts)


# -- the adversarial losses and the gradient-gap probe -----------------------------------------


class DAdversarial(Term):
    """D's loss on the raw logits of the ``[fakes; reals]`` batch."""

    name, group = "d_adversarial", "adversarial"

    def loss(self, batch: DBatch, stats: StepStats) -> Tensor:
        assert batch.loss is not None
        return batch.loss.d_loss(batch.logits[batch.n_fake:], batch.logits[:batch.n_fake])


class GAdversarial(Term):
    """G's loss on D's logits of the augmented fakes: ``g_loss(D(T(G(z)), y))``."""

    name, group = "g_adversarial", "adversarial"

    def loss(self, batch: GBatch, stats: StepStats) -> Tensor:
        return batch.loss.g_loss(batch.D(batch.augment(batch.fake), batch.labels))


class GradientGapProbe(Term):
    """Logs the discriminator gradient gap of the first D step of every G iteration that is
    read (``GANTrainer.train_step``: a probe does not run in unread iterations, so a baseline
    pays its input-gradient backward only there), for every run (DigGAN on or off), so the gap
    can be compared across runs: ``grad_norm_fake``,
    ``grad_norm_real`` (batch means of the per-sample norms) and ``dig`` = mean_i (g_real,i -
    g_fake,i)^2, unsmoothed and paired by batch index."""

    name, group = "dig_probe", "probe"
    schedule = Schedule(d_steps="first")
    reads_grad_norms = True

    def loss(self, batch: DBatch, stats: StepStats) -> None:
        g = batch.grad_norms
        assert g is not None
        g = g.detach()
        n = batch.n_fake
        stats.report("grad_norm_fake", g[:n].mean())
        stats.report("grad_norm_real", g[n:].mean())
        stats.report("dig", (g[n:] - g[:n]).pow(2).mean())
        return None
