"""The smoke copy of a sweep: every trial shrunk to about a minute on a laptop.

Exactly: train.steps -> min(steps, 40); eval_every and checkpoint_every -> min(10, steps);
eval.num_samples -> min(n, 200); axes on those four keys are dropped; seeds -> 1; the first two
grid axes keep their first 2 values and any further grid axis its first value (at most 4 grid
cells); num_samples -> 1 (random/grid) or 2 (optuna, or a PBT/PB2 population); ASHA (asha,
seed_asha) grace_period -> 1 (and max_t, if set, -> at most the smoke run's report count);
PBT/PB2 perturbation_interval -> the smoke's eval cadence; a set sparsity.round_steps ->
min(round_steps, the smoke's train.steps). The caps are written into the base as explicit keys
(so no preset, the base's or a rule's, can undo them) and into every rule that sets one of
those keys (capped the same way, a rule's cadence and rounds by its own capped train.steps when
it sets one); rules whose cells the shortened grids lost are dropped (when the copy is built).
Everything else is kept.
"""

from __future__ import annotations

import math
from typing import Any

from tuneable_gan.config import Config
from tuneable_gan.tune.space_parse import (
    ASHA_SCHEDULERS,
    SMOKE_EVAL_SAMPLES,
    SMOKE_EVERY,
    SMOKE_PINNED,
    SMOKE_STEPS,
)
from tuneable_gan.tune.space_pbt import PBT_SCHEDULERS


def smoke_doc(doc: dict[str, Any], base: Config) -> dict[str, Any]:
    """The smoke copy of ``doc`` (a spec's ``to_dict``, changed in place and returned) whose
    base run config is ``base``; named ``{name}-smoke``."""
    steps = min(base.train.steps, SMOKE_STEPS)
    doc["base"].update(_smoke_caps(base.flat(), steps))
    for rule in doc.get("cells", []):
        vals = rule["set"]
        own = min(vals["train.steps"], SMOKE_STEPS) if "train.steps" in vals else steps
        caps = _smoke_caps(vals, own)
        # A rule's shorter run also gets its own (shorter) cadence.
        vals.update({k: v for k, v in caps.items() if k in vals or (
            "train.steps" in vals and v < min(SMOKE_EVERY, steps))})
    space = {k: ax for k, ax in doc["space"].items()
             if k not in SMOKE_PINNED and "seeds" not in ax}
    grids = [k for k, ax in space.items() if "grid" in ax]
    doc["space"] = {k: {"grid": ax["grid"][:2 if grids.index(k) < 2 else 1]}
                    if "grid" in ax else ax for k, ax in space.items()}
    t = doc["tune"]
    name = next(iter(t["scheduler"])) if isinstance(t["scheduler"], dict) else None
    # A population of one never exploits: PBT keeps two.
    t["num_samples"] = 2 if t["search"] == "optuna" or name in PBT_SCHEDULERS else 1
    if name in ASHA_SCHEDULERS:
        asha = t["scheduler"][name]
        asha["grace_period"] = 1
        if "max_t" in asha:
            asha["max_t"] = min(asha["max_t"], math.ceil(steps / min(SMOKE_EVERY, steps)))
    elif name in PBT_SCHEDULERS:  # perturb at every smoke evaluation
        settings = t["scheduler"][name]
        settings["perturbation_interval"] = min(SMOKE_EVERY, steps)
        if "burn_in_period" in settings:
            settings["burn_in_period"] = 0
    doc["name"] = f"{doc['name']}-smoke"
    return doc


def _smoke_caps(values: dict[str, Any], steps: int) -> dict[str, Any]:
    """The smoke's values for a run of ``steps`` (already capped) G steps: train.steps,
    eval_every and checkpoint_every always, eval.num_samples and a set sparsity.round_steps
    when ``values`` (a base's or a rule's) hold them."""
    every = min(SMOKE_EVERY, steps)
    out: dict[str, Any] = {"train.steps": steps, "train.eval_every": every,
                           "train.checkpoint_every": every}
    if "eval.num_samples" in values:
        out["eval.num_samples"] = min(values["eval.num_samples"], SMOKE_EVAL_SAMPLES)
    if values.get("sparsity.round_steps") is not None:  # ticket rounds shrink with the steps
        out["sparsity.round_steps"] = min(values["sparsity.round_steps"], steps)
    return out
