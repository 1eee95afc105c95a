"""fANOVA importance of a sweep's factors, and whether its design can apportion variance at
all (enough cells; no factor its cells determine, as a value drawn once per cell is)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis.stats import _sort_key, factors_of, plain_value, same_value, trial_values
from tuneable_gan.constants import direction


def design_problem(use: pd.DataFrame, varying: list[str], min_cells: int,
                   axes: dict[str, Any] | None = None) -> str:
    """Why the design of ``use`` (usable trials) cannot apportion variance among ``varying``
    factors ("" when it can): fewer than ``min_cells`` distinct cells, or a factor that the
    others determine (drawn once per cell: its effect cannot be told from theirs). Sampled
    axes are named first: they are the ones a grid ties to its cells."""
    def combos(keys: list[str]) -> int:
        return len({tuple(repr(plain_value(v)) for v in row) for row in
                    use[keys].itertuples(index=False)}) if keys else 1

    n_cells = combos(varying)
    if n_cells < min_cells:
        return (f"needs at least {min_cells} distinct cells among the usable trials, has "
                f"{n_cells}: too few to apportion variance")
    for f in sorted(varying, key=lambda f: "grid" in (axes or {}).get(f, {})):
        others = [g for g in varying if g != f]
        if combos(others) == n_cells:
            return (f"{f} is confounded with {', '.join(others)}: each of their cells has one "
                    f"{f} value (drawn once per cell), so its effect cannot be separated")
    return ""


def importance(df: pd.DataFrame, metric: str = "fid", *, at_step: int | None = None,
               factors: Sequence[str] | None = None, seed: int = 0,
               min_trials: int = 4, min_cells: int = 6) -> tuple[dict[str, float], str]:
    """fANOVA importance of the swept factors for ``metric`` (one value per usable trial),
    from an in-memory Optuna study whose distributions match the axes. Returns
    (importances, "") or ({}, the reason it was skipped): too few trials or cells, or a
    factor confounded with the others (``design_problem``)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.importance import FanovaImportanceEvaluator

    factors = factors_of(df, factors)
    tv = trial_values(df, [metric], at_step=at_step, factors=factors)
    use = tv[tv["usable"] & tv[metric].notna()]
    axes = df.attrs.get("axes", {})
    varying = [f for f in factors if len({plain_value(v) for v in use[f]}) >= 2]
    if len(use) < min_trials:
        return {}, f"needs at least {min_trials} usable trials, has {len(use)}"
    if len(varying) < 2:
        return {}, ("needs at least two swept factors with two or more distinct values "
                    f"among the usable trials (have: {', '.join(varying) or 'none'})")
    problem = design_problem(use, varying, min_cells, axes)
    if problem:
        return {}, problem
    dists: dict[str, Any] = {}
    for f in varying:
        kind, arg = next(iter(axes.get(f, {"choice": None}).items()))
        seen = sorted({plain_value(v) for v in use[f]}, key=lambda v: _sort_key((v,)))
        if kind in ("uniform", "loguniform"):
            dists[f] = FloatDistribution(min(arg[0], *seen), max(arg[1], *seen),
                                         log=kind == "loguniform")
        elif kind == "randint":
            dists[f] = IntDistribution(min(arg[0], *seen), max(arg[1] - 1, *seen))
        else:  # grid / choice: categorical over the listed values (and any seen beyond them)
            listed = [plain_value(v) for v in (arg or [])]
            dists[f] = CategoricalDistribution(
                listed + [v for v in seen if not any(same_value(v, w) for w in listed)])
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction="maximize" if direction(metric) == "max"
                                else "minimize")
    for rec in use.to_dict("records"):
        params = {f: plain_value(rec[f]) for f in varying}
        for f, d in dists.items():  # the choice object itself, so 0 and 0.0 cannot differ
            if isinstance(d, CategoricalDistribution):
                params[f] = next(c for c in d.choices if same_value(c, params[f]))
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=float(rec[metric])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed), params=varying)
    return {k: float(v) for k, v in imp.items()}, ""
