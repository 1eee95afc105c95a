"""What every D regularizer is: a penalty term of the D update with its own checkpointed state,
and its paper defaults. One module per method owns its math and state."""

from __future__ import annotations

from typing import Any

import torch

from tuneable_gan.config import Config
from tuneable_gan.precision import input_grad
from tuneable_gan.registry import Registry
from tuneable_gan.terms import DBatch, Schedule, Term
from tuneable_gan.training_stats import StepStats

Tensor = torch.Tensor

__all__ = ["REGULARIZERS", "DBatch", "Regularizer", "input_grad_norms"]


class Regularizer(Term):
    """Base class: a ``penalty`` term added to the D loss (``terms``).

    ``defaults(cfg)`` gives the method's paper values for the ``regularizer.*`` fields it uses
    (``weight``, ``every``, and per method ``ema``, ``start``); ``tuneable_gan.resolve`` fills
    them into the config once, so an instance reads only resolved values and the config, the
    logs and the reports all carry the value a run used. ``schedule`` comes from ``every``
    (which D steps) and, for methods with a warm-up, ``start``.
    """

    default_every: str = "all"

    def __init__(self, cfg: Config) -> None:
        reg = cfg.regularizer
        assert reg.weight is not None and reg.every is not None, "resolve the config first"
        self.name = reg.name
        self.weight: float = reg.weight
        self.every: str = reg.every
        self.schedule = Schedule(d_steps=reg.every)

    @classmethod
    def defaults(cls, cfg: Config) -> dict[str, Any]:
        """The paper values of the ``regularizer.*`` fields this method reads."""
        return {"weight": cls.default_weight(cfg), "every": cls.default_every}

    @classmethod
    def default_weight(cls, cfg: Config) -> float:
        """The method's paper weight for this config."""
        return 0.0

    def penalty(self, batch: DBatch) -> Tensor:
        """The weighted penalty to add to the D loss."""
        raise NotImplementedError

    def loss(self, batch: DBatch, stats: StepStats) -> Tensor:
        return self.penalty(batch)


REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """The baseline: no penalty (its schedule never fires)."""

    def fires(self, step: int, d_step: int, stage: str) -> bool:
        return False

    def penalty(self, batch: DBatch) -> Tensor:
        return batch.logits.new_zeros(())


def input_grad_norms(logits: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """Per-sample L2 norm (not squared) of d(sum logits)/dx, flattened over all but the batch dim.

    Summing the outputs yields per-sample gradients because D has no cross-sample operation.
    ``retain_graph`` keeps the loss graph alive for the D backward that follows. In fp32
    whatever ``train.precision`` (``precision.input_grad``: ``x`` is fp32).
    """
    grad = input_grad(logits.sum(), x, create_graph=create_graph, retain_graph=True)
    return grad.flatten(1).norm(dim=1)
