"""What every D regularizer sees and provides. One module per method owns its math and state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tuneable_gan.config import Config
from tuneable_gan.registry import Registry

Tensor = torch.Tensor


@dataclass
class DBatch:
    """One D step, as the regularizers see it. Fakes come first, then reals (DigGAN reference).

    ``x`` is D's actual (augmented) input, ``logits`` the raw D output of the loss forward pass,
    ``grad_norms`` the per-sample L2 norms of d(sum logits)/dx, with a graph when a regularizer
    asked for one. ``fake_raw``/``real_raw`` are the un-augmented images; ``augment`` is T.
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


class Regularizer:
    """Base class: a penalty added to the D loss, with its own checkpointed state.

    Subclasses set ``needs_grad_norms`` when they consume ``DBatch.grad_norms`` (the trainer then
    differentiates through them), and ``default_every``, the reference schedule across D steps.
    """

    needs_grad_norms: bool = False
    default_every: str = "all"

    def __init__(self, cfg: Config) -> None:
        reg = cfg.regularizer
        self.every = reg.every if reg.every is not None else self.default_every
        self.weight = reg.weight if reg.weight is not None else self.default_weight(cfg)

    def default_weight(self, cfg: Config) -> float:
        """The method's paper weight for this config (used when regularizer.weight is null)."""
        return 0.0

    def applies(self, step: int, d_step: int) -> bool:
        """Whether D step ``d_step`` of G iteration ``step`` carries the penalty."""
        return self.every == "all" or d_step == 0

    def fake_labels(self, real_labels: Tensor | None, fake_labels: Tensor | None) -> Tensor | None:
        """Labels for the fakes of a D step that carries the penalty (pairings may pin them)."""
        return fake_labels

    def penalty(self, batch: DBatch) -> Tensor:
        """The weighted penalty to add to the D loss."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Effective settings, after paper defaults are filled in (for logs and reports)."""
        return {"weight": self.weight, "every": self.every}

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""


REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """The baseline: no penalty."""

    def applies(self, step: int, d_step: int) -> bool:
        return False

    def penalty(self, batch: DBatch) -> Tensor:
        return batch.logits.new_zeros(())


def input_grad_norms(logits: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """Per-sample L2 norm (not squared) of d(sum logits)/dx, flattened over all but the batch dim.

    Summing the outputs yields per-sample gradients because D has no cross-sample operation.
    ``retain_graph`` keeps the loss graph alive for the D backward that follows.
    """
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=create_graph, retain_graph=True)
    return grad.flatten(1).norm(dim=1)
