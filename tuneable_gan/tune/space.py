"""Search-space YAML -> a validated ``SweepSpec`` -> Tune ``param_space``.

A space file has ``name``, ``description``, ``base`` (a run config, inline or a path relative to
the file), ``space`` (dotted run-config key -> one domain) and ``tune`` (metric, search,
scheduler, resources, storage ...). Domains: ``grid: [..]``, ``choice: [..]``,
``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``randint: [lo, hi)`` and, on ``train.seed``
only, ``seeds: N``. Every value and bound is checked by building a run config from the base, so
a sweep that loads cannot fail on its config in the middle of the night.

Semantics worth knowing:

* Seeds are ``base.train.seed + 0 .. N-1`` (0..N-1 with the default base) and are replicates:
  the seeds of one configuration share its sampled values. Tune's random search would draw
  fresh values for every seed (to Tune a seed is one more grid axis). So for ``search: random``
  each grid cell gets ``num_samples`` draws, as in Tune, but drawn by ``TiedSample`` from
  (``tune.seed``, the ``__sample__`` grid index, the cell's non-seed grid values, the key), and
  shared by the cell's seeds; Tune then gets ``num_samples=spec.tuner_num_samples()`` (1).
* ``search: optuna``: ``param_space`` holds the sampled axes only; launch wraps OptunaSearch in
  ``Repeater(repeat=seeds)`` and passes ``tuner_num_samples()`` (num_samples x seeds);
  ``trial_config`` maps Repeater's ``__trial_index__`` to the seed.
* ``tune.num_samples`` counts sampled configurations per grid cell; ``expected_trials`` = grid
  cells x num_samples x seeds (optuna: num_samples x seeds).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from tuneable_gan.config import SECTIONS, Config, flatten, from_dict, parse_override, read_yaml
from tuneable_gan.config import valid_keys as run_keys
from tuneable_gan.errors import ConfigError

KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "seeds")
SAMPLED = ("choice", "uniform", "loguniform", "randint")
TOP_KEYS = ("name", "description", "base", "space", "tune")
TUNE_KEYS = ("metric", "mode", "search", "num_samples", "scheduler", "resources",
             "max_concurrent", "max_failures", "num_to_keep", "storage", "seed")
ASHA_KEYS = ("grace_period", "reduction_factor", "max_t")
SEARCHES = ("random", "grid", "optuna")
SEED_KEY, SAMPLE_KEY, TRIAL_INDEX = "train.seed", "__sample__", "__trial_index__"
# What a trial reports (DESIGN.md) and which way is better; extend when the trainable adds one.
METRICS: dict[str, str | None] = {
    "fid": "min", "kid": "min", "is_mean": "max", "modes_covered": "max", "w1": "min",
    "dig": None, "grad_norm_real": None, "grad_norm_fake": None, "d_loss": None,
    "g_loss": None, "reg_loss": None, "sparsity": None, "steps_per_s": "max", "step": None,
    "images_seen": None}
IMAGE_METRICS, TOY_METRICS = ("fid", "kid", "is_mean"), ("modes_covered", "w1")
SMOKE_STEPS, SMOKE_EVERY, SMOKE_EVAL_SAMPLES = 40, 10, 200
SMOKE_PINNED = ("train.steps", "train.eval_every", "train.checkpoint_every", "eval.num_samples")
# Pairwise checks catch every cross-field rule of the schema; the full product only when small.
MAX_COMBOS = 128


@dataclass(frozen=True)
class SchedulerSpec:
    """``asha`` (params: grace_period, reduction_factor, optional max_t) or ``fifo`` ({}).

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


