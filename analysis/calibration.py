"""Can early stopping be trusted? The report's "Proxy calibration" section.

* ``proxy_calibration``: for each rung (ASHA's, else every evaluation but the last), the
  Spearman correlation between the finished trials' metric at that rung and their final metric,
  with a bootstrap CI over trials, and where the finally best trial ranked at the rung. A low
  correlation at the first rung says the grace period was too short for the metric to rank
  configurations.
* ``best_vs_budget``: the expected best final metric found as a function of trial-hours, over
  random orders of the trials (each order pays every trial's compute, stopped ones included,
  and finds only finished trials' final values).
* ``section``: both as report blocks (summary, table, figure).

Only finished trials enter the correlation: a trial ASHA stopped has no final value. Those that
finished are the ones the rungs kept, so the spread of their rung values is narrowed (range
restriction) and the correlation is, if anything, lower than over all configurations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from analysis import tables
from analysis.collect import scheduler_of
from analysis.plots import PlotResult, plt, save_figure
from analysis.stats import direction

ASHA_NAMES = ("asha", "seed_asha")  # the schedulers with rungs
MIN_TRIALS = 3  # a rank correlation of two points is always +-1
N_BOOT, N_ORDERS = 2000, 1000


def rung_iterations(tune: dict[str, Any], reports: int) -> list[int]:
    """The report counts at which the sweep's scheduler judged trials: ASHA's (and seed-group
    ASHA's) rungs grace_period * rf**k below max_t; for other schedulers every report before
    the last, since any of them could have been a rung."""
    name, params = scheduler_of({"tune": tune})
    if name not in ASHA_NAMES:
        return list(range(1, reports))
    grace, rf = float(params.get("grace_period", 1)), float(params.get("reduction_factor", 4))
    max_t = float(params.get("max_t", reports))
    # Ray's milestones are grace * rf**k up to max_t; a trial is judged at the first report
    # at or past one. The last report has nothing left to predict.
    k_max = int(math.log(max_t / grace) / math.log(rf) + 1) if max_t >= grace else 0
    found = {math.ceil(grace * rf ** k - 1e-9) for k in range(k_max)}
    return sorted(t for t in found if t < min(max_t, reports))


def _training_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = df[df["step"].notna() & pd.to_numeric(df.get(metric), errors="coerce").notna()]
    if "stage" in rows:  # ticket rounds report too; their steps are not the final run's
        rows = rows[rows["stage"].isna() | (rows["stage"] == "train")]
    return rows.sort_values(["trial_id", "step"])


def _finished(rows: pd.DataFrame) -> list[pd.DataFrame]:
    return [g.reset_index(drop=True) for _, g in rows[rows["status"] == "finished"]
            .groupby("trial_id", sort=True)]


def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = N_BOOT,
                seed: int = 0) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho of ``x`` and ``y`` and its 95% percentile bootstrap CI
    over resampled pairs (resamples with a constant side are left out)."""
    rho = float(st.spearmanr(x, y).statistic) if len(x) >= MIN_TRIALS else math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    rx, ry = st.rankdata(x[idx], axis=1), st.rankdata(y[idx], axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    ok = den > 0
    boots = (rx * ry).sum(1)[ok] / den[ok]
    if boots.size < n_boot // 2:
        return rho, math.nan, math.nan
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return rho, float(lo), float(hi)


def proxy_calibration(df: pd.DataFrame, metric: str, rungs: list[int],
                      seed: int = 0) -> pd.DataFrame:
    """One row per rung (report count): its step, the finished trials used (``n``), Spearman's
    rho of rung vs final ``metric`` with its CI, and the finally best trial's rank at the rung
    (1 = best there)."""
    sign = -1.0 if direction(metric) == "max" else 1.0
    trials = _finished(_training_rows(df, metric))
    out = []
    for r in rungs:
        have = [g for g in trials if len(g) > r]  # a rung before the final report
        if not have:
            continue
        at = np.array([float(g[metric].iloc[r - 1]) for g in have])
        final = np.array([float(g[metric].iloc[-1]) for g in have])
        step = int(have[0]["step"].iloc[r - 1])
        rho, lo, hi = (spearman_ci(at, final, seed=seed) if len(have) >= MIN_TRIALS
                       else (math.nan,) * 3)
        best = int(np.argmin(sign * final))
        rank = int(st.rankdata(sign * at, method="min")[best])
        out.append({"rung": r, "step": step, "n": len(have), "spearman": rho,
                    "ci_low": lo, "ci_high": hi, "best_rank": rank})
    return pd.DataFrame(out, columns=["rung", "step", "n", "spearman", "ci_low", "ci_high",
                                      "best_rank"])


def best_vs_budget(df: pd.DataFrame, metric: str, n_orders: int = N_ORDERS, points: int = 60,
                   seed: int = 0) -> pd.DataFrame:
    """Best final ``metric`` found after spending ``hours`` trial-hours, over ``n_orders``
    random orders of the trials: median and the 10-90% band (NaN where under half / a tenth of
    the orders had found a finished trial), and ``found``, the share of orders that had."""
    rows = _training_rows(df, metric)
    last = rows.groupby("trial_id", sort=True).tail(1)
    hours = pd.to_numeric(last.get("time_total_s"), errors="coerce").to_numpy() / 3600
    sign = -1.0 if direction(metric) == "max" else 1.0
    value = np.where(last["status"].to_numpy() == "finished",
                     sign * pd.to_numeric(last[metric]).to_numpy(), np.inf)
    keep = np.isfinite(hours)
    hours, value = hours[keep], value[keep]
    if not np.isfinite(value).any():
        return pd.DataFrame(columns=["hours", "median", "low", "high", "found"])
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n_orders, len(hours))), axis=1)
    spent = np.cumsum(hours[order], axis=1)
    best = np.minimum.accumulate(value[order], axis=1)
    grid = np.linspace(0, spent[0, -1], points)
    at = np.stack([np.searchsorted(s, grid, side="right") - 1 for s in spent])
    found = np.where(at >= 0, np.take_along_axis(best, np.maximum(at, 0), axis=1), np.inf)
    # inf (nothing found yet) sorts last; a sample quantile, since inf - inf interpolates to NaN
    q = np.quantile(found, [0.1, 0.5, 0.9], axis=0, method="inverted_cdf")
    q = np.where(np.isfinite(q), sign * q, np.nan)
    low, high = (q[0], q[2]) if sign > 0 else (q[2], q[0])
    return pd.DataFrame({"hours": grid, "median": q[1], "low": low, "high": high,
                         "found": np.isfinite(found).mean(axis=0)})


