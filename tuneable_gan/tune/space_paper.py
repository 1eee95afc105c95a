"""The ``paper:`` section of a search space: the published numbers of its cells, so the report
can set them beside what the sweep reproduced, each side with its protocol.

    paper:
      source: "DigGAN (Fang et al., 2022), Table 1"
      protocol: "FID of 10k samples against the CIFAR-10 test set, best checkpoint"
      metric: fid_best            # the metric of this sweep the values are set beside
      values:
        - {when: {regularizer.name: none, data.fraction: 0.1}, value: 36.35, column: "BigGAN, 10%"}

Each ``when`` names grid axes and one of their values (a cell, or a slice when it leaves axes
free); the problems are one line each, naming the key. No Ray here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tuneable_gan.constants import METRICS, SEED_KEY

PAPER_KEYS = ("source", "protocol", "metric", "values")
VALUE_KEYS = ("when", "value", "column")


@dataclass(frozen=True)
class PaperValue:
    """One published number: the cell it belongs to, the value, the table column it is in."""

    when: dict[str, Any]
    value: float
    column: str = ""


@dataclass(frozen=True)
class PaperSpec:
    """The published numbers of a space's cells (``source``: the paper and table; ``protocol``:
    how the paper measured them; ``metric``: the sweep's metric they are set beside)."""

    source: str
    protocol: str
    metric: str
    values: tuple[PaperValue, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The section as written (``parse_paper`` reads it back into an equal spec)."""
        return {"source": self.source, "protocol": self.protocol, "metric": self.metric,
                "values": [{"when": dict(v.when), "value": v.value, "column": v.column}
                           for v in self.values]}


def grid_match(grids: dict[str, list[Any]], key: str, value: Any) -> list[Any]:
    """The values of grid axis ``key`` equal to ``value`` (an int written for a float axis
    matches it), in the axis's own normalised form; empty when ``key`` is no grid axis."""
    return [v for v in grids.get(key, []) if v == value or (
        isinstance(v, float) and isinstance(value, (int, float)) and float(value) == v)]


def parse_paper(raw: Any, axes: dict[str, dict[str, Any]], problems: list[str],
                derived: bool = False) -> PaperSpec | None:
    """The ``paper:`` section, values normalised as the axes'; None when absent. In a derived
    spec (``--set``, ``--smoke``) an entry whose cell the grid lost is dropped, not an error."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"paper must be a mapping with {', '.join(PAPER_KEYS)}; got {raw!r}")
        return None
    problems += [f"paper.{k}: unknown key; valid: {', '.join(PAPER_KEYS)}"
                 for k in raw if k not in PAPER_KEYS]
    texts = {}
    for key, what in (("source", "which paper and table"), ("protocol", "how it measured")):
        texts[key] = raw.get(key)
        if not isinstance(texts[key], str) or not texts[key].strip():
            problems.append(f"paper.{key} must say {what} (a non-empty string)")
    metric = raw.get("metric", "fid")
    if metric not in METRICS:
        problems.append(f"paper.metric must be a reported metric ({', '.join(METRICS)}); "
                        f"got {metric!r}")
    grids = {k: ax["grid"] for k, ax in axes.items() if "grid" in ax and k != SEED_KEY}
    values: list[PaperValue] = []
    raw_values = raw.get("values")
    if not isinstance(raw_values, list) or not raw_values:
        problems.append("paper.values must be a non-empty list of {when, value, column}")
        raw_values = []
    for i, entry in enumerate(raw_values):
        where = f"paper.values[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a mapping with {', '.join(VALUE_KEYS)}")
            continue
        problems += [f"{where}.{k}: unknown key; valid: {', '.join(VALUE_KEYS)}"
                     for k in entry if k not in VALUE_KEYS]
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            problems.append(f"{where}.value must be a number, got {value!r}")
            continue
        when = entry.get("when")
        if not isinstance(when, dict) or not when:
            problems.append(f"{where}.when must be a mapping of grid axes to their values")
            continue
        cell, lost = {}, False
        for key, v in when.items():
            hit = grid_match(grids, key, v)
            if hit:
                cell[key] = hit[0]
            elif derived:
                lost = True
            else:
                problems.append(f"{where}.when.{key}: must be a grid axis and one of its values "
                                f"(grid axes: {', '.join(grids) or 'none'}); got {v!r}")
        if not lost:
            values.append(PaperValue(cell, float(value), str(entry.get("column") or "")))
    if derived and not values:
        return None
    return PaperSpec(str(texts["source"]), str(texts["protocol"]), str(metric), tuple(values))
