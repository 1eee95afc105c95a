"""Parsing and validation of the search-space YAML sections (used by ``space``).

Every problem found is appended to a list as one line naming the key, so a file with several
mistakes reports them all at once.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from tuneable_gan.config import PRESET_KEY, SECTIONS, Config, flatten, fmt, from_dict, read_yaml
from tuneable_gan.config import valid_keys as run_keys
from tuneable_gan.constants import METRICS, SEED_KEY
from tuneable_gan.errors import ConfigError
from tuneable_gan.tune.space_pbt import PBT_SCHEDULERS, parse_pbt
from tuneable_gan.tune.space_tracking import TrackerSpec, parse_callbacks

KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "seeds")
SAMPLED = ("choice", "uniform", "loguniform", "randint")
TOP_KEYS = ("name", "description", "base", "space", "cells", "baseline", "paper", "tune")
CELL_KEYS = ("when", "set", "source")
TUNE_KEYS = ("metric", "mode", "search", "num_samples", "scheduler", "resources",
             "max_concurrent", "max_failures", "num_to_keep", "storage", "seed", "callbacks")
ASHA_KEYS = ("grace_period", "reduction_factor", "max_t")
# The rung schedulers (same settings): seed_asha judges a configuration by its seeds' mean.
ASHA_SCHEDULERS = ("asha", "seed_asha")
SCHEDULERS = ("fifo", *ASHA_SCHEDULERS, *PBT_SCHEDULERS)
SEARCHES = ("random", "grid", "optuna")
SAMPLE_KEY, TRIAL_INDEX = "__sample__", "__trial_index__"
IMAGE_METRICS = ("fid", "fid_best", "kid", "is_mean")
TOY_METRICS = ("modes_covered", "w1", "w1_best")
SMOKE_STEPS, SMOKE_EVERY, SMOKE_EVAL_SAMPLES = 40, 10, 200
SMOKE_PINNED = ("train.steps", "train.eval_every", "train.checkpoint_every", "eval.num_samples")
# Pairwise checks catch every cross-field rule of the schema; the full product only when small.
# With cell rules, every grid cell is checked while there are at most MAX_COMBOS of them.
MAX_COMBOS = 128


@dataclass(frozen=True)
class SchedulerSpec:
    """``asha`` or ``seed_asha`` (params: grace_period, reduction_factor, optional max_t; see
    ``seed_asha``), ``pbt`` or ``pb2`` (see ``space_pbt``) or ``fifo`` ({}).

    Without max_t, launch uses ``SweepSpec.reports_per_trial()``.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneSpec:
    """The ``tune:`` section, validated, defaults filled, storage absolute (or a URI)."""

    metric: str = "fid"
    mode: str = "min"
    search: str = "random"
    num_samples: int = 1
    scheduler: SchedulerSpec = field(default_factory=lambda: SchedulerSpec("fifo"))
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    max_concurrent: int = 0
    max_failures: int = 0
    num_to_keep: int = 2
    storage: str = "./results"
    seed: int = 0
    callbacks: tuple[TrackerSpec, ...] = ()  # experiment trackers (``space_tracking``)



def parse_base(raw: Any, base_dir: Path,
               problems: list[str]) -> tuple[Config | None, dict[str, Any]]:
    """(the base resolved on its own, the base document): the document is the dotted keys as
    written, values normalised by the schema, with its ``preset`` (if any) unexpanded."""
    try:
        if isinstance(raw, str):
            doc = flatten(read_yaml(base_dir / Path(raw).expanduser()))
        elif raw is None or isinstance(raw, dict):
            doc = flatten(raw or {})
        else:
            problems.append("base must be a mapping of run-config keys or a path to a "
                            f"run-config YAML, got {type(raw).__name__}")
            return None, {}
        cfg = from_dict(doc)
    except ConfigError as e:
        problems += [f"base: {p}" for p in e.problems]
        return None, {}
    flat = cfg.flat()
    # eval.is_ is accepted for eval.is; the document keeps the schema's spelling.
    norm = {k if k in flat else k.rstrip("_"): v for k, v in doc.items()}
    return cfg, {k: v if k == PRESET_KEY else flat[k] for k, v in norm.items()}


