"""The report's "Paper vs this run" section: the published numbers a space carries (its
``paper:`` section, ``tuneable_gan.tune.space_paper``) beside what the sweep reproduced for the
same cells, with the protocol of each side, so a reader never mistakes one for the other."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis import stats, tables


def _num(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.2f}"


def comparison(df: pd.DataFrame) -> pd.DataFrame | None:
    """One row per (paper value, matching cell): the cell, the paper's column and value, this
    run's mean, 95% interval and n of the paper's metric over finished trials, and the
    difference; None when the sweep carries no paper values."""
    paper = df.attrs.get("paper")
    if not paper:
        return None
    metric = paper["metric"]
    if metric not in df.columns:
        return pd.DataFrame()
    agg = stats.aggregate(df, [metric])
    factors = list(agg.attrs.get("factors") or [])
    rows = []
    for entry in paper["values"]:
        when = entry["when"]
        hits = agg[np.logical_and.reduce([agg[k].map(lambda v, w=w: stats.same_value(v, w))
                                          for k, w in when.items() if k in agg]
                                         or [np.ones(len(agg), bool)])]
        for _, r in hits.iterrows():
            mean = float(r[f"{metric}_mean"])
            rows.append({"cell": stats.cell_label({f: r[f] for f in factors}),
                         "column": entry.get("column", ""), "paper": float(entry["value"]),
                         "mean": mean, "ci_low": float(r[f"{metric}_ci_low"]),
                         "ci_high": float(r[f"{metric}_ci_high"]), "n": int(r["n"]),
                         "n_seeds": int(r["n_seeds"]), "delta": mean - float(entry["value"])})
    out = pd.DataFrame(rows)
    out.attrs = {"metric": metric, "source": paper["source"], "protocol": paper["protocol"]}
    return out


def section(df: pd.DataFrame, protocol: str | None) -> list[tuple[str, Any]]:
    """Report blocks: the comparison table and each side's protocol (none without paper
    values). ``protocol``: this sweep's eval protocol fingerprint."""
    cmp = comparison(df)
    if cmp is None:
        return []
    paper = df.attrs["paper"]
    head: list[tuple[str, Any]] = [("h2", "Paper vs this run")]
    if cmp.empty:
        return head + [("p", f"The paper's values are {paper['metric']}, which this sweep did "
                              "not report.")]
    table = tables.Table(
        columns=["cell", "paper column", "paper", "this run", "95% CI", "n", "this - paper"],
        rows=[[r.cell, r.column, _num(r.paper), _num(r.mean),
               f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" if math.isfinite(r.ci_low) else "—",
               f"{r.n}/{r.n_seeds}", _num(r.delta)] for r in cmp.itertuples()],
        bold=[[False] * 7 for _ in range(len(cmp))], raw=cmp,
        caption=(f"{paper['metric']}: the paper's number ({paper['source']}) beside this "
                 "sweep's mean over its finished seeds with a 95% interval (n = finished / "
                 "all seeds). The two sides were measured as below; a difference in protocol "
                 "is a difference in the number, not in the method."))
    return head + [("table", table),
                   ("kv", [("paper", paper["protocol"]),
                           ("this run", f"{protocol or '—'}; {paper['metric']} at the last "
                                        "report of each finished trial")])]
