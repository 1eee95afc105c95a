"""Lottery tickets as one training phase object (docs/methods.md 3.1-3.2).

A trainer with ``sparsity.level > 0`` holds a ``LotteryPhase`` instead of a ``DensePhase``
(``tuneable_gan.phases``); the one training loop, checkpoint cadence and resume path then cover
both stages:

* stage I (``stage == "ticket"``): rounds r = 1..K, K = ``rounds_for(level, per_round)``. Round
  r trains G (masked by round r-1's masks; round 1 dense) and D for ``round_length(cfg)`` G
  steps with the run's own settings except AdvAug (its terms are scheduled for stage II only),
  then prunes ``per_round`` of the surviving conv weights of G by the magnitudes of G or G_ema
  (``sparsity.mask_from``).
* stage II (``stage == "train"``): the ticket (round K's masks) trains for ``train.steps`` G
  steps with AdvAug as configured.

Every phase starts from the same point: G <- init * masks, D <- init (dense), fresh optimizers
and term state, G_ema <- G, and the RNG streams exactly as after the trainer's construction (the
host's ``restart_phase``). So a round is a pure function of (ticket key, r) and stage II of a
trial that found its ticket equals that of a trial that reused it. The prune at the end of a
round happens at the start of the next step (``before_step``), so the state between the two (and
a checkpoint taken there) still holds the round's trained G and G_ema.

Tickets are shared through a ``TicketStore`` under ``ticket_key(cfg)``: before computing a round
the phase takes the key's lock, adopts the highest stored round <= K if it is at or past the
current round (jumping ahead, or straight to stage II), and otherwise computes the round and
stores it (first complete copy wins; a trial that loses the race adopts the stored masks).

Counters: ``step`` counts G steps within the current round or stage II; the host's reported
step is ``offset + step``: -K*L+1 .. 0 over the rounds (L = round length), then 1 .. train.steps.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from torch import nn

from tuneable_gan.config import Config
from tuneable_gan.phases import TICKET, TRAIN, PhaseHost
from tuneable_gan.sparsity import MaskSet, compute_masks, rounds_for, snapshot
from tuneable_gan.tickets import (
    TicketStore,
    default_root,
    round_length,
    ticket_fields,
    ticket_key,
)


class LotteryPhase:
    """Stage I of one trainer and the hand-over to stage II; see the module docstring.

    ``computed`` counts the rounds this trainer trained itself, ``reused`` the rounds it took
    from the store instead (both checkpointed, both reported).
    """

    def __init__(self, host: PhaseHost, store: TicketStore | str | Path | None) -> None:
        cfg = host.cfg
        self.host = host
        if not isinstance(store, TicketStore):
            store = TicketStore(default_root() if store is None else store)
        self.store = store
        self.steps = cfg.train.steps
        self.rounds = rounds_for(cfg.sparsity.level, cfg.sparsity.per_round)
        self.round_length = round_length(cfg)
        self.key = ticket_key(cfg)
        self.fields = ticket_fields(cfg)
        self.init_G = snapshot(host.G)
        self.init_D = snapshot(host.D)
        self.computed = 0
        self.reused = 0
        self.masks: MaskSet | None = None
        self.stage, self.round, self.step = (TICKET, 1, 0) if self.rounds > 0 else (TRAIN, 0, 0)
        self._lock: contextlib.ExitStack | None = None

    # -- where the phase is ---------------------------------------------------------------------

    @property
    def lead(self) -> int:
        """G steps of all K rounds (the schedule before stage II)."""
        return self.rounds * self.round_length

    @property
    def total(self) -> int:
        """G steps of the full schedule (fewer are run where rounds are reused)."""
        return self.lead + self.steps

    @property
    def length(self) -> int:
        """G steps of the current round, or of stage II."""
        return self.round_length if self.stage == TICKET else self.steps

    @property
    def offset(self) -> int:
        """The reported step at the start of the current round (negative) or of stage II (0)."""
        return (self.round - 1) * self.round_length - self.lead if self.stage == TICKET else 0

    @property
    def done(self) -> bool:
        """Stage II has run ``train.steps``."""
        return self.stage == TRAIN and self.step >= self.steps

    @property
    def metric_prefix(self) -> str:
        """Stage-I evaluations describe a round's network, not the ticket: ``ticket_fid`` etc."""
        return "ticket_" if self.stage == TICKET else ""

    def describe(self) -> dict[str, Any]:
        """``stage``, ``round``, ``stage_step`` and the ticket counters, for reports and logs."""
        return {"stage": self.stage, "round": self.round, "stage_step": self.step,
                "rounds_computed": self.computed, "rounds_reused": self.reused}

    def resume_problem(self, old: Config) -> str | None:
        """The round length is part of the ticket: a resume must not change it."""
        if round_length(old) != self.round_length:
            return ("train.steps is the ticket round length of this run (sparsity.round_steps "
                    "is unset), so it cannot change")
        return None

    # -- around a step --------------------------------------------------------------------------

    def before_step(self) -> None:
        """In stage I: finish a completed round, then make sure the round about to be trained is
        ours to compute (lock) or adopt it."""
        if self.stage == TICKET and self.step >= self.round_length:
            self._finish_round()
        if self.stage == TICKET and self._lock is None:
            self._sync()

    def advance(self) -> None:
        """One G iteration done."""
        self.step += 1

    def constrain_grads(self, G: nn.Module) -> None:
        """Pruned weights get no gradient (spectral norm would give them one)."""
        if self.masks is not None:
            self.masks.mask_grads_(G)

    def constrain_weights(self, net: nn.Module) -> None:
        """Pruned weights of G or G_ema back to exactly 0."""
        if self.masks is not None:
            self.masks.apply_(net)

    # -- the stage machine ----------------------------------------------------------------------

    def _sync(self) -> None:
        self._adopt_stored()
        if self.stage != TICKET:
            return
        stack = contextlib.ExitStack()
        # Blocks while another trial computes a round of this key; False after the store's
        # timeout (or without a working flock): then this trial computes the round honestly.
        stack.enter_context(self.store.lock(self.key))
        self._lock = stack
        self._adopt_stored()  # a round that appeared while we waited is adopted, not recomputed
        if self.stage != TICKET:
            self.close()
            return
        if not self.store.rounds(self.key):
            self.store.save(self.key, 0, self._payload(MaskSet.dense(self.host.G)), self.fields)

    def _adopt_stored(self) -> None:
        found = self.store.latest(self.key, self.rounds)
        if found is None or found[0] < self.round:
            return
        k, payload = found
        self.reused += k - self.round + 1
        self._take(payload)
        self._begin(k + 1)

    def _finish_round(self) -> None:
        h = self.host
        masks = compute_masks(h.G, h.G_ema, h.cfg.sparsity.mask_from, self.masks,
                              h.cfg.sparsity.per_round)
        self.computed += 1
        if not self.store.save(self.key, self.round, self._payload(masks), self.fields):
            stored = self.store.load(self.key, self.round)  # another trial's copy came first
            assert stored is not None
            self._take(stored)
        else:
            self.masks = self._on_device(masks)
        self.close()
        self._begin(self.round + 1)

    def _payload(self, masks: MaskSet) -> dict[str, Any]:
        return {"masks": masks.state_dict(), "init_G": self.init_G, "init_D": self.init_D,
                "density": masks.density(), "mask_from": self.host.cfg.sparsity.mask_from}

    def _take(self, payload: dict[str, Any]) -> None:
        """Use a stored ticket: its masks and the init it rewinds to (one ticket per key)."""
        self.init_G, self.init_D = payload["init_G"], payload["init_D"]
        self.masks = self._on_device(MaskSet(payload["masks"]))

    def _on_device(self, masks: MaskSet) -> MaskSet:
        return MaskSet({k: m.to(self.host.device) for k, m in masks.masks.items()})

    def _begin(self, r: int) -> None:
        """Start round ``r`` (stage II when r > K) from init * masks with fresh everything."""
        if r > self.rounds:
            self.stage, self.round = TRAIN, self.rounds
        else:
            self.stage, self.round = TICKET, r
        self.step = 0
        self.host.restart_phase(self.init_G, self.init_D)

    def close(self) -> None:
        """Drop the key's lock if held (idempotent; a trial stopped mid-round must not keep
        it)."""
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.close()

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Stage, round, step and counters always; the init weights in stage I."""
        out: dict[str, Any] = {"stage": self.stage, "round": self.round, "step": self.step,
                               "masks": self.masks.state_dict() if self.masks is not None else {},
                               "computed": self.computed, "reused": self.reused}
        if self.stage == TICKET:
            out.update(init_G=self.init_G, init_D=self.init_D)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of ``state_dict``; the lock is taken again before the next round step."""
        self.close()
        self.stage, self.round = str(state["stage"]), int(state["round"])
        self.step = int(state["step"])
        self.masks = self._on_device(MaskSet(state["masks"])) if state["masks"] else None
        self.computed, self.reused = int(state["computed"]), int(state["reused"])
        if "init_G" in state:
            self.init_G = {k: v.cpu() for k, v in state["init_G"].items()}
            self.init_D = {k: v.cpu() for k, v in state["init_D"].items()}
