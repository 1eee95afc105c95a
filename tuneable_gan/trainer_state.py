"""A trainer's checkpoint state: what ``GANTrainer.state_dict`` holds, how a state is checked
and loaded into a trainer, and how a PBT clone folds its random streams."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import torch

from tuneable_gan.checkpoint import trainer_state_problem
from tuneable_gan.errors import CheckpointError

if TYPE_CHECKING:
    from tuneable_gan.trainer import GANTrainer


def state_of(t: GANTrainer) -> dict[str, Any]:
    """Everything an identical continuation of ``t`` needs (tensors and plain containers)."""
    return {
        "step": t.step,
        "images_seen": t.images_seen,
        "G": t.G.state_dict(),
        "D": t.D.state_dict(),
        "G_ema": t.G_ema.state_dict(),
        "opt_g": t.opt_g.state_dict(),
        "opt_d": t.opt_d.state_dict(),
        "terms": {term.name: term.state_dict() for term in t._all_terms()},
        "sampler": t.sampler.state_dict(),
        "rng": {"train": t.gen.get_state(), "torch": torch.get_rng_state()},
        "best": dict(t.best),
        "phase": t.phase.state_dict(),
    }


def load_into(t: GANTrainer, state: dict[str, Any]) -> None:
    """Check ``state`` against ``t``'s own (CheckpointError naming the first bad key, ``t``
    untouched) and load it: phase, counters, nets, optimizers, terms, sampler, streams, best."""
    problem = trainer_state_problem(state_of(t), state, t.opt_g, t.opt_d)
    if problem:
        raise CheckpointError(f"state does not fit this run: {problem}")
    t.phase.load_state_dict(state["phase"])
    t.images_seen = int(state["images_seen"])
    t.G.load_state_dict(state["G"])
    t.D.load_state_dict(state["D"])
    t.G_ema.load_state_dict(state["G_ema"])
    t.opt_g.load_state_dict(state["opt_g"])
    t.opt_d.load_state_dict(state["opt_d"])
    for term in t._all_terms():
        term.load_state_dict(state["terms"][term.name])
    t.sampler.load_state_dict(state["sampler"])
    t.gen.set_state(state["rng"]["train"].cpu())
    torch.set_rng_state(state["rng"]["torch"].cpu())
    t.best = dict(state["best"])


def fold_rng(gen: torch.Generator, salt: int) -> None:
    """Re-seed the run's stream ``gen`` and torch's global one from their states and ``salt``
    (< 2**63), so two PBT clones of one donor draw differently."""
    digest = hashlib.sha256(gen.get_state().numpy().tobytes()
                            + torch.get_rng_state().numpy().tobytes()
                            + salt.to_bytes(8, "little")).digest()
    gen.manual_seed(int.from_bytes(digest[:8], "little"))
    torch.manual_seed(int.from_bytes(digest[8:16], "little"))
