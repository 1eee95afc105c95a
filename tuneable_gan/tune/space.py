"""Search-space YAML -> a validated ``SweepSpec`` -> Tune ``param_space``.

A space file has ``name``, ``description``, ``base`` (a run config, inline or a path relative to
the file; it may name a ``preset``), ``space`` (dotted run-config key -> one domain), ``cells``
(per-cell rules, below) and ``tune`` (metric, search, scheduler, resources, storage ...).
Domains: ``grid: [..]``, ``choice: [..]``, ``uniform: [lo, hi]``, ``loguniform: [lo, hi]``,
``randint: [lo, hi)`` and, on ``train.seed`` only, ``seeds: N``. Every value and bound is checked
by building a run config from the base, and every grid cell's config with its rules applied, so
a sweep that loads cannot fail on its config in the middle of the night.

Semantics worth knowing:

* Cell rules: ``cells: [{when: {data.fraction: 0.2, regularizer.name: diggan}, set:
  {train.steps: 500000}, source: "..."}, ...]``. A trial's config is built from the base
  DOCUMENT (its explicit keys and its ``preset`` unexpanded), then each rule whose ``when``
  values (grid axes only; ``{}``: every trial) the trial's params hold, in order (a later rule
  wins), then the params; a ``preset`` in a rule's ``set`` replaces the base's and is expanded
  under all of those explicit keys (``compose``). A rule may not set a swept key or the seed.
  Rules change configs, never the trial count: ``expand_grid`` and ``expected_trials`` are as
  without them. ``--set KEY=V`` pins KEY in every cell (it leaves the rules' ``set``), and a
  rule whose ``when`` a pinned or shortened axis can no longer meet is dropped.

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

import copy
import dataclasses
import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneable_gan.config import PRESET_KEY, Config, from_dict, parse_override, read_yaml
from tuneable_gan.config import valid_keys as run_keys
from tuneable_gan.errors import ConfigError
from tuneable_gan.tune.space_cells import (
    CellRule,
    check_cells,
    compose,
    parse_cells,
    possible_values,
)
from tuneable_gan.tune.space_checks import (
    check_explicit,
    parse_baseline,
    preflight_cells,
    scheduler_problems,
    top_level_problems,
)
from tuneable_gan.tune.space_paper import PaperSpec, parse_paper
from tuneable_gan.tune.space_parse import (
    MAX_COMBOS,
    SAMPLE_KEY,
    SAMPLED,
    SEED_KEY,
    TRIAL_INDEX,
    TUNE_KEYS,
    SchedulerSpec,
    TuneSpec,
    check_combinations,
    did_you_mean,
    domain_of,
    fmt,
    kind_of,
    parse_base,
    parse_space,
    parse_tune,
    probe_values,
    set_nested,
)
from tuneable_gan.tune.space_smoke import smoke_doc

__all__ = ["CellRule", "SchedulerSpec", "SweepSpec", "TiedSample", "TrialBase", "TuneSpec",
           "expand_grid", "load_space", "spec_from_dict", "trial_config"]


@dataclass(frozen=True)
class TrialBase:
    """What a trial's config is built from besides its params: the base document (dotted
    explicit keys, ``preset`` unexpanded), the cell rules, and the base's seed (optuna's
    ``__trial_index__`` counts from it). Small and picklable: Tune ships it to every trial."""

    doc: dict[str, Any]
    cells: tuple[CellRule, ...] = ()
    seed: int = 0

    def document(self, params: dict[str, Any]) -> dict[str, Any]:
        """The trial's run-config document before validation (``space_cells.compose``)."""
        return compose(self.doc, self.cells, params)

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
        return domain_of(self.kind, self.args)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``axes`` holds every axis but the seeds (which live in ``seeds``), as
    written, with values normalised by the schema (``1e5`` -> 100000.0); ``cells`` the cell
    rules. ``base`` is the base alone: a cell's config may differ where a rule sets a key."""

    name: str
    base: Config
    axes: dict[str, dict[str, Any]]
    seeds: int
    tune: TuneSpec
    source: str
    description: str = ""
    # The base as written (dotted keys, normalised values, ``preset`` unexpanded; ``base`` is
    # it resolved on its own, no rule applied) and the cell rules, in order.
    base_doc: dict[str, Any] = dataclasses.field(default_factory=dict)
    cells: tuple[CellRule, ...] = ()
    # The cell the report compares the others with ({axis: value}); empty: the report's default.
    baseline: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The paper's published numbers of the cells (``space_paper``), for the report.
    paper: PaperSpec | None = None
    # Keys the user set that some cells' methods ignore (``space_cells.check_explicit``), one
    # line each, for the commands to print; derived from the rest, so not compared.
    warnings: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    def trial_base(self) -> TrialBase:
        """What ``trial_config`` builds each trial's config from (``TrialContext`` holds it)."""
        return TrialBase(dict(self.base_doc), self.cells, self.base.train.seed)

    def values(self, key: str) -> list[Any]:
        """Every value run-config ``key`` may take in some trial (a superset: the base's, the
        axis's values and bounds, each rule's, each rule preset's)."""
        return possible_values(key, self.base, self.base_doc, self.axes, self.cells)

    def grid_cells(self, limit: int = 0) -> list[dict[str, Any]]:
        """The grid cells (one dict of grid values each, seeds left out), the axes in the order
        written, the last varying fastest; the first ``limit`` only when ``limit`` > 0."""
        keys = [k for k, ax in self.axes.items() if "grid" in ax and k != SEED_KEY]
        cells = itertools.product(*(self.axes[k]["grid"] for k in keys))
        return [dict(zip(keys, values))
                for values in (itertools.islice(cells, limit) if limit else cells)]

    def seed_values(self) -> list[int]:
        """The seeds each configuration runs with."""
        return [self.base.train.seed + i for i in range(self.seeds)]

    def _sampled(self) -> list[str]:
        return [k for k, ax in self.axes.items() if kind_of(ax) in SAMPLED]

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
            return {k: domain_of(*next(iter(ax.items()))) for k, ax in self.axes.items()}
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
        """Most Tune reports a trial makes (one per eval_every G steps): ASHA's natural max_t.
        With cell rules, the most of any grid cell (up to MAX_COMBOS cells; beyond, a bound
        from every value the two keys may take)."""
        cells = self.grid_cells(MAX_COMBOS + 1) if self.cells else []
        if not cells or len(cells) > MAX_COMBOS:
            return math.ceil(max(self.values("train.steps")) /
                             min(self.values("train.eval_every")))
        sampled = {k: probe_values(ax) for k, ax in self.axes.items() if "grid" not in ax}
        worst = 0
        for cell in cells:
            train = self.trial_config(cell).train
            steps = max(sampled.get("train.steps", [train.steps]))
            every = min(sampled.get("train.eval_every", [train.eval_every]))
            worst = max(worst, math.ceil(steps / every))
        return worst

    def preflight(self, limit: int = MAX_COMBOS) -> tuple[list[str], list[str]]:
        """(problems, notes): what ``train`` checks before its first step, on the first
        ``limit`` probe cells (``space_checks.preflight_cells``)."""
        return preflight_cells(self.trial_config, self.axes, limit, Path(self.source).name)

    def trial_config(self, params: dict[str, Any]) -> Config:
        """The base document, the matching cell rules and the dotted ``params``, validated
        (``trial_config``)."""
        return trial_config(self.trial_base(), self.tune.search, params)

    def with_overrides(self, overrides: list[str]) -> SweepSpec:
        """Apply ``key=value`` overrides, then validate the whole spec again.

        ``tune.*`` (``tune.num_samples=2``, ``tune.resources.gpu=0.5``) sets tune keys, ``name``
        the experiment name, ``space.KEY={grid: [..]}`` an axis (``null`` removes it); a
        run-config key (or ``preset``) sets the base and pins it in every trial: a swept key's
        axis is dropped, the key leaves every rule's ``set``, and the rules whose ``when`` the
        pinned value no longer meets are dropped.
        """
        doc, problems = self.to_dict(), []
        for text in overrides:
            key, value = parse_override(text)
            if key in ("name", "description"):
                doc[key] = value
            elif key.startswith("tune."):
                set_nested(doc["tune"], key.split(".")[1:], value)
            elif key.startswith("space.") and value is None:
                doc["space"].pop(key[6:], None)
            elif key.startswith("space."):
                doc["space"][key[6:]] = value
            elif key in run_keys() or key == PRESET_KEY:
                doc["base"][key] = value
                doc["space"].pop(key, None)
                for rule in doc.get("cells", []):
                    rule["set"].pop(key, None)
            else:
                options = [*run_keys(), *(f"tune.{k}" for k in TUNE_KEYS), "name"]
                problems.append(f"--set {key}: unknown key{did_you_mean(key, options)}")
        if problems:
            raise ConfigError(problems)
        return _build(doc, Path(self.source), derived=True)

    def smoke(self) -> SweepSpec:
        """A copy that runs in about a minute on a laptop, named ``{name}-smoke`` so its results
        never mix with the real sweep's (what shrinks and how: ``space_smoke.smoke_doc``)."""
        return _build(smoke_doc(self.to_dict(), self.base), Path(self.source), derived=True)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain document (``spec_from_dict`` reads it back into an equal spec)."""
        space: dict[str, Any] = {k: {kd: list(v) if isinstance(v, (list, tuple)) else v
                                     for kd, v in ax.items()} for k, ax in self.axes.items()}
        if self.seeds > 1:
            space[SEED_KEY] = {"seeds": self.seeds}
        t = self.tune
        sched: Any = ({t.scheduler.name: copy.deepcopy(dict(t.scheduler.params))}
                      if t.scheduler.name != "fifo" else "fifo")
        tune = {f.name: getattr(t, f.name) for f in dataclasses.fields(t)}
        tune.update(scheduler=sched, resources=dict(t.resources),
                    callbacks={c.name: copy.deepcopy(c.options) for c in t.callbacks})
        if not t.callbacks:
            del tune["callbacks"]  # a sweep without trackers stores what it stored before
        doc = {"name": self.name, "description": self.description,
               "base": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in self.base_doc.items()},
               "space": space, "tune": tune}
        if self.cells:
            doc["cells"] = [rule.to_dict() for rule in self.cells]
        if self.baseline:
            doc["baseline"] = dict(self.baseline)
        if self.paper is not None:
            doc["paper"] = self.paper.to_dict()
        return doc


def trial_config(base: TrialBase, search: str, params: dict[str, Any]) -> Config:
    """A trial's config: ``base``'s document, its cell rules that match the params, and the
    dotted ``params``, validated: the only validation a trial does. Keys starting with ``__``
    are ignored, except ``__trial_index__`` (Repeater, search=optuna), which selects the seed:
    ``base.seed + index``."""
    flat = {}
    for k, v in params.items():
        if k == TRIAL_INDEX and search == "optuna":
            flat[SEED_KEY] = base.seed + int(v)
        elif not k.startswith("__"):
            flat[k] = v.item() if isinstance(v, np.generic) else v
    return from_dict(base.document(flat))


def load_space(path: str | Path) -> SweepSpec:
    """Parse and validate a search-space YAML; ``ConfigError`` lists every problem, one line
    each, prefixed with the file name and naming the key."""
    p = Path(path)
    return _build(read_yaml(p), p, base_dir=p.parent, strict=True)


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


def _build(doc: dict[str, Any], source: Path, base_dir: Path | None = None,
           derived: bool = False, strict: bool = False) -> SweepSpec:
    """``strict``: a file the user wrote (``load_space``), where a key no cell reads is an
    error; in a spec derived from it or stored with results it is a warning."""
    # A misspelt section would leave the rest meaningless (``spce:`` makes one configuration).
    problems = top_level_problems(doc)
    if problems:
        raise ConfigError([f"{source.name}: {p}" for p in problems])
    name = doc.get("name") or source.stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        problems.append(f"name must match [A-Za-z0-9_.-]+, got {fmt(name)}")
    base, base_doc = parse_base(doc.get("base"), base_dir or source.parent, problems)
    tune = parse_tune(doc.get("tune"), base, problems)
    axes, seeds = parse_space(doc.get("space"), base, tune.search, problems)
    space_ok = not any(p.startswith("space") for p in problems)
    n = len(problems)
    cells = parse_cells(doc.get("cells"), base, axes, problems, derived) if space_ok else ()
    cells_ok = len(problems) == n
    if space_ok and cells_ok and base is not None and cells:
        check_cells(base_doc, cells, base, axes, problems)
    elif space_ok and base is not None and len(axes) > 1:
        check_combinations(base, axes, problems)
    baseline = parse_baseline(doc.get("baseline"), axes, problems, derived) if space_ok else {}
    paper = parse_paper(doc.get("paper"), axes, problems, derived) if space_ok else None
    sampled = [k for k, ax in axes.items() if kind_of(ax) in SAMPLED]
    if tune.search == "optuna" and not sampled and space_ok:
        problems.append("tune.search=optuna needs at least one sampled axis besides the seeds "
                        "(for a plain seed sweep use search: grid)")
    problems += scheduler_problems(tune, base, base_doc, axes, cells, space_ok and cells_ok)
    if tune.search != "optuna" and tune.num_samples > 1 and not sampled and space_ok:
        problems.append(f"tune.num_samples={tune.num_samples} would repeat identical trials: no "
                        f"axis is sampled (for replicates use train.seed: {{seeds: N}})")
    warnings: list[str] = []
    if not problems and base is not None:
        check_explicit(base_doc, cells, axes, strict and not derived, problems, warnings)
    if problems:
        raise ConfigError([f"{source.name}: {p}" for p in problems])
    assert base is not None
    return SweepSpec(name=name, base=base, axes=axes, seeds=seeds, tune=tune, source=str(source),
                     description=str(doc.get("description") or ""), base_doc=base_doc,
                     cells=cells, baseline=baseline, paper=paper,
                     warnings=tuple(f"{source.name}: {w}" for w in warnings))