@dataclass(frozen=True)
class TiedSample:
    """One sampled axis of a random search (a ``tune.sample_from`` function). Its value is a
    pure function of (seed, ``__sample__`` index, the values of ``cell`` keys, key): the seeds
    of a grid cell share it, other cells and samples get their own, and a restore redraws it."""

    key: str
    kind: str
    args: tuple[Any, ...]
    seed: int = 0
    cell: tuple[str, ...] = ()

    def __call__(self, config: dict[str, Any]) -> Any:
        # Tune 2.60 hands the function the whole experiment spec, the trial config under
        # "config"; expand_grid hands it the params. Accept both.
        if SAMPLE_KEY not in config and isinstance(config.get("config"), dict):
            config = config["config"]
        ident = repr([self.key, int(config[SAMPLE_KEY]), [config[k] for k in self.cell]])
        digest = hashlib.sha256(ident.encode()).digest()
        rng = np.random.default_rng([self.seed, int.from_bytes(digest[:8], "little")])
        if self.kind == "choice":
            return self.args[int(rng.integers(len(self.args)))]
        lo, hi = self.args
        if self.kind == "randint":
            return int(rng.integers(lo, hi))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return float(rng.uniform(lo, hi))

    def domain(self) -> Any:
        """The equivalent (untied) Tune domain, for display and inspection."""
        return _domain(self.kind, self.args)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``axes`` holds every axis but the seeds (which live in ``seeds``), as
    written, with values normalised by the schema (``1e5`` -> 100000.0)."""

    name: str
    base: Config
    axes: dict[str, dict[str, Any]]
    seeds: int
    tune: TuneSpec
    source: str
    description: str = ""

    def seed_values(self) -> list[int]:
        """The seeds each configuration runs with."""
        return [self.base.train.seed + i for i in range(self.seeds)]

    def _sampled(self) -> list[str]:
        return [k for k, ax in self.axes.items() if _kind(ax) in SAMPLED]

    def _cell(self) -> tuple[str, ...]:
        # An explicit grid of seeds is still replicates: it does not change the draws.
        return tuple(k for k, ax in self.axes.items() if "grid" in ax and k != SEED_KEY)

    def param_space(self) -> dict[str, Any]:
        """Tune ``param_space``: only swept keys (constants stay in ``base``).

        random/grid: grid axes and the seeds as ``grid_search``; sampled axes as
        ``sample_from(TiedSample)`` plus a ``__sample__`` grid over ``range(num_samples)``.
        optuna: the sampled axes as Tune domains only (Repeater supplies the seeds).
        """
        from ray import tune  # lazy: loading and validating a space must not pay for Ray

        if self.tune.search == "optuna":
            return {k: _domain(*next(iter(ax.items()))) for k, ax in self.axes.items()}
        cell = self._cell()
        space: dict[str, Any] = {}
        if self._sampled():
            space[SAMPLE_KEY] = tune.grid_search(list(range(self.tune.num_samples)))
        for k, ax in self.axes.items():
            kind, arg = next(iter(ax.items()))
            space[k] = (tune.grid_search(list(arg)) if kind == "grid" else
                        tune.sample_from(TiedSample(k, kind, tuple(arg), self.tune.seed, cell)))
        if self.seeds > 1:
            space[SEED_KEY] = tune.grid_search(self.seed_values())
        return space

    def tuner_num_samples(self) -> int:
        """``TuneConfig(num_samples=...)`` for ``param_space()``: 1 for random/grid (the
        ``__sample__`` grid does the repeating), num_samples x seeds for optuna (Repeater)."""
        return self.tune.num_samples * self.seeds if self.tune.search == "optuna" else 1

    def expected_trials(self) -> int:
        """Grid cells x num_samples x seeds (optuna: num_samples x seeds)."""
        if self.tune.search == "optuna":
            return self.tune.num_samples * self.seeds
        cells = math.prod(len(ax["grid"]) for ax in self.axes.values() if "grid" in ax)
        return cells * self.tune.num_samples * self.seeds

    def reports_per_trial(self) -> int:
        """Most Tune reports a trial makes (one per eval_every G steps): ASHA's natural max_t."""
        steps = _extremes(self, "train.steps", self.base.train.steps)[1]
        every = _extremes(self, "train.eval_every", self.base.train.eval_every)[0]
        return math.ceil(steps / every)

    def trial_config(self, params: dict[str, Any]) -> Config:
        """``base`` with the dotted ``params`` applied, validated. Keys starting with ``__`` are
        ignored, except ``__trial_index__`` (Repeater, optuna), which selects the seed."""
        flat = {}
        for k, v in params.items():
            if k == TRIAL_INDEX and self.tune.search == "optuna":
                flat[SEED_KEY] = self.base.train.seed + int(v)
            elif not k.startswith("__"):
                flat[k] = v.item() if isinstance(v, np.generic) else v
        return from_dict(self.base.flat() | flat)

    def with_overrides(self, overrides: list[str]) -> SweepSpec:
        """Apply ``key=value`` overrides, then validate the whole spec again.

        ``tune.*`` (``tune.num_samples=2``, ``tune.resources.gpu=0.5``) sets tune keys, ``name``
        the experiment name, ``space.KEY={grid: [..]}`` an axis (``null`` removes it); a
        run-config key sets the base, and if that key is swept, pins it (the axis is dropped).
        """
        doc, problems = self.to_dict(), []
        for text in overrides:
            key, value = parse_override(text)
            if key in ("name", "description"):
                doc[key] = value
            elif key.startswith("tune."):
                _set_nested(doc["tune"], key.split(".")[1:], value)
            elif key.startswith("space.") and value is None:
                doc["space"].pop(key[6:], None)
            elif key.startswith("space."):
                doc["space"][key[6:]] = value
            elif key in run_keys():
                doc["base"][key] = value
                doc["space"].pop(key, None)
            else:
                options = [*run_keys(), *(f"tune.{k}" for k in TUNE_KEYS), "name"]
                problems.append(f"--set {key}: unknown key{_dym(key, options)}")
        if problems:
            raise ConfigError(problems)
        return _build(doc, Path(self.source))

    def smoke(self) -> SweepSpec:
        """A copy that runs in about a minute on a laptop, named ``{name}-smoke`` so its results
        never mix with the real sweep's. Exactly: train.steps -> min(steps, 40); eval_every and
        checkpoint_every -> min(10, steps); eval.num_samples -> min(n, 200); axes on those four
        keys are dropped; seeds -> 1; every grid axis keeps its first 2 values; num_samples -> 1
        (random/grid) or 2 (optuna); ASHA grace_period -> 1 (and max_t, if set, -> at most
        the smoke run's report count). Everything else is kept."""
        doc = self.to_dict()
        b = doc["base"]
        steps = min(b["train.steps"], SMOKE_STEPS)
        b.update({"train.steps": steps, "train.eval_every": min(SMOKE_EVERY, steps),
                  "train.checkpoint_every": min(SMOKE_EVERY, steps),
                  "eval.num_samples": min(b["eval.num_samples"], SMOKE_EVAL_SAMPLES)})
        space = {k: ax for k, ax in doc["space"].items()
                 if k not in SMOKE_PINNED and "seeds" not in ax}
        doc["space"] = {k: {"grid": ax["grid"][:2]} if "grid" in ax else ax
                        for k, ax in space.items()}
        t = doc["tune"]
        t["num_samples"] = 2 if t["search"] == "optuna" else 1
        if isinstance(t["scheduler"], dict):
            asha = t["scheduler"]["asha"]
            asha["grace_period"] = 1
            if "max_t" in asha:
                asha["max_t"] = min(asha["max_t"], math.ceil(steps / min(SMOKE_EVERY, steps)))
        doc["name"] = f"{self.name}-smoke"
        return _build(doc, Path(self.source))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain document (``spec_from_dict`` reads it back into an equal spec)."""
        space: dict[str, Any] = {k: {kd: list(v) if isinstance(v, (list, tuple)) else v
                                     for kd, v in ax.items()} for k, ax in self.axes.items()}
        if self.seeds > 1:
            space[SEED_KEY] = {"seeds": self.seeds}
        t = self.tune
        sched: Any = ({"asha": dict(t.scheduler.params)} if t.scheduler.name == "asha"
                      else "fifo")
        tune = {f.name: getattr(t, f.name) for f in dataclasses.fields(t)}
        tune.update(scheduler=sched, resources=dict(t.resources))
        return {"name": self.name, "description": self.description, "base": self.base.flat(),
                "space": space, "tune": tune}


def load_space(path: str | Path) -> SweepSpec:
    """Parse and validate a search-space YAML; ``ConfigError`` lists every problem, one line
    each, prefixed with the file name and naming the key."""
    p = Path(path)
    return _build(read_yaml(p), p, base_dir=p.parent)


def spec_from_dict(doc: dict[str, Any], source: str) -> SweepSpec:
    """A validated SweepSpec from a ``SweepSpec.to_dict()`` document (as stored with results)."""
    return _build(doc, Path(source))


def expand_grid(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial's params for random and grid search, in Tune's order, sampled axes drawn
    exactly as the trials draw them. Optuna proposes its trials at run time: ValueError."""
    if spec.tune.search == "optuna":
        raise ValueError(f"{spec.name}: search=optuna proposes its trials at run time")
    sampled = spec._sampled()
    axes = {SAMPLE_KEY: list(range(spec.tune.num_samples))} if sampled else {}
    axes |= {k: list(ax["grid"]) for k, ax in spec.axes.items() if "grid" in ax}
    if spec.seeds > 1:
        axes[SEED_KEY] = spec.seed_values()
    cell = spec._cell()
    # Tune sorts its grid axes by key and varies the first fastest; so do we.
    keys = sorted(axes, reverse=True)
    trials = []
    for values in itertools.product(*(axes[k] for k in keys)):
        params = dict(zip(keys, values))
        for k in sampled:
            kind, arg = next(iter(spec.axes[k].items()))
            params[k] = TiedSample(k, kind, tuple(arg), spec.tune.seed, cell)(params)
        trials.append({k: params[k] for k in [*spec.axes, SEED_KEY] if k in params})
    return trials


