"""Checks of a search space beyond its sections' schema (used by ``space``): which top-level
keys make a document a space, the keys the user set that no cell's method reads
(``tuneable_gan.reads``), and ``train``'s own pre-step checks on each cell
(``tuneable_gan.preflight``). Cells are probed as ``probe_cells`` lists them: every grid value
with every sampled axis's probe values, up to ``MAX_COMBOS``.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable
from typing import Any

from tuneable_gan.config import PRESET_KEY, SECTIONS, Config, from_dict
from tuneable_gan.constants import SEED_KEY
from tuneable_gan.errors import ConfigError, UserError
from tuneable_gan.reads import Ignored, ignored, name
from tuneable_gan.tune.space_cells import CellRule, compose, possible_values
from tuneable_gan.tune.space_paper import grid_match
from tuneable_gan.tune.space_parse import (
    ASHA_SCHEDULERS,
    MAX_COMBOS,
    TOP_KEYS,
    did_you_mean,
    fmt,
    probe_values,
)
from tuneable_gan.tune.space_pbt import PBT_SCHEDULERS, pbt_problems

# The top-level keys only a search space has: a document with one (or a near miss of one, such
# as ``spce:``) is a space, never a run config whose sections were misspelt.
SPACE_ONLY_KEYS = ("base", "space", "cells", "tune")


def is_space_document(doc: dict[str, Any]) -> bool:
    """Whether a YAML mapping is a search space rather than a run config: it has a key of
    ``SPACE_ONLY_KEYS`` or a near miss of one that is not a run-config section or key."""
    for key in map(str, doc):
        if key in SECTIONS or key == PRESET_KEY or "." in key:
            continue
        if key in SPACE_ONLY_KEYS or difflib.get_close_matches(
                key.lower(), SPACE_ONLY_KEYS, n=1, cutoff=0.75):
            return True
    return False


def top_level_problems(doc: dict[str, Any]) -> list[str]:
    """Unknown top-level keys (with the near miss and the valid keys), else a missing
    ``space:``: a space whose axes were misspelt away must not run as one configuration."""
    valid = ", ".join(TOP_KEYS)
    out = [f"{k}: unknown top-level key{did_you_mean(str(k), TOP_KEYS)}; valid: {valid}"
           for k in doc if k not in TOP_KEYS]
    if not out and "space" not in doc:
        out.append(f"space: missing; a search space needs its axes under space: (space: {{}} "
                   f"for a single configuration); valid top-level keys: {valid}")
    return out


def probe_cells(axes: dict[str, dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], int]:
    """(the first ``limit`` probe cells, how many there are): every combination of the grid
    values and of each sampled axis's probe values (its choices, its bounds), seeds left out."""
    keys = [k for k in axes if k != SEED_KEY]
    values = [axes[k]["grid"] if "grid" in axes[k] else probe_values(axes[k]) for k in keys]
    cells = itertools.islice(itertools.product(*values), limit)
    return [dict(zip(keys, vs)) for vs in cells], math.prod(map(len, values))


def _origins(doc: dict[str, Any], cells: tuple[CellRule, ...],
             params: dict[str, Any]) -> dict[str, str]:
    """Where each key the user set in this cell comes from: base, cells[i].set (the last
    matching rule that sets it) or space (an axis)."""
    out = {k: "base" for k in doc if k != PRESET_KEY}
    for i, rule in enumerate(cells):
        if rule.matches(params):
            out.update({k: f"cells[{i}].set" for k in rule.set if k != PRESET_KEY})
    return out | {k: "space" for k in params}


def check_explicit(doc: dict[str, Any], cells: tuple[CellRule, ...],
                   axes: dict[str, dict[str, Any]], strict: bool, problems: list[str],
                   warnings: list[str]) -> None:
    """Keys the user set (the base's, a rule's ``set``, an axis) that the chosen methods do not
    read (``tuneable_gan.reads``), over the probe cells. Read in no cell: a problem, as for a
    run config (a warning when not ``strict``, for specs derived by ``--set`` or ``--smoke``,
    or when the probe was cut short). Read in some cells only: a warning, since a space
    legitimately sets a key for the cells whose method uses it (a base's DigGAN ``ema`` in a
    space that also runs ``none``). A probe cell whose config is invalid is a problem."""
    todo, total = probe_cells(axes, MAX_COMBOS)
    strict = strict and total <= len(todo)
    seen: dict[tuple[str, str], tuple[list[int], list[Ignored]]] = {}
    bad: set[str] = set()
    for params in todo or [{}]:
        where = _origins(doc, cells, params)
        try:
            cfg = from_dict(compose(doc, cells, params))
        except ConfigError as e:
            what = ", ".join(f"{k}={fmt(v)}" for k, v in params.items())
            problems += [f"cells: {what}: {p}" for p in e.problems if p not in bad]
            bad.update(e.problems)
            continue
        hits = {item.key: item for item in ignored(cfg, where)}
        for key, origin in where.items():
            count, items = seen.setdefault((origin, key), ([0], []))
            count[0] += 1
            if key in hits:
                items.append(hits[key])
    for (origin, key), (count, items) in seen.items():
        if not items:
            continue
        first = items[0]
        settings = ", ".join(dict.fromkeys(name(i.setting) for i in items))
        used = f"it is read with {first.reader.used_with()}"
        if len(items) == count[0] and strict:
            problems.append(f"{origin}.{key}: no cell reads it ({first.control}={settings}); "
                            f"{used} (remove it, or change {first.control})")
        else:
            warnings.append(f"{origin}.{key}: ignored in {len(items)} of {count[0]} cells "
                            f"({first.control}={settings}); {used}")


