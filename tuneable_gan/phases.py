"""Training phases: what the trainer asks of the part of the schedule it is in.

A run is a sequence of phases. A dense run has one (``DensePhase``: ``train.steps`` G steps); a
lottery-ticket run has the ticket-finding rounds and then the ticket (``lottery.LotteryPhase``).
The trainer holds one phase object and never branches on which kind it is: it asks the phase

* where it is: ``stage`` (ticket | train), ``step`` (G steps within the phase; every term
  schedule and the G EMA warm-up count these), ``length``, ``done``;
* how its steps map onto the run's one reported step counter: ``offset`` (the reported step at
  the phase's start; ``trainer.step = phase.offset + phase.step``) and ``lead`` (the G steps of
  the schedule before the final phase, so ``step + lead`` counts up from 0 and the full schedule
  is ``total`` steps long);
* what to do around a step: ``before_step`` (a lottery round may end here), the masks
  (``constrain_grads`` after G's backward, ``constrain_weights`` after G's update and the EMA);
* how to name and describe it: ``metric_prefix`` ("" in the final phase, whose numbers are the
  run's; ``ticket_`` before), ``describe()`` for logs and reports;
* its checkpoint state, and whether a resumed config is acceptable (``resume_problem``).

A phase talks back to its host only through ``PhaseHost``: it reads the networks and asks the
host to restart from given weights; it never writes the trainer's fields.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from tuneable_gan.config import Config

TICKET, TRAIN = "ticket", "train"


class PhaseHost(Protocol):
    """What a phase may use of the trainer that runs it."""

    cfg: Config
    device: torch.device
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module

    def restart_phase(self, G_state: dict[str, torch.Tensor],
                      D_state: dict[str, torch.Tensor]) -> None:
        """Start a phase from these weights (the phase's weight constraints applied to G):
        G_ema <- G, fresh optimizers and term state, RNG streams and data sampler as after
        construction, images_seen 0, no best metric yet."""
        ...


class DensePhase:
    """The one phase of a dense run: ``train.steps`` G steps, no masks."""

    stage = TRAIN
    offset = 0
    lead = 0
    metric_prefix = ""

    def __init__(self, host: PhaseHost) -> None:
        self.length = host.cfg.train.steps
        self.step = 0

    @property
    def total(self) -> int:
        """G steps of the whole schedule."""
        return self.length

    @property
    def done(self) -> bool:
        """All ``train.steps`` are run."""
        return self.step >= self.length

    def before_step(self) -> None:
        """Nothing to prepare."""

    def advance(self) -> None:
        """One G iteration done."""
        self.step += 1

    def constrain_grads(self, G: nn.Module) -> None:
        """Dense: every weight trains."""

    def constrain_weights(self, net: nn.Module) -> None:
        """Dense: no weight is held at 0."""

    def describe(self) -> dict[str, Any]:
        """``stage``, ``round`` and ``stage_step`` for logs and reports."""
        return {"stage": self.stage, "round": 0, "stage_step": self.step}

    def resume_problem(self, old: Config) -> str | None:
        """Why a run stored with config ``old`` cannot be resumed with this config (None: it can;
        the caller has checked that only resumable keys differ)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The phase's position."""
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""
        self.step = int(state["step"])

    def close(self) -> None:
        """Nothing held."""
