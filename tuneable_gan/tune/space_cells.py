"""Per-cell rules of a search space (``cells:``): what a matching trial's config sets on top of
the base document, e.g. the reference's run length of a cell or the SNGAN recipe for the SNGAN
cells of a BigGAN-preset space. Parsing and validation, used by ``space``; the other sections'
parsing is in ``space_parse``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from tuneable_gan.config import PRESET_KEY, Config, flatten, from_dict
from tuneable_gan.config import valid_keys as run_keys
from tuneable_gan.constants import SEED_KEY
from tuneable_gan.errors import ConfigError
from tuneable_gan.presets import PRESETS
from tuneable_gan.tune.space_parse import (
    CELL_KEYS,
    MAX_COMBOS,
    check_combinations,
    did_you_mean,
    fmt,
    kind_of,
    probe_values,
)


@dataclass(frozen=True)
class CellRule:
    """One entry of ``cells:``. Every trial whose params hold each ``when`` value (grid axes
    only; ``{}`` matches every trial) gets ``set``: dotted run-config keys, none of them swept,
    and optionally ``preset``, which replaces the base's. ``source`` cites where it comes from.
    """

    when: dict[str, Any]
    set: dict[str, Any]
    source: str = ""

    def matches(self, params: dict[str, Any]) -> bool:
        """Whether a trial with these params is one of the rule's cells."""
        return all(k in params and params[k] == v for k, v in self.when.items())

    def to_dict(self) -> dict[str, Any]:
        """The rule as written in a space file (values as the schema normalised them)."""
        out: dict[str, Any] = {"when": dict(self.when),
                               "set": {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in self.set.items()}}
        return out | ({"source": self.source} if self.source else {})

    def describe(self) -> str:
        """``when a=1, b='x': set c=2  # source``, one line."""
        when = ", ".join(f"{k}={fmt(v)}" for k, v in self.when.items()) or "every cell"
        what = ", ".join(f"{k}={fmt(v)}" for k, v in self.set.items())
        return f"when {when}: set {what}" + (f"  # {self.source}" if self.source else "")


def compose(doc: dict[str, Any], cells: tuple[CellRule, ...],
            params: dict[str, Any]) -> dict[str, Any]:
    """A trial's run-config document: the base document's explicit keys, then the ``set`` of
    each rule matching ``params`` in order, then the params; the last ``preset`` named (the
    base's, or a matching rule's) goes in unexpanded, so ``from_dict`` expands it under all of
    those explicit keys."""
    explicit = dict(doc)
    preset = explicit.pop(PRESET_KEY, None)
    for rule in cells:
        if rule.matches(params):
            for k, v in rule.set.items():
                if k == PRESET_KEY:
                    preset = v
                else:
                    explicit[k] = v
    explicit.update(params)
    return explicit if preset is None else {PRESET_KEY: preset, **explicit}