# ---------------------------------------------------------------------------------------------


def _build(doc: dict[str, Any], source: Path, base_dir: Path | None = None) -> SweepSpec:
    problems: list[str] = []
    for k in doc:
        if k not in TOP_KEYS:
            problems.append(f"{k}: unknown top-level key{_dym(str(k), TOP_KEYS)}")
    name = doc.get("name") or source.stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        problems.append(f"name must match [A-Za-z0-9_.-]+, got {_fmt(name)}")
    base = _parse_base(doc.get("base"), base_dir or source.parent, problems)
    tune = _parse_tune(doc.get("tune"), base, problems)
    axes, seeds = _parse_space(doc.get("space"), base, tune.search, problems)
    space_ok = not any(p.startswith("space") for p in problems)
    if space_ok and base is not None and len(axes) > 1:
        _check_combinations(base, axes, problems)
    sampled = [k for k, ax in axes.items() if _kind(ax) in SAMPLED]
    if tune.search == "optuna" and not sampled and space_ok:
        problems.append("tune.search=optuna needs at least one sampled axis besides the seeds "
                        "(for a plain seed sweep use search: grid)")
    if tune.search != "optuna" and tune.num_samples > 1 and not sampled and space_ok:
        problems.append(f"tune.num_samples={tune.num_samples} would repeat identical trials: no "
                        f"axis is sampled (for replicates use train.seed: {{seeds: N}})")
    if problems:
        raise ConfigError([f"{source.name}: {p}" for p in problems])
    assert base is not None
    return SweepSpec(name=name, base=base, axes=axes, seeds=seeds, tune=tune, source=str(source),
                     description=str(doc.get("description") or ""))


