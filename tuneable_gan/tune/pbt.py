"""Ray's PopulationBasedTraining and PB2 as a sweep uses them (settings: ``space_pbt``).

Timed in G steps (``time_attr="step"``). Two changes to Ray's schedulers: a trial's final report
(``step`` at its ``train.steps``) is never perturbed, and a PBT perturbation stays within the
space's bounds (``Clip``; seen: a d_lr of 1.14e-3 from 9.5e-4 x 1.2 with a bound of 1e-3).
At a final report Ray's PBT would exploit a bottom trial too, restart it from the donor's
checkpoint, let it train to the end again and judge it again: seen in a two-trial smoke run,
ten such cycles of one trial at its last step.
What a clone does after an exploit (new values in force, folded random streams, lineage) is
the trainable's part (``trainable``).
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler


class _NoFinalPerturbation:
    """Mixin: CONTINUE (no perturbation) on a trial's final report."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        steps = result.get("train.steps")
        if isinstance(steps, (int, float)) and result.get("step", 0) >= steps:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]


class PBT(_NoFinalPerturbation, PopulationBasedTraining):
    """Ray's PopulationBasedTraining that leaves a trial's final report alone."""


class Clip:
    """PBT's ``custom_explore_fn``: Ray perturbs a continuous value by x1.2 / x0.8 without
    looking at its domain, so a value near a bound leaves the space's bounds; put it back."""

    def __init__(self, bounds: dict[str, tuple[float, float]]) -> None:
        self.bounds = dict(bounds)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, (lo, hi) in self.bounds.items():
            if key in config:
                config[key] = min(max(float(config[key]), lo), hi)
        return config


def population_based(name: str, p: dict[str, Any]) -> TrialScheduler:
    """PBT or PB2 over ``p`` (``space_pbt.parse_pbt``'s settings)."""
    common = {"time_attr": "step", "perturbation_interval": p["perturbation_interval"],
              "quantile_fraction": p["quantile_fraction"], "synch": p["synch"],
              "log_config": True,
              "require_attrs": True}
    muts = p["mutations"]
    if name == "pb2":
        from ray.tune.schedulers.pb2 import PB2 as RayPB2  # needs GPy: checked at load

        class PB2(_NoFinalPerturbation, RayPB2):
            """Ray's PB2 that leaves a trial's final report alone."""

        return PB2(hyperparam_bounds={k: list(d["uniform"]) for k, d in muts.items()}, **common)
    domains = {"uniform": tune.uniform, "loguniform": tune.loguniform}
    bounds = {k: tuple(v) for k, d in muts.items() for kind, v in d.items() if kind != "choice"}
    return PBT(hyperparam_mutations={
        k: list(d["choice"]) if "choice" in d else domains[kind](*d[kind])
        for k, d in muts.items() for kind in d},
        resample_probability=p["resample_probability"], burn_in_period=p["burn_in_period"],
        custom_explore_fn=Clip(bounds), **common)
