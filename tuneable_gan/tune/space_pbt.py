"""The ``tune.scheduler: {pbt: ...}`` and ``{pb2: ...}`` settings, parsed and checked (no Ray).

Population-based training mutates a trial's hyperparameters while it trains: a trial in the
bottom quantile at a perturbation clones a top trial's checkpoint and continues it with
perturbed values. Only keys the trainer reads afresh from its config after loading a
checkpoint may mutate (``MUTABLE``): the learning rates (re-applied to the loaded optimizers),
the regularization strength and its EMA factor, and AdvAug's step size. Settings::

    scheduler:
      pbt:
        perturbation_interval: 500      # G steps (the trials' ``step``), a multiple of
                                        # train.eval_every: each perturbation meets a report
        burn_in_period: 0               # G steps before the first perturbation
        quantile_fraction: 0.25         # bottom / top share of the population
        resample_probability: 0.25      # pbt only: draw anew instead of x1.2 / x0.8
        synch: false                    # true: rank the whole population at each point
        mutations:                      # key -> {uniform|loguniform: [lo, hi]} | {choice: [..]}
          optim.g_lr: {loguniform: [1.0e-5, 1.0e-3]}
          regularizer.weight: {loguniform: [1.0, 1.0e+4]}

``pb2`` takes the same settings but no ``burn_in_period`` or ``resample_probability``, and
bounds only (``{uniform: [lo, hi]}`` or ``[lo, hi]``): its GP bandit explores a box. It needs
GPy.

``synch: false`` (Ray's default) ranks a trial when it reports, against the last scores of the
other live trials, whatever step those came from. ``synch: true`` pauses each trial at the
perturbation point until every live trial has reached it and ranks them all at once: fairer when
the population is larger than the slots that run it, and then the bottom quantile is exploited
at every point. Seen with ``synch: false`` (4 trials of 6 steps, 2 slots): 2 runs of 48
exploited no trial, and in one run two clones, restored from step-2 checkpoints, were
ranked again at step 4 against older scores and cloned again: 139 exploits in all.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from tuneable_gan.config import fmt

PBT_SCHEDULERS = ("pbt", "pb2")
MUTABLE = ("optim.g_lr", "optim.d_lr", "regularizer.weight", "regularizer.ema",
           "augment.advaug_step")
PBT_KEYS = ("perturbation_interval", "burn_in_period", "quantile_fraction",
            "resample_probability", "synch", "mutations")
# Ray's PB2 takes neither a resampling probability nor a burn-in period.
PB2_KEYS = tuple(k for k in PBT_KEYS if k not in ("resample_probability", "burn_in_period"))
MUTATION_KINDS = {"pbt": ("uniform", "loguniform", "choice"), "pb2": ("uniform",)}


def parse_pbt(name: str, params: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The checked settings of ``pbt`` or ``pb2``; each problem one line naming the key."""
    where = f"tune.scheduler.{name}."
    keys = PBT_KEYS if name == "pbt" else PB2_KEYS
    problems += [f"{where}{k}: unknown key (valid: {', '.join(keys)})"
                 for k in params if k not in keys]
    out: dict[str, Any] = {}
    interval = params.get("perturbation_interval")
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        problems.append(f"{where}perturbation_interval must be an integer >= 1 (G steps), got "
                        f"{fmt(interval)}")
        interval = 1
    out["perturbation_interval"] = interval
    if name == "pbt":
        burn = params.get("burn_in_period", 0)
        if not isinstance(burn, int) or isinstance(burn, bool) or burn < 0:
            problems.append(f"{where}burn_in_period must be an integer >= 0 (G steps), got "
                            f"{fmt(burn)}")
            burn = 0
        out["burn_in_period"] = burn
    q = params.get("quantile_fraction", 0.25)
    if not _is_number(q) or not 0 < q <= 0.5:
        problems.append(f"{where}quantile_fraction must be in (0, 0.5], got {fmt(q)}")
        q = 0.25
    out["quantile_fraction"] = float(q)
    if name == "pbt":
        r = params.get("resample_probability", 0.25)
        if not _is_number(r) or not 0 <= r <= 1:
            problems.append(f"{where}resample_probability must be in [0, 1], got {fmt(r)}")
            r = 0.25
        out["resample_probability"] = float(r)
    synch = params.get("synch", False)
    if not isinstance(synch, bool):
        problems.append(f"{where}synch must be true or false, got {fmt(synch)}")
        synch = False
    out["synch"] = synch
    out["mutations"] = _mutations(name, params.get("mutations"), where, problems)
    if name == "pb2" and importlib.util.find_spec("GPy") is None:
        problems.append("tune.scheduler=pb2 needs GPy, which is not installed "
                        "(pip install 'tuneable-gan[pb2]'), or use pbt")
    return out


def pbt_problems(name: str, params: dict[str, Any], eval_every: list[int]) -> list[str]:
    """Sweep-level checks: every trial reports (and checkpoints) at each perturbation, so the
    interval must be a multiple of every ``train.eval_every`` a trial may have."""
    interval = params.get("perturbation_interval", 1)
    bad = sorted({e for e in eval_every if e > 0 and interval % e})
    if not bad:
        return []
    return [f"tune.scheduler.{name}.perturbation_interval ({interval}) must be a multiple of "
            f"train.eval_every ({', '.join(map(str, bad))}): a trial reports, and PBT "
            "perturbs, only at evaluations"]


def _mutations(name: str, raw: Any, where: str, problems: list[str]) -> dict[str, Any]:
    kinds = MUTATION_KINDS[name]
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}mutations must map at least one of {', '.join(MUTABLE)} to "
                        f"a domain ({' | '.join(kinds)}), got {fmt(raw)}")
        return {}
    out: dict[str, Any] = {}
    for key, dom in raw.items():
        at = f"{where}mutations.{key}"
        if key not in MUTABLE:
            problems.append(f"{at}: this key may not mutate during training (mutable: "
                            f"{', '.join(MUTABLE)})")
            continue
        if name == "pb2" and isinstance(dom, list):
            dom = {"uniform": dom}
        kind, arg = next(iter(dom.items())) if isinstance(dom, dict) and len(dom) == 1 else (
            None, None)
        if kind not in kinds:
            problems.append(f"{at} must be one of {' | '.join(f'{{{k}: ...}}' for k in kinds)},"
                            f" got {fmt(dom)}")
            continue
        if kind == "choice":
            if not isinstance(arg, list) or len(arg) < 2 or not all(map(_is_number, arg)):
                problems.append(f"{at}.choice must list at least two numbers, got {fmt(arg)}")
                continue
            out[key] = {"choice": [float(v) for v in arg]}
            continue
        if not (isinstance(arg, list) and len(arg) == 2 and all(map(_is_number, arg))):
            problems.append(f"{at}.{kind} must be [low, high], got {fmt(arg)}")
            continue
        lo, hi = float(arg[0]), float(arg[1])
        if not lo < hi:
            problems.append(f"{at}.{kind}: low ({fmt(arg[0])}) must be < high ({fmt(arg[1])})")
            continue
        if kind == "loguniform" and lo <= 0:
            problems.append(f"{at}.loguniform: low must be > 0, got {fmt(arg[0])}")
            continue
        out[key] = {kind: [lo, hi]}
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