def parse_tune(raw: Any, base: Config | None, problems: list[str]) -> TuneSpec:
    if not isinstance(raw, dict):
        if raw is not None:
            problems.append(f"tune must be a mapping, got {type(raw).__name__}")
        raw = {}
    problems += [f"tune.{k}: unknown key{did_you_mean(str(k), TUNE_KEYS, 'tune.')}"
                 for k in raw if k not in TUNE_KEYS]
    d = TuneSpec()
    out: dict[str, Any] = {}
    for key, choices in (("mode", ("min", "max")), ("search", SEARCHES)):
        out[key] = raw.get(key, getattr(d, key))
        if out[key] not in choices:
            problems.append(f"tune.{key} must be one of {', '.join(choices)}; "
                            f"got {fmt(out[key])}")
            out[key] = getattr(d, key)
    zero = _is_int(raw.get("num_samples")) and raw["num_samples"] == 0
    if zero:
        problems.append("space expands to zero trials (tune.num_samples=0)")
    out["num_samples"] = 1 if zero else _int(raw, "num_samples", 1, 1, problems)
    out["max_concurrent"] = _int(raw, "max_concurrent", 0, 0, problems, " (0 = unlimited)")
    out["max_failures"] = _int(raw, "max_failures", 0, -1, problems, " (-1 = retry forever)")
    out["num_to_keep"] = _int(raw, "num_to_keep", 2, 1, problems)
    out["seed"] = _int(raw, "seed", 0, 0, problems)
    out["scheduler"] = _parse_scheduler(raw.get("scheduler", "fifo"), problems)
    out["resources"] = _parse_resources(raw.get("resources", {}), problems)
    out["callbacks"] = parse_callbacks(raw.get("callbacks"), problems)
    storage = raw.get("storage", d.storage)
    if not isinstance(storage, str) or not storage.strip():
        problems.append(f"tune.storage must be a path or URI, got {fmt(storage)}")
        storage = d.storage
    # A URI goes to pyarrow as is; Ray rejects relative local paths (docs/ray.md pitfall 13).
    is_uri = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", storage)
    out["storage"] = storage if is_uri else os.path.abspath(os.path.expanduser(storage))
    out["metric"] = metric = raw.get("metric", "fid")
    if not isinstance(metric, str) or metric not in METRICS:
        hint = did_you_mean(str(metric), METRICS)
        problems.append(f"tune.metric: unknown metric {fmt(metric)}{hint}"
                        f"; reported: {', '.join(METRICS)}")
    elif base is not None:
        problems += _metric_problems(metric, out["mode"], base)
    return TuneSpec(**out)


def _metric_problems(metric: str, mode: str, base: Config) -> list[str]:
    # A metric no trial reports makes every trial error at its first report.
    toy, out = base.data.name == "toy2pt", []
    if toy and metric in IMAGE_METRICS:
        out.append(f"tune.metric={metric} is not reported for data.name=toy2pt "
                   "(use modes_covered or w1)")
    if not toy and metric in TOY_METRICS:
        out.append(f"tune.metric={metric} is only reported for data.name=toy2pt (use fid)")
    for name, on in (("kid", base.eval.kid), ("is_mean", base.eval.is_)):
        if metric == name and not on and not toy:
            flag = "eval.kid" if name == "kid" else "eval.is"
            out.append(f"tune.metric={name} needs {flag}: true in base")
    better = METRICS[metric]
    if better and mode != better:
        # The wrong direction makes ASHA stop the best trials: never what anyone wants.
        out.append(f"tune.mode={mode} but {metric} is better when "
                   f"{'lower' if better == 'min' else 'higher'} (use mode: {better})")
    return out


def _parse_scheduler(raw: Any, problems: list[str]) -> SchedulerSpec:
    name, params = (raw, {}) if isinstance(raw, str) else (
        next(iter(raw.items())) if isinstance(raw, dict) and len(raw) == 1 else (None, {}))
    if name not in SCHEDULERS or not isinstance(params or {}, dict):
        problems.append("tune.scheduler must be fifo, asha, seed_asha, pbt or pb2 (e.g. "
                        f"{{asha: {{grace_period: 2}}}}); got {fmt(raw)}")
        return SchedulerSpec("fifo")
    params = dict(params or {})
    if name == "fifo":
        if params:
            problems.append(f"tune.scheduler.fifo takes no settings, got {fmt(params)}")
        return SchedulerSpec("fifo")
    if name in PBT_SCHEDULERS:
        return SchedulerSpec(name, parse_pbt(name, params, problems))
    return SchedulerSpec(name, _parse_asha(params, f"tune.scheduler.{name}.", problems))