def preflight_cells(trial_config: Callable[[dict[str, Any]], Config],
                    axes: dict[str, dict[str, Any]], limit: int,
                    source: str) -> tuple[list[str], list[str]]:
    """(problems, notes) of ``tuneable_gan.preflight`` on the first ``limit`` probe cells, each
    cell's config from ``trial_config`` (at the base seed). One problem line per distinct
    problem, naming its first cell and how many more have it; each note once."""
    from tuneable_gan.preflight import Preflight  # lazy: loading a space builds no models

    check, found, notes = Preflight(), {}, []
    todo, total = probe_cells(axes, limit)
    for params in todo or [{}]:
        try:
            notes += check.check(trial_config(params))
        except UserError as e:
            for p in e.problems:
                found.setdefault(p, [params, 0])[1] += 1
    problems = []
    for p, (params, n) in found.items():
        what = ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "every cell"
        more = f" (and {n - 1} more)" if n > 1 else ""
        problems.append(f"{source}: cells: {what}{more}: {p}")
    if total > len(todo):
        notes.append(f"checked the first {len(todo)} of {total} cells")
    return problems, list(dict.fromkeys(notes))


def scheduler_problems(tune: Any, base: Config | None, base_doc: dict[str, Any],
                       axes: dict[str, dict[str, Any]], cells: tuple[CellRule, ...],
                       checked: bool) -> list[str]:
    """What the scheduler cannot do with this sweep (``tune`` a ``TuneSpec``; ``checked``: the
    space and the cell rules parsed, so their values can be enumerated)."""
    name, out = tune.scheduler.name, []
    judged = name in (*ASHA_SCHEDULERS, *PBT_SCHEDULERS)
    if judged and base is not None and checked and any(
            v > 0 for v in possible_values("sparsity.level", base, base_doc, axes, cells)):
        # Stage-I reports carry no FID of the ticket, and how many a trial makes depends on
        # which rounds it reuses: ASHA's rungs would compare unlike things (tuneable_gan.lottery).
        out.append(f"tune.scheduler={name} cannot judge lottery-ticket trials (sparsity.level "
                   "> 0 runs ticket rounds first, with no ticket FID to compare); use "
                   "scheduler: fifo")
    if name not in PBT_SCHEDULERS:
        return out
    if tune.num_to_keep < 3:
        out.append(f"tune.num_to_keep must be >= 3 with {name}, got {tune.num_to_keep}: a "
                   "donor's checkpoint must outlive its clone's restore")
    if tune.search == "optuna":
        out.append(f"tune.scheduler={name} takes its population from search: grid or random "
                   "(Optuna's suggestions would be mutated under it)")
    if base is not None and checked:
        out += pbt_problems(name, dict(tune.scheduler.params), [
            int(v) for v in possible_values("train.eval_every", base, base_doc, axes, cells)])
    return out


def parse_baseline(raw: Any, axes: dict[str, dict[str, Any]], problems: list[str],
                   derived: bool = False) -> dict[str, Any]:
    """The ``baseline:`` of a space: the reference cell the report compares every other with,
    as ``{grid axis: one of its values}`` (``{regularizer.name: none}``), values normalised as
    the axis's. In a derived spec (``--set``, ``--smoke``) a key whose axis is gone or no longer
    holds the value is dropped (the derived sweep has no such cell), not an error."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        problems.append("baseline must be a mapping of grid axes to one of their values, e.g. "
                        f"{{regularizer.name: none}}; got {raw!r}")
        return {}
    grids = {k: ax["grid"] for k, ax in axes.items() if "grid" in ax and k != SEED_KEY}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        match = grid_match(grids, key, value)
        if match:
            out[key] = match[0]
        elif not derived:
            valid = ", ".join(grids) or "none (no grid axis)"
            problems.append(f"baseline.{key}: must be a grid axis and one of its values "
                            f"(grid axes: {valid}); got {value!r}"
                            + (f" (its values: {grids[key]})" if key in grids else ""))
    return out
