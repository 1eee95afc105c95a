"""The report's PBT section: who cloned whom when, and each mutated value's schedule.

A PBT clone reports ``pbt_parent`` (the donor trial) and ``pbt_cloned_at`` (the donor's step it
continued from) with every report after its exploit (``tuneable_gan.tune.trainable``); the
mutated values are the trial's config columns of each report, so their schedule over steps is
read straight from the reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis import tables
from analysis.collect import scheduler_of
from analysis.plots import PlotResult, plt, save_figure
from analysis.stats import direction

PBT_NAMES = ("pbt", "pb2")


def mutated_keys(attrs: dict[str, Any]) -> list[str]:
    """The keys a PBT/PB2 sweep mutates (none for other schedulers)."""
    name, params = scheduler_of(attrs)
    return list(params.get("mutations", {})) if name in PBT_NAMES else []


def lineage(df: pd.DataFrame) -> pd.DataFrame:
    """One row per exploit: the trial, the donor, the donor's step it continued from, and the
    first step the clone reported; in step order."""
    cols = ["trial_id", "parent", "cloned_at", "first_step"]
    if "pbt_parent" not in df:
        return pd.DataFrame(columns=cols)
    rows = df[df["pbt_parent"].notna() & df["step"].notna()].sort_values(["trial_id", "step"])
    out = (rows.groupby(["trial_id", "pbt_parent", "pbt_cloned_at"], sort=False)["step"].min()
           .reset_index().rename(columns={"pbt_parent": "parent", "pbt_cloned_at": "cloned_at",
                                          "step": "first_step"}))
    out["cloned_at"] = out["cloned_at"].astype(int)
    out["first_step"] = out["first_step"].astype(int)
    return out.sort_values(["cloned_at", "trial_id"]).reset_index(drop=True)[cols]


def schedules(df: pd.DataFrame, keys: list[str], out_dir: Path) -> PlotResult:
    """Each mutated value against G steps, one line per trial (log scale for positive values
    spanning more than a decade), exploits marked."""
    title = "PBT: each mutated value over G steps, one line per trial (dots: exploits)"
    keys = [k for k in keys if k in df]
    if not keys:
        return PlotResult("pbt_schedules", title, reason="no mutated key was reported")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    rows = df[df["step"].notna()].sort_values("step")
    for ax, key in zip(axes[0], keys):
        for i, (tid, g) in enumerate(rows.groupby("trial_id", sort=True)):
            v = pd.to_numeric(g[key], errors="coerce")
            ax.step(g["step"], v, where="post", lw=1.2, color=f"C{i % 10}", label=tid)
            if "pbt_parent" in g:
                first = g[g["pbt_parent"].notna()].groupby(["pbt_parent", "pbt_cloned_at"])
                for _, e in first:
                    ax.plot(e["step"].iloc[0], pd.to_numeric(e[key]).iloc[0], "o",
                            color=f"C{i % 10}", ms=4)
        vals = pd.to_numeric(rows[key], errors="coerce").dropna()
        if len(vals) and (vals > 0).all() and vals.max() / vals.min() > 10:
            ax.set_yscale("log")
        ax.set(xlabel="G step", title=key)
    if rows["trial_id"].nunique() <= 10:
        axes[0][-1].legend(fontsize=6, loc="best")
    return PlotResult("pbt_schedules", title, save_figure(fig, out_dir, "pbt_schedules"))


def section(df: pd.DataFrame, metric: str, out_dir: Path) -> list[tuple[str, Any]]:
    """Report blocks for a PBT/PB2 sweep (none for other schedulers): a summary line, the
    lineage table (also lineage.md/.tex/.csv) and the schedules figure."""
    keys = mutated_keys(df.attrs)
    if not keys:
        return []
    lin = lineage(df)
    n_trials = int(df["trial_id"].nunique())
    text = (f"{len(lin)} exploit(s) across {lin['trial_id'].nunique() if len(lin) else 0} of "
            f"{n_trials} trials; mutated: {', '.join(keys)}.")
    last = df[df["step"].notna()].sort_values("step").groupby("trial_id").tail(1)
    vals = pd.to_numeric(last[metric], errors="coerce")
    if vals.notna().any():
        best = last.loc[vals.idxmax() if direction(metric) == "max" else vals.idxmin()]
        chain, tid, seen = [], best["trial_id"], set()
        while tid not in seen:  # follow the latest donor back, as far as the lineage goes
            seen.add(tid)
            mine = lin[lin["trial_id"] == tid]
            if mine.empty:
                break
            e = mine.iloc[-1]
            chain.append(f"{tid} cloned {e['parent']} at step {e['cloned_at']}")
            tid = e["parent"]
        text += (f" The final best trial, {best['trial_id']} ({metric} {vals.loc[best.name]:.4g})"
                 + (f": {'; '.join(chain)}." if chain else ", was never exploited."))
    blocks: list[tuple[str, Any]] = [("h2", "Population-based training"), ("p", text)]
    if len(lin):
        table = tables.Table(
            columns=["trial", "cloned", "at the donor's step", "first report after"],
            rows=[[r.trial_id, r.parent, str(r.cloned_at), str(r.first_step)]
                  for r in lin.itertuples()],
            bold=[[False] * 4 for _ in range(len(lin))], raw=lin,
            caption="Each exploit: the trial that was overwritten, its donor, and the donor's "
                    "checkpoint step it continued from with perturbed values.")
        tables.write_tables(table, out_dir, "lineage")
        blocks.append(("table", table))
    fig = schedules(df, keys, out_dir / "plots")
    blocks.append(("img", fig) if fig.png else ("p", f"{fig.title}: skipped ({fig.reason})."))
    return blocks