def _parse_asha(params: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """The settings asha and seed_asha share: grace_period, reduction_factor, optional max_t."""
    problems += [f"{where}{k}: unknown key{did_you_mean(str(k), ASHA_KEYS, where)}"
                 for k in params if k not in ASHA_KEYS]
    out: dict[str, Any] = {"grace_period": _int(params, "grace_period", 1, 1, problems, "",
                                                where)}
    rf = _number(params.get("reduction_factor", 4))
    if rf is None or rf <= 1:
        problems.append(f"{where}reduction_factor must be a number > 1, "
                        f"got {fmt(params.get('reduction_factor'))}")
        rf = 4
    out["reduction_factor"] = int(rf) if float(rf).is_integer() else rf
    if "max_t" in params:
        out["max_t"] = _int(params, "max_t", 1, 1, problems, "", where)
        if out["max_t"] < out["grace_period"]:
            problems.append(f"{where}grace_period ({out['grace_period']}) must be <= max_t "
                            f"({out['max_t']})")
    return out


def _parse_resources(raw: Any, problems: list[str]) -> dict[str, float]:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        problems.append(f"tune.resources must be a mapping like {{cpu: 1}}, got {fmt(raw)}")
        raw = {}
    problems += [f"tune.resources.{k}: unknown key (valid: cpu, gpu)"
                 for k in raw if k not in ("cpu", "gpu")]
    out = {}
    for key, default, op in (("cpu", 1.0, ">"), ("gpu", 0.0, ">=")):
        v = _number(raw.get(key, default))
        if v is None or (v <= 0 if op == ">" else v < 0):
            problems.append(f"tune.resources.{key} must be {op} 0, got {fmt(raw.get(key))}")
            v = default
        out[key] = v
    return out


def parse_space(raw: Any, base: Config | None, search: str,
                 problems: list[str]) -> tuple[dict[str, dict[str, Any]], int]:
    if not isinstance(raw, dict):
        if raw is not None:
            problems.append("space must be a mapping of dotted run-config keys to domains, "
                            f"got {type(raw).__name__}")
        raw = {}
    axes: dict[str, dict[str, Any]] = {}
    seeds, keys = 1, set(run_keys())
    for key, dom in flatten(raw).items():
        where = f"space.{key}"
        if key not in keys:
            problems.append(f"{where}: unknown key{did_you_mean(key, run_keys())}")
            continue
        if not isinstance(dom, dict) or not dom:
            problems.append(f"{where}: expected a mapping like {{grid: [...]}}, got {fmt(dom)}")
            continue
        unknown = [str(k) for k in dom if k not in KINDS]
        if unknown:
            hint = did_you_mean(unknown[0], KINDS)
            problems.append(f"{where}: unknown domain {unknown[0]!r}{hint}")
            continue
        if len(dom) > 1:
            problems.append(f"{where}: give exactly one of {', '.join(KINDS)}; "
                            f"got {', '.join(dom)}")
            continue
        kind, arg = next(iter(dom.items()))
        n = len(problems)
        value = _parse_domain(key, kind, arg, base, problems)
        if len(problems) > n:
            continue
        if kind == "seeds":
            seeds = value
        elif search == "grid" and kind != "grid":
            problems.append(f"{where}: search: grid takes only grid and seeds axes, got {kind} "
                            "(use search: random)")
        elif search == "optuna" and kind == "grid":
            problems.append(f"{where}: search: optuna cannot take a grid axis (use choice)")
        elif search == "optuna" and kind == "choice" and not all(
                v is None or isinstance(v, (bool, int, float, str)) for v in value):
            problems.append(f"{where}: search: optuna takes only scalar choice values")
        else:
            axes[key] = {kind: value}
    return axes, seeds


def _parse_domain(key: str, kind: str, arg: Any, base: Config | None,
                  problems: list[str]) -> Any:
    where = f"space.{key}"
    if kind == "seeds":
        if key != SEED_KEY:
            problems.append(f"{where}: seeds only applies to train.seed (use grid)")
        elif not _is_int(arg) or arg < 1:
            problems.append(f"{where}: seeds must be an integer >= 1, got {fmt(arg)}")
        return arg
    if kind in ("grid", "choice"):
        if not isinstance(arg, list):
            problems.append(f"{where}: {kind} must be a list of values, got {fmt(arg)}")
            return None
        if not arg:
            problems.append(f"{where}: empty {kind}")
        values: list[Any] = []
        for v in arg:
            v = _apply(base, key, v, f"{where}: {kind} value {fmt(v)}", problems)
            if v in values:
                problems.append(f"{where}: {kind} lists {fmt(v)} twice")
            values.append(v)
        return values
    typ = _field_type(key)
    if typ not in (int, float):
        problems.append(f"{where}: {kind} needs a numeric key; {key} is not (use choice or grid)")
        return None
    if typ is int and kind != "randint":
        problems.append(f"{where}: {kind} samples floats but {key} is an integer (use randint)")
        return None
    ok = isinstance(arg, list) and len(arg) == 2
    lo, hi = (_number(arg[0]), _number(arg[1])) if ok else (None, None)
    if lo is None or hi is None:
        problems.append(f"{where}: {kind} needs [lo, hi], got {fmt(arg)}")
        return None
    if kind == "randint" and not (_is_int(arg[0]) and _is_int(arg[1]) and lo < hi):
        problems.append(f"{where}: randint bounds must be integers lo < hi (hi excluded), "
                        f"got {fmt(arg)}")
        return None
    if kind in ("uniform", "loguniform") and not ((lo > 0 or kind == "uniform") and lo < hi):
        rule = "0 < lo < hi" if kind == "loguniform" else "lo < hi"
        problems.append(f"{where}: {kind} bounds must be {rule}, got {fmt(arg)}")
        return None
    bounds = [int(lo), int(hi)] if kind == "randint" else [lo, hi]
    # randint never draws hi itself, so hi - 1 is the largest value a trial can get.
    for b in (bounds[0], bounds[1] - 1 if kind == "randint" else bounds[1]):
        _apply(base, key, b, f"{where}: {kind} bound {fmt(b)}", problems)
    return bounds


def _apply(base: Config | None, key: str, value: Any, where: str, problems: list[str]) -> Any:
    """``value`` normalised by the schema after applying it to ``base``; problems recorded."""
    if base is None:  # the base problems are reported already
        return value
    try:
        return from_dict(base.flat() | {key: value}).flat()[key]
    except ConfigError as e:
        problems += [f"{where}: {p}" for p in e.problems]
        return value


def probe_values(ax: dict[str, Any]) -> list[Any]:
    kind, arg = next(iter(ax.items()))
    if kind == "randint":
        return [arg[0], arg[1] - 1]
    return list(arg)


def check_combinations(base: Config, axes: dict[str, dict[str, Any]],
                        problems: list[str]) -> None:
    """Cross-field rules (same_class needs conditional ...) across axes: every pair of axes,
    then the full product of their values and bounds when it is small."""
    probes = {k: probe_values(ax) for k, ax in axes.items()}
    seen: set[str] = set()
    flat = base.flat()

    def check(combo: dict[str, Any]) -> None:
        try:
            from_dict(flat | combo)
        except ConfigError as e:
            for p in e.problems:
                if p not in seen:
                    seen.add(p)
                    what = " with ".join(f"{k}={fmt(v)}" for k, v in combo.items())
                    problems.append(f"space: {what}: {p}")

    for a, b in itertools.combinations(probes, 2):
        for va, vb in itertools.product(probes[a], probes[b]):
            check({a: va, b: vb})
    if not seen and len(probes) > 2 and math.prod(map(len, probes.values())) <= MAX_COMBOS:
        for values in itertools.product(*probes.values()):
            check(dict(zip(probes, values)))


def domain_of(kind: str, arg: Any) -> Any:
    from ray import tune  # lazy: loading and validating a space must not pay for Ray

    if kind in ("grid", "choice"):
        return (tune.grid_search if kind == "grid" else tune.choice)(list(arg))
    return {"uniform": tune.uniform, "loguniform": tune.loguniform,
            "randint": tune.randint}[kind](*arg)


def kind_of(ax: dict[str, Any]) -> str:
    return next(iter(ax))


def _field_type(key: str) -> Any:
    sec, _, name = key.partition(".")
    typ = get_type_hints(SECTIONS[sec])["is_" if name == "is" else name]
    if get_origin(typ) is Union:
        typ = next(a for a in get_args(typ) if a is not type(None))
    return typ


def set_nested(d: dict[str, Any], path: list[str], value: Any) -> None:
    for p in path[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[path[-1]] = value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> float | None:
    # PyYAML (YAML 1.1) reads 1e5 as a string; the run-config schema accepts it, so do we.
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _int(raw: dict[str, Any], key: str, default: int, lo: int, problems: list[str],
         note: str = "", where: str = "tune.") -> int:
    v = raw.get(key, default)
    if not _is_int(v) or v < lo:
        problems.append(f"{where}{key} must be an integer >= {lo}{note}, got {fmt(v)}")
        return default
    return v


def did_you_mean(word: str, options: Any, prefix: str = "") -> str:
    lower = {str(o).lower(): o for o in options}
    close = [lower[c] for c in difflib.get_close_matches(word.lower(), lower, n=1, cutoff=0.6)]
    close = close or [o for o in options if str(o).startswith(word)][:1]
    if not close and "." in word:
        tail = word.rsplit(".", 1)[-1]
        close = [o for o in options if o.rsplit(".", 1)[-1] == tail][:1]
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