def _plot(cal: pd.DataFrame, curve: pd.DataFrame, out_dir: Path, metric: str) -> PlotResult:
    title = (f"Proxy calibration: Spearman rho of rung vs final {metric} (95% CI), and the best "
             f"final {metric} found against trial-hours (median, 10-90% over trial orders)")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    ok = cal.dropna(subset=["spearman"])
    if not ok.empty:
        err = np.vstack([ok["spearman"] - ok["ci_low"], ok["ci_high"] - ok["spearman"]])
        a.errorbar(ok["step"], ok["spearman"], yerr=np.nan_to_num(err), fmt="o-", capsize=3)
    a.axhline(0, color="#999", lw=0.8)
    a.set(xlabel="rung (G steps)", ylabel="Spearman rho", ylim=(-1.05, 1.05),
          title="does the rung rank like the end?")
    b.plot(curve["hours"], curve["median"], color="C1")
    b.fill_between(curve["hours"], curve["low"], curve["high"], color="C1", alpha=0.25)
    b.set(xlabel="trial-hours spent", ylabel=f"best final {metric}",
          title="expected best vs budget")
    return PlotResult("calibration", title, save_figure(fig, out_dir, "calibration"))


def _hours(h: float) -> str:
    return f"{h:.3g} trial-hours" if h >= 2 else f"{60 * h:.3g} trial-minutes"


def _summary(cal: pd.DataFrame, curve: pd.DataFrame, metric: str, rf: float | None) -> str:
    parts = []
    for r in cal.itertuples():
        rho = ("—" if math.isnan(r.spearman) else f"{r.spearman:.2f}"
               + ("" if math.isnan(r.ci_low) else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"))
        parts.append(f"step {r.step}: rho {rho}, final best ranked {r.best_rank} of {r.n}")
    text = f"Rung {metric} against final {metric}, over finished trials: " + "; ".join(parts)
    if not cal.empty and rf:
        rank, n = int(cal["best_rank"].iloc[0]), int(cal["n"].iloc[0])
        keep = max(1, math.floor(n / rf))
        verdict = ("would have survived" if rank <= keep else
                   "would NOT have survived; the grace period looks too short")
        text += (f". At the first rung the final best ranked {rank} of {n}; a cut to the "
                 f"top 1/{rf:g} keeps {keep}: it {verdict}")
    done = curve.dropna(subset=["median"])
    if not done.empty:
        end = done["median"].iloc[-1]
        hit = done[np.isclose(done["median"], end)]["hours"].iloc[0]
        text += (f". Half the trial orders reach the final best {metric} {end:.4g} after "
                 f"{_hours(hit)} of {_hours(done['hours'].iloc[-1])}")
    return text + "."


def section(df: pd.DataFrame, metric: str, out_dir: Path) -> list[tuple[str, Any]]:
    """Report blocks: a heading, the summary line and, given enough finished trials, the
    table (also written as calibration.md/.tex/.csv) and the figure."""
    attrs = df.attrs
    rows = _training_rows(df, metric)
    reports = int(rows.groupby("trial_id").size().max()) if not rows.empty else 0
    rungs = rung_iterations(attrs.get("tune", {}), reports)
    cal = proxy_calibration(df, metric, rungs)
    n = int(cal["n"].max()) if not cal.empty else 0
    blocks: list[tuple[str, Any]] = [("h2", "Proxy calibration")]
    if n < MIN_TRIALS:
        return blocks + [("p", f"Needs at least {MIN_TRIALS} finished trials with a report "
                               f"before their last; this sweep has {n}.")]
    name, params = scheduler_of(attrs)
    # Only ASHA cuts to the top 1/rf at a rung; a FIFO sweep reads every evaluation as one.
    rf = float(params.get("reduction_factor", 4)) if name in ASHA_NAMES else None
    curve = best_vs_budget(df, metric)
    raw = cal.copy()
    table = tables.Table(
        columns=["rung", "step", "n", "Spearman rho", "95% CI", "final best's rank"],
        rows=[[str(r.rung), str(r.step), str(r.n),
               "—" if math.isnan(r.spearman) else f"{r.spearman:.2f}",
               "—" if math.isnan(r.ci_low) else f"[{r.ci_low:.2f}, {r.ci_high:.2f}]",
               f"{r.best_rank} of {r.n}"] for r in cal.itertuples()],
        bold=[[False] * 6 for _ in range(len(cal))], raw=raw,
        caption=(f"Spearman correlation between a finished trial's {metric} at each rung and "
                 f"its final {metric} (bootstrap CI over trials, {N_BOOT} resamples); ranks "
                 "are 1 = best at that rung. Finished trials only: range restriction makes "
                 "rho a lower bound."))
    tables.write_tables(table, out_dir, "calibration")
    fig = _plot(cal, curve, out_dir / "plots", metric)
    return blocks + [("p", _summary(cal, curve, metric, rf)), ("table", table), ("img", fig)]
