"""The two lottery-ticket stages inside one GANTrainer (METHODS.md 3.1-3.2).

A trainer with ``sparsity.level > 0`` runs a sequence of phases, all driven by ``train_step``,
so one training loop, one checkpoint cadence and one resume path cover both stages:

* stage I (``stage == "ticket"``): rounds r = 1..K, K = ``rounds_for(level, per_round)``. Round
  r trains G (masked by round r-1's masks; round 1 dense) and D for ``round_length(cfg)`` G
  steps with the run's own settings except AdvAug (off in stage I), then prunes ``per_round``
  of the surviving conv weights of G by the magnitudes of G or G_ema (``sparsity.mask_from``).
* stage II (``stage == "train"``): the ticket (round K's masks) trains for ``train.steps`` G
  steps with AdvAug as configured. ``trainer.step`` counts stage-II steps only.

Every phase starts from the same point: G <- init * masks, D <- init (dense), fresh optimizers
and regularizer state, G_ema <- G, and the RNG streams (training generator, data sampler, torch's
global RNG) exactly as the trainer had them after construction. So a round is a pure function of
(ticket key, r) and stage II of a trial that found its ticket equals that of a trial that reused
it. The prune at the end of a round happens at the start of the next ``train_step``, so the state
between the two (and a checkpoint taken there) still holds the round's trained G and G_ema.

Tickets are shared through a ``TicketStore`` under ``ticket_key(cfg)``: before computing a round
the trainer takes the key's lock, adopts the highest stored round <= K if it is at or past the
current round (jumping ahead, or straight to stage II), and otherwise computes the round and
stores it (first complete copy wins; a trial that loses the race adopts the stored masks).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tuneable_gan.sparsity import MaskSet, compute_masks, rewind, rounds_for, snapshot
from tuneable_gan.tickets import (
    TicketStore,
    default_root,
    round_length,
    ticket_fields,
    ticket_key,
)

if TYPE_CHECKING:
    from tuneable_gan.trainer import GANTrainer

TICKET, TRAIN = "ticket", "train"


class TicketSearch:
    """Stage I of one trainer and the hand-over to stage II; see the module docstring.

    ``computed`` counts the rounds this trainer trained itself, ``reused`` the rounds it took
    from the store instead (both checkpointed, both reported).
    """

    def __init__(self, trainer: GANTrainer, store: TicketStore | str | Path | None,
                 rng0: torch.Tensor) -> None:
        cfg = trainer.cfg
        self.t = trainer
        if not isinstance(store, TicketStore):
            store = TicketStore(default_root() if store is None else store)
        self.store = store
        self.rounds = rounds_for(cfg.sparsity.level, cfg.sparsity.per_round)
        self.length = round_length(cfg)
        self.key = ticket_key(cfg)
        self.fields = ticket_fields(cfg)
        self.init_G = snapshot(trainer.G)
        self.init_D = snapshot(trainer.D)
        self.rng0 = rng0.clone()
        self.computed = 0
        self.reused = 0
        self._lock: contextlib.ExitStack | None = None
        if self.rounds > 0:
            trainer.stage, trainer.round = TICKET, 1

    # -- progress -------------------------------------------------------------------------------

    @property
    def stage_one_steps(self) -> int:
        """G steps of all K rounds."""
        return self.rounds * self.length

    def progress(self) -> int:
        """G steps on the full schedule (all rounds, then stage II) up to where the trainer is."""
        t = self.t
        if t.stage == TICKET:
            return (t.round - 1) * self.length + t.stage_step
        return self.stage_one_steps + t.step

    # -- the stage machine ----------------------------------------------------------------------

    def before_step(self) -> None:
        """Called by ``train_step`` in stage I before its G iteration: finish a completed round,
        then make sure the round about to be trained is ours to compute (lock) or adopt it."""
        if self.t.stage == TICKET and self.t.stage_step >= self.length:
            self._finish_round()
        if self.t.stage == TICKET and self._lock is None:
            self._sync()

    def _sync(self) -> None:
        self._adopt_stored()
        if self.t.stage != TICKET:
            return
        stack = contextlib.ExitStack()
        # Blocks while another trial computes a round of this key; False after the store's
        # timeout (or without a working flock): then this trial computes the round honestly.
        stack.enter_context(self.store.lock(self.key))
        self._lock = stack
        self._adopt_stored()  # a round that appeared while we waited is adopted, not recomputed
        if self.t.stage != TICKET:
            self.release()
            return
        if not self.store.rounds(self.key):
            self.store.save(self.key, 0, self._payload(MaskSet.dense(self.t.G)), self.fields)

    def _adopt_stored(self) -> None:
        found = self.store.latest(self.key, self.rounds)
        if found is None or found[0] < self.t.round:
            return
        k, payload = found
        self.reused += k - self.t.round + 1
        self._take(payload)
        self._begin(k + 1)

    def _finish_round(self) -> None:
        t = self.t
        masks = compute_masks(t.G, t.G_ema, t.cfg.sparsity.mask_from, t.masks,
                              t.cfg.sparsity.per_round)
        self.computed += 1
        if not self.store.save(self.key, t.round, self._payload(masks), self.fields):
            stored = self.store.load(self.key, t.round)  # another trial's copy came first
            assert stored is not None
            self._take(stored)
        else:
            t.masks = self._on_device(masks)
        self.release()
        self._begin(t.round + 1)

    def _payload(self, masks: MaskSet) -> dict[str, Any]:
        return {"masks": masks.state_dict(), "init_G": self.init_G, "init_D": self.init_D,
                "density": masks.density(), "mask_from": self.t.cfg.sparsity.mask_from}

    def _take(self, payload: dict[str, Any]) -> None:
        """Use a stored ticket: its masks and the init it rewinds to (one ticket per key)."""
        self.init_G, self.init_D = payload["init_G"], payload["init_D"]
        self.t.masks = self._on_device(MaskSet(payload["masks"]))

    def _on_device(self, masks: MaskSet) -> MaskSet:
        return MaskSet({k: m.to(self.t.device) for k, m in masks.masks.items()})

    def _begin(self, r: int) -> None:
        """Start round ``r`` (stage II when r > K) from init * masks with fresh everything."""
        t = self.t
        if r > self.rounds:
            t.stage, t.round = TRAIN, self.rounds
        else:
            t.stage, t.round = TICKET, r
        rewind(t.G, t.D, self.init_G, self.init_D, t.masks or MaskSet.dense(t.G))
        t.restart_phase(self.rng0)

    def release(self) -> None:
        """Drop the key's lock if held (idempotent; also called on close)."""
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.close()

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Stage, round and counters always; the init and the construction RNG in stage I."""
        t = self.t
        out: dict[str, Any] = {"stage": t.stage, "round": t.round, "stage_step": t.stage_step,
                               "masks": t.masks.state_dict() if t.masks is not None else {},
                               "computed": self.computed, "reused": self.reused}
        if t.stage == TICKET:
            out.update(init_G=self.init_G, init_D=self.init_D, rng0=self.rng0)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of ``state_dict``; the lock is taken again before the next round step."""
        self.release()
        t = self.t
        t.stage, t.round = str(state["stage"]), int(state["round"])
        t.stage_step = int(state["stage_step"])
        t.masks = self._on_device(MaskSet(state["masks"])) if state["masks"] else None
        self.computed, self.reused = int(state["computed"]), int(state["reused"])
        if "init_G" in state:
            self.init_G = {k: v.cpu() for k, v in state["init_G"].items()}
            self.init_D = {k: v.cpu() for k, v in state["init_D"].items()}
            self.rng0 = state["rng0"].cpu()