def parse_cells(raw: Any, base: Config | None, axes: dict[str, dict[str, Any]],
                problems: list[str], derived: bool = False) -> tuple[CellRule, ...]:
    """The ``cells:`` rules, values normalised by the schema. A ``when`` key must be a grid
    axis (not the seeds) and its value one of the axis's; a ``set`` key a run-config key that is
    not swept, or ``preset``. ``derived`` (a spec made from another by ``with_overrides`` or
    ``smoke``): a ``when`` on a key pinned since holds if the pinned value equals it, and a rule
    whose ``when`` no trial can meet any more (a pinned or shortened axis) is dropped, as is a
    rule left with nothing to set."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append("cells must be a list of rules like {when: {data.fraction: 0.1}, set: "
                        f"{{train.steps: 250000}}, source: ...}}, got {type(raw).__name__}")
        return ()
    grid = {k: ax["grid"] for k, ax in axes.items() if "grid" in ax and k != SEED_KEY}
    pinned = base.flat() if base is not None else {}
    out = []
    for i, rule in enumerate(raw):
        where = f"cells[{i}]"
        if not isinstance(rule, dict):
            problems.append(f"{where} must be a mapping with when, set and source, got "
                            f"{fmt(rule)}")
            continue
        problems += [f"{where}.{k}: unknown key{did_you_mean(str(k), CELL_KEYS, f'{where}.')}"
                     for k in rule if k not in CELL_KEYS]
        when, values, source = rule.get("when") or {}, rule.get("set"), rule.get("source", "")
        if not isinstance(when, dict):
            problems.append(f"{where}.when must be a mapping of grid axes to values, got "
                            f"{fmt(when)}")
            continue
        if not isinstance(source, str):
            problems.append(f"{where}.source must be a string, got {fmt(source)}")
        if not isinstance(values, dict) or not values:
            if not (derived and isinstance(values, dict)):
                problems.append(f"{where}.set must be a mapping of run-config keys to values, "
                                f"like {{train.steps: 250000}}; got {fmt(values)}")
            continue
        match, live = _parse_when(where, flatten(when), grid, axes, pinned, derived, problems)
        sets = _parse_set(where, flatten(values), base, axes, problems)
        if live and sets:
            out.append(CellRule(match, sets, source if isinstance(source, str) else ""))
    return tuple(out)


def _parse_when(where: str, when: dict[str, Any], grid: dict[str, list[Any]],
                axes: dict[str, dict[str, Any]], pinned: dict[str, Any], derived: bool,
                problems: list[str]) -> tuple[dict[str, Any], bool]:
    """(the normalised ``when``, whether some trial can still meet it)."""
    out, live = {}, True
    for key, raw in when.items():
        w = f"{where}.when.{key}"
        if key not in run_keys():
            problems.append(f"{w}: unknown key{did_you_mean(key, run_keys())}")
            continue
        if key == SEED_KEY:
            problems.append(f"{w}: seeds are replicates; a rule cannot depend on the seed")
            continue
        value = _normalised(pinned, key, raw)
        if key in grid:
            if value in grid[key]:
                out[key] = value
            elif derived:
                live = False
            else:
                problems.append(f"{w}: {fmt(value)} is not a value of space.{key} (grid: "
                                f"{', '.join(fmt(v) for v in grid[key])})")
        elif key in axes:
            problems.append(f"{w}: space.{key} is a {kind_of(axes[key])} axis; a rule matches "
                            "grid values only")
        elif derived:
            live = live and pinned.get(key) == value
        else:
            names = ", ".join(grid) or "none"
            problems.append(f"{w}: not a swept axis; a rule matches the values of grid axes "
                            f"(here: {names})")
    return out, live


def _parse_set(where: str, values: dict[str, Any], base: Config | None,
               axes: dict[str, dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pinned = base.flat() if base is not None else {}
    for key, raw in values.items():
        w = f"{where}.set.{key}"
        if key == PRESET_KEY:
            if raw is not None and raw not in PRESETS:
                problems.append(f"{w}: unknown preset {fmt(raw)}"
                                f"{did_you_mean(str(raw), PRESETS)}; valid: {', '.join(PRESETS)}")
            out[key] = raw
        elif key not in run_keys():
            problems.append(f"{w}: unknown key{did_you_mean(key, [*run_keys(), PRESET_KEY])}")
        elif key in axes or key == SEED_KEY:
            what = (f"is swept (space.{key})" if key in axes else
                    "is the replicate seed (set it in base)")
            problems.append(f"{w}: {what}; a rule may not set it")
        else:
            out[key] = _normalised(pinned, key, raw)
    return out


def _normalised(pinned: dict[str, Any], key: str, value: Any) -> Any:
    """``value`` as the schema stores it (``"1e5"`` -> 100000.0), or as given when it does not
    validate on the base alone (the cell check reports it where it applies)."""
    if not pinned:
        return value
    try:
        return from_dict(pinned | {key: value}).flat()[key]
    except ConfigError:
        return value


def check_cells(doc: dict[str, Any], cells: tuple[CellRule, ...], base: Config,
                axes: dict[str, dict[str, Any]], problems: list[str]) -> None:
    """Every trial config the rules make is valid: each grid cell (all of them up to
    MAX_COMBOS, else each rule's cells: its ``when`` with every other grid value in turn),
    sampled axes at their first value; each sampled value and bound on each rule's first cell;
    pairs of sampled axes on the base. One line per distinct problem, naming the rule's key
    when a rule set it."""
    grid = {k: list(ax["grid"]) for k, ax in axes.items() if "grid" in ax}
    sampled = {k: ax for k, ax in axes.items() if "grid" not in ax}
    first = {k: v[0] for k, v in grid.items()} | {
        k: probe_values(ax)[0] for k, ax in sampled.items()}
    seen: set[str] = set()

    def check(params: dict[str, Any]) -> None:
        try:
            from_dict(compose(doc, cells, params))
        except ConfigError as e:
            matched = [i for i, r in enumerate(cells) if r.matches(params)]
            for p in e.problems:
                if p not in seen:
                    seen.add(p)
                    problems.append(_cell_problem(p, params, matched, cells))

    if math.prod(map(len, grid.values())) <= MAX_COMBOS:
        todo = [first | dict(zip(grid, vs)) for vs in itertools.product(*grid.values())]
    else:
        todo = []
        for rule in cells:
            own = first | rule.when
            todo += [own] + [own | {k: v} for k, vs in grid.items() if k not in rule.when
                             for v in vs if v != own[k]]
    for params in todo:
        check(params)
    for rule in cells:
        for k, ax in sampled.items():
            for v in probe_values(ax)[1:]:
                check(first | rule.when | {k: v})
    if len(sampled) > 1:
        check_combinations(base, sampled, problems)


def _cell_problem(p: str, params: dict[str, Any], matched: list[int],
                  cells: tuple[CellRule, ...]) -> str:
    for i in reversed(matched):  # the last rule that sets a key is the one whose value counts
        for k in cells[i].set:
            if p.startswith((f"{k} ", f"{k}=", f"{k}:")):
                return f"cells[{i}].set.{k}: {p}"
    what = ", ".join(f"{k}={fmt(v)}" for k, v in params.items())
    rules = ", ".join(f"cells[{i}]" for i in matched)
    return f"cells: {what}" + (f" ({rules})" if rules else "") + f": {p}"


def possible_values(key: str, base: Config, doc: dict[str, Any],
                    axes: dict[str, dict[str, Any]], cells: tuple[CellRule, ...]) -> list[Any]:
    """Every value ``key`` may take in some trial (a superset): the base's, the axis's values
    and bounds, each rule's, and what each preset a rule names gives it."""
    out = [base.flat()[key]]
    if key in axes:
        out += probe_values(axes[key])
    default = Config().flat()[key]
    for rule in cells:
        if key in rule.set:
            out.append(rule.set[key])
        elif PRESET_KEY in rule.set and key not in doc:
            out.append(PRESETS.get(rule.set[PRESET_KEY] or "", {}).get(key, default))
    return out
