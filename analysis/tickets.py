"""Lottery-ticket accounting of a sweep: where each trial stands (stage I rounds or stage II) and
how many ticket rounds the shared ticket store saved.

A trial at sparsity level s needs k = ``rounds_for(s)`` pruning rounds. It reports
``rounds_computed`` (rounds it trained itself) and ``rounds_reused`` (rounds it loaded from the
store, found by a trial with the same ticket key), so a sweep's saving is
Σ needed − Σ computed over its trials: what every trial alone would have paid, minus what the
sweep paid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats import plain_value
from analysis.tables import Table
from tuneable_gan.config import SparsityConfig, valid_keys
from tuneable_gan.sparsity import rounds_for
from tuneable_gan.tickets import fields_of

LEVEL = "sparsity.level"


def has_tickets(last: pd.DataFrame) -> bool:
    """Whether any trial of ``last`` (``collect.trial_table``) is sparse."""
    return LEVEL in last and bool((pd.to_numeric(last[LEVEL], errors="coerce") > 0).any())


def _per_round(row: pd.Series) -> float:
    v = plain_value(row.get("sparsity.per_round"))
    return SparsityConfig().per_round if v is None else float(v)


def _needed(row: pd.Series) -> int:
    return rounds_for(float(row[LEVEL]), _per_round(row))


def _count(v: object) -> int:
    v = plain_value(v)
    return 0 if v is None else int(v)


def where(row: pd.Series) -> str:
    """``ticket round 2 of 6`` (stage I, training round 2) or ``train step 500`` (stage II)."""
    if row.get("stage") == "ticket":
        return f"ticket round {_count(row.get('round'))} of {_needed(row)}"
    return f"train step {_count(row.get('step'))}"


def ticket_table(last: pd.DataFrame) -> tuple[Table, str]:
    """One row per sparsity level: its rounds k, the density (1 - per_round)^k, the measured
    sparsity of G's conv weights, the trials (and where the unfinished ones stand) and the rounds
    they computed and reused; and a sentence with the sweep's totals."""
    frame = last.copy()
    n = len(frame)
    per_round = [_per_round(r) for _, r in frame.iterrows()]
    frame["needed"] = [rounds_for(float(v), p) for v, p in zip(frame[LEVEL], per_round)]
    frame["computed"] = [_count(v) for v in frame.get("rounds_computed", [None] * n)]
    frame["reused"] = [_count(v) for v in frame.get("rounds_reused", [None] * n)]
    frame["measured"] = pd.to_numeric(frame.get("sparsity", np.nan), errors="coerce")
    keep = 1 - (per_round[0] if len(set(per_round)) == 1 else SparsityConfig().per_round)
    rows, raw = [], []
    for level, g in frame.groupby(LEVEL, sort=True):
        k = int(g["needed"].iloc[0])
        stand = "; ".join(f"{r.trial_id}: {where(r)}"
                          for _, r in g[g["status"] == "running"].iterrows())
        measured = g["measured"].dropna()
        rec = {"level": float(level), "rounds": k, "density": keep ** k,
               "measured_sparsity": measured.mean() if len(measured) else np.nan,
               "trials": len(g), "rounds_computed": int(g["computed"].sum()),
               "rounds_reused": int(g["reused"].sum())}
        raw.append(rec)
        rows.append([f"{rec['level']:g}", str(k), f"{rec['density']:.4f}",
                     f"{rec['measured_sparsity']:.4f}" if len(measured) else "—",
                     str(len(g)), str(rec["rounds_computed"]), str(rec["rounds_reused"]), stand])
    needed, computed = int(frame["needed"].sum()), int(frame["computed"].sum())
    saved = needed - computed
    summary = (f"Ticket rounds: {computed} computed and {int(frame['reused'].sum())} reused from "
               f"the shared ticket store{_keys(frame)}; the trials alone would have computed "
               f"{needed}" + (f", so reuse saved {saved} rounds ({100 * saved / needed:.0f}%)."
                              if needed else "."))
    columns = ["level", "rounds k", f"density {keep:g}^k", "measured sparsity", "trials",
               "rounds computed", "rounds reused", "unfinished trials: where"]
    caption = ("Measured sparsity: of G's conv weights at each trial's last report, mean over "
               "the level's trials. Rounds are summed over the level's trials; a trial that "
               "stopped mid-round counts the rounds it finished.")
    table = Table(columns, rows, [[False] * len(columns) for _ in rows], pd.DataFrame(raw),
                  caption, n_factors=1)
    return table, summary


def _keys(frame: pd.DataFrame) -> str:
    """`` (the sweep holds N tickets)``: distinct ticket keys among the sparse trials, from the
    fields ``tickets.fields_of`` picks out of each trial's config columns."""
    sparse = frame[frame["needed"] > 0]
    known = set(valid_keys())
    cols = [c for c in sparse.columns if c in known]
    if sparse.empty or not cols:
        return ""
    keys = {repr(sorted((k, repr(v)) for k, v in fields_of(
                {c: plain_value(r[c]) for c in cols}).items()))
            for _, r in sparse.iterrows()}
    return f" (the sweep holds {len(keys)} ticket{'s' if len(keys) != 1 else ''})"