def _parse_base(raw: Any, base_dir: Path, problems: list[str]) -> Config | None:
    try:
        if isinstance(raw, str):
            return from_dict(flatten(read_yaml(base_dir / Path(raw).expanduser())))
        if raw is None or isinstance(raw, dict):
            return from_dict(flatten(raw or {}))
        problems.append("base must be a mapping of run-config keys or a path to a run-config "
                        f"YAML, got {type(raw).__name__}")
    except ConfigError as e:
        problems += [f"base: {p}" for p in e.problems]
    return None


def _parse_tune(raw: Any, base: Config | None, problems: list[str]) -> TuneSpec:
    if not isinstance(raw, dict):
        if raw is not None:
            problems.append(f"tune must be a mapping, got {type(raw).__name__}")
        raw = {}
    problems += [f"tune.{k}: unknown key{_dym(str(k), TUNE_KEYS, 'tune.')}"
                 for k in raw if k not in TUNE_KEYS]
    d = TuneSpec()
    out: dict[str, Any] = {}
    for key, choices in (("mode", ("min", "max")), ("search", SEARCHES)):
        out[key] = raw.get(key, getattr(d, key))
        if out[key] not in choices:
            problems.append(f"tune.{key} must be one of {', '.join(choices)}; "
                            f"got {_fmt(out[key])}")
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
    storage = raw.get("storage", d.storage)
    if not isinstance(storage, str) or not storage.strip():
        problems.append(f"tune.storage must be a path or URI, got {_fmt(storage)}")
        storage = d.storage
    # A URI goes to pyarrow as is; Ray rejects relative local paths (RAY.md pitfall 13).
    is_uri = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", storage)
    out["storage"] = storage if is_uri else os.path.abspath(os.path.expanduser(storage))
    out["metric"] = metric = raw.get("metric", "fid")
    if not isinstance(metric, str) or metric not in METRICS:
        problems.append(f"tune.metric: unknown metric {_fmt(metric)}{_dym(str(metric), METRICS)}"
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
    if name not in ("asha", "fifo") or not isinstance(params or {}, dict):
        problems.append("tune.scheduler must be fifo or asha (e.g. {asha: {grace_period: 2}}); "
                        f"got {_fmt(raw)}")
        return SchedulerSpec("fifo")
    params = dict(params or {})
    if name == "fifo":
        if params:
            problems.append(f"tune.scheduler.fifo takes no settings, got {_fmt(params)}")
        return SchedulerSpec("fifo")
    where = "tune.scheduler.asha."
    problems += [f"{where}{k}: unknown key{_dym(str(k), ASHA_KEYS, where)}"
                 for k in params if k not in ASHA_KEYS]
    out: dict[str, Any] = {"grace_period": _int(params, "grace_period", 1, 1, problems, "",
                                                where)}
    rf = _number(params.get("reduction_factor", 4))
    if rf is None or rf <= 1:
        problems.append(f"{where}reduction_factor must be a number > 1, "
                        f"got {_fmt(params.get('reduction_factor'))}")
        rf = 4
    out["reduction_factor"] = int(rf) if float(rf).is_integer() else rf
    if "max_t" in params:
        out["max_t"] = _int(params, "max_t", 1, 1, problems, "", where)
        if out["max_t"] < out["grace_period"]:
            problems.append(f"{where}grace_period ({out['grace_period']}) must be <= max_t "
                            f"({out['max_t']})")
    return SchedulerSpec("asha", out)


def _parse_resources(raw: Any, problems: list[str]) -> dict[str, float]:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        problems.append(f"tune.resources must be a mapping like {{cpu: 1}}, got {_fmt(raw)}")
        raw = {}
    problems += [f"tune.resources.{k}: unknown key (valid: cpu, gpu)"
                 for k in raw if k not in ("cpu", "gpu")]
    out = {}
    for key, default, op in (("cpu", 1.0, ">"), ("gpu", 0.0, ">=")):
        v = _number(raw.get(key, default))
        if v is None or (v <= 0 if op == ">" else v < 0):
            problems.append(f"tune.resources.{key} must be {op} 0, got {_fmt(raw.get(key))}")
            v = default
        out[key] = v
    return out


def _parse_space(raw: Any, base: Config | None, search: str,
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
            problems.append(f"{where}: unknown key{_dym(key, run_keys())}")
            continue
        if not isinstance(dom, dict) or not dom:
            problems.append(f"{where}: expected a mapping like {{grid: [...]}}, got {_fmt(dom)}")
            continue
        unknown = [str(k) for k in dom if k not in KINDS]
        if unknown:
            problems.append(f"{where}: unknown domain {unknown[0]!r}{_dym(unknown[0], KINDS)}")
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
            problems.append(f"{where}: seeds must be an integer >= 1, got {_fmt(arg)}")
        return arg
    if kind in ("grid", "choice"):
        if not isinstance(arg, list):
            problems.append(f"{where}: {kind} must be a list of values, got {_fmt(arg)}")
            return None
        if not arg:
            problems.append(f"{where}: empty {kind}")
        values: list[Any] = []
        for v in arg:
            v = _apply(base, key, v, f"{where}: {kind} value {_fmt(v)}", problems)
            if v in values:
                problems.append(f"{where}: {kind} lists {_fmt(v)} twice")
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
        problems.append(f"{where}: {kind} needs [lo, hi], got {_fmt(arg)}")
        return None
    if kind == "randint" and not (_is_int(arg[0]) and _is_int(arg[1]) and lo < hi):
        problems.append(f"{where}: randint bounds must be integers lo < hi (hi excluded), "
                        f"got {_fmt(arg)}")
        return None
    if kind in ("uniform", "loguniform") and not ((lo > 0 or kind == "uniform") and lo < hi):
        rule = "0 < lo < hi" if kind == "loguniform" else "lo < hi"
        problems.append(f"{where}: {kind} bounds must be {rule}, got {_fmt(arg)}")
        return None
    bounds = [int(lo), int(hi)] if kind == "randint" else [lo, hi]
    # randint never draws hi itself, so hi - 1 is the largest value a trial can get.
    for b in (bounds[0], bounds[1] - 1 if kind == "randint" else bounds[1]):
        _apply(base, key, b, f"{where}: {kind} bound {_fmt(b)}", problems)
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


def _probes(ax: dict[str, Any]) -> list[Any]:
    kind, arg = next(iter(ax.items()))
    if kind == "randint":
        return [arg[0], arg[1] - 1]
    return list(arg)


def _check_combinations(base: Config, axes: dict[str, dict[str, Any]],
                        problems: list[str]) -> None:
    """Cross-field rules (same_class needs conditional ...) across axes: every pair of axes,
    then the full product of their values and bounds when it is small."""
    probes = {k: _probes(ax) for k, ax in axes.items()}
    seen: set[str] = set()
    flat = base.flat()

    def check(combo: dict[str, Any]) -> None:
        try:
            from_dict(flat | combo)
        except ConfigError as e:
            for p in e.problems:
                if p not in seen:
                    seen.add(p)
                    what = " with ".join(f"{k}={_fmt(v)}" for k, v in combo.items())
                    problems.append(f"space: {what}: {p}")

    for a, b in itertools.combinations(probes, 2):
        for va, vb in itertools.product(probes[a], probes[b]):
            check({a: va, b: vb})
    if not seen and len(probes) > 2 and math.prod(map(len, probes.values())) <= MAX_COMBOS:
        for values in itertools.product(*probes.values()):
            check(dict(zip(probes, values)))


def _extremes(spec: SweepSpec, key: str, default: int) -> tuple[int, int]:
    ax = spec.axes.get(key)
    values = _probes(ax) if ax else [default]
    return min(values), max(values)


def _domain(kind: str, arg: Any) -> Any:
    from ray import tune  # lazy: loading and validating a space must not pay for Ray

    if kind in ("grid", "choice"):
        return (tune.grid_search if kind == "grid" else tune.choice)(list(arg))
    return {"uniform": tune.uniform, "loguniform": tune.loguniform,
            "randint": tune.randint}[kind](*arg)


def _kind(ax: dict[str, Any]) -> str:
    return next(iter(ax))


def _field_type(key: str) -> Any:
    sec, _, name = key.partition(".")
    typ = get_type_hints(SECTIONS[sec])["is_" if name == "is" else name]
    if get_origin(typ) is Union:
        typ = next(a for a in get_args(typ) if a is not type(None))
    return typ


def _set_nested(d: dict[str, Any], path: list[str], value: Any) -> None:
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
        problems.append(f"{where}{key} must be an integer >= {lo}{note}, got {_fmt(v)}")
        return default
    return v


def _dym(word: str, options: Any, prefix: str = "") -> str:
    lower = {str(o).lower(): o for o in options}
    close = [lower[c] for c in difflib.get_close_matches(word.lower(), lower, n=1, cutoff=0.6)]
    close = close or [o for o in options if str(o).startswith(word)][:1]
    if not close and "." in word:
        tail = word.rsplit(".", 1)[-1]
        close = [o for o in options if o.rsplit(".", 1)[-1] == tail][:1]
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)
