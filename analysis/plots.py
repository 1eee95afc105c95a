"""Figures of a sweep (matplotlib Agg; each written as PNG and SVG), each made only when the data
supports it; otherwise the result says why not. Every figure that colours by cell takes the
colour of ``plot_base.cell_colors`` (one colour per cell across all figures, see there).

* ``metric_vs_factor``: FID against regularization strength (log x, the DigGAN paper's Fig. 10)
  when ``regularizer.weight`` is swept, or against ``sparsity.level``;
* ``learning_curves``: FID over training per cell, mean ± std over seeds (log y where the
  values span more than a factor of 3, ``plot_base.y_scale``);
* ``dig_curves``: the discriminator gradient gap over training per cell (log y; the paper's
  Fig. 1 and 6, whose lines are data fractions with and without the regularizer);
* ``sample_grids`` (``plot_samples``): 64 EMA-generator samples of the best trial of each cell,
  from its best checkpoint by the metric, beside 64 images of the run's training data;
* ``importance_bars``: fANOVA importance of the swept factors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import LogFormatter

from analysis.plot_base import (
    GROUP_STYLES,
    MAX_CELLS,
    PlotResult,
    cell_colors,
    cells,
    place_legend,
    plt,
    save_figure,
    y_scale,
)
from analysis.plot_samples import _from_ema, sample_grids
from analysis.stats import direction

# Re-exported: calibration and pbt draw with these; _from_ema's tests import it from here.
__all__ = ["MAX_CELLS", "PlotResult", "cell_colors", "dig_curves", "importance_bars",
           "learning_curves", "make_plots", "metric_vs_factor", "plt", "sample_grids",
           "save_figure", "_from_ema"]
LINE = "#777777"  # the lines joining the cells of one combination of the other factors


def _others(factors: list[str], key: str) -> list[str]:
    return [f for f in factors if f != key]


def metric_vs_factor(tv: pd.DataFrame, out_dir: str | Path, key: str = "regularizer.weight",
                     value: str = "fid", reading: str = "", *,
                     colors: dict[str, str] | None = None) -> PlotResult:
    """``value`` (per-cell mean ± std, seeds as dots) against factor ``key``: log x for
    ``regularizer.weight`` (a weight of 0 drawn as a dashed level). Each cell's points take
    its colour (``colors``, default ``cell_colors(tv)``), as in every figure; a grey line
    (its style and marker shape in the legend) joins the cells of one combination of the
    other factors. Needs ``key`` swept with >= 2 usable values."""
    name = {"regularizer.weight": "fid_vs_weight",
            "sparsity.level": "fid_vs_sparsity"}.get(key, f"{value}_vs_{key}")
    res = PlotResult(name, f"{value} against {key}" + (f" ({reading})" if reading else ""))
    factors = list(tv.attrs.get("factors", []))
    if key not in factors:
        res.reason = f"{key} is not swept"
        return res
    log = key == "regularizer.weight"
    use = tv[tv["usable"] & tv[value].notna() & tv[key].notna()]
    use = use[np.isfinite(use[value].astype(float))]
    xs = {float(x) for x in use[key] if not log or float(x) > 0}
    if len(xs) < 2:
        pos = "positive " if log else ""
        res.reason = f"fewer than two {pos}values of {key} with usable trials"
        return res
    colors = cell_colors(tv) if colors is None else colors
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, (group, g) in enumerate(cells(use, _others(factors, key))):
        ls, marker = GROUP_STYLES[j % len(GROUP_STYLES)]
        stats = g.groupby(key)[value].mean().reset_index()
        pos = stats[stats[key] > 0] if log else stats
        ax.plot(pos[key], pos[value], ls=ls, marker=marker, color=LINE, mfc="none", lw=1,
                zorder=1, label=group if group != "all" else None)
        for label, c in cells(g, factors):  # the cells of this line, one per value of key
            color = res.colors[label] = colors.get(label, LINE)
            x, m, s = float(c[key].iloc[0]), c[value].mean(), c[value].std()
            if log and x <= 0:
                ax.axhline(m, ls="--", color=color, lw=1, label=f"{label} (dashed)")
                continue
            ax.errorbar([x], [m], yerr=[0.0 if pd.isna(s) else s], marker=marker, capsize=3,
                        color=color, ls="none", zorder=3)
            ax.scatter(c[key], c[value], s=10, alpha=0.4, color=color, zorder=2)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(key + (" (log)" if log else ""))
    ax.set_ylabel(value)
    ax.set_title(res.title, fontsize=10)
    place_legend(ax)
    res.paths = save_figure(fig, Path(out_dir), name)
    return res


def _curve_cells(df: pd.DataFrame, metric: str, factors: list[str]) -> list[tuple[str, Any]]:
    rows = df[df["step"].notna()]
    if "diverged" in rows:  # a diverged report carries fid = inf, not a point on the curve
        rows = rows[~rows["diverged"].fillna(False).astype(bool)]
    rows = rows[np.isfinite(pd.to_numeric(rows[metric], errors="coerce"))]
    out = []
    for label, g in cells(rows, factors):
        curve = g.groupby("step")[metric].agg(["mean", "std", "count"])
        if not curve.empty:
            out.append((label, curve))
    return out


def _top(found: list[tuple[str, Any]], metric: str) -> tuple[list[tuple[str, Any]], str]:
    if len(found) <= MAX_CELLS:
        return found, ""
    better = direction(metric) or "min"
    score = [(c["mean"].min() if better == "min" else -c["mean"].max()) for _, c in found]
    keep = sorted(range(len(found)), key=lambda i: score[i])[:MAX_CELLS]
    return [found[i] for i in sorted(keep)], f" (best {MAX_CELLS} of {len(found)} cells)"


def learning_curves(df: pd.DataFrame, out_dir: str | Path, metric: str = "fid", *,
                    colors: dict[str, str] | None = None) -> PlotResult:
    """``metric`` against step, one line per cell (mean over its seeds, in the cell's colour:
    ``colors``, default ``cell_colors(df)``) with a ± std band where two or more seeds report
    that step. The y axis is log when every plotted mean is positive and the largest is more
    than 3 times the smallest (``plot_base.y_scale``: an FID falling from 55 to 5 would
    otherwise flatten everything after the first evaluations), else linear."""
    res = PlotResult(f"{metric}_curves", f"{metric} over training per cell (mean ± std over "
                                         "seeds; dotted: fewer seeds, the others stopped)")
    if metric not in df.columns:
        res.reason = f"{metric} is not reported"
        return res
    found, more = _top(_curve_cells(df, metric, list(df.attrs.get("factors", []))), metric)
    if not found or all(len(c) < 2 for _, c in found):
        res.reason = f"fewer than two reports of {metric} per cell"
        return res
    colors = cell_colors(df) if colors is None else colors
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, c in found:
        color = res.colors[label] = colors.get(label, LINE)
        # Where seeds have stopped, the mean is over the survivors only: draw that part dotted.
        full = c[c["count"] == c["count"].max()]
        ax.plot(c.index, c["mean"], ls=":", color=color)
        ax.plot(full.index, full["mean"], marker=".", color=color, label=label)
        band = c[c["count"] >= 2]
        ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"],
                        color=color, alpha=0.15, lw=0)
    scale = y_scale(np.concatenate([c["mean"].to_numpy(dtype=float) for _, c in found]))
    ax.set_yscale(scale)
    if scale == "log":  # plain numbers (50, 20, 5), not 5×10^1
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.4)))
    ax.set_xlabel("step (G updates)")
    ax.set_ylabel(metric + (" (log)" if scale == "log" else ""))
    res.title += more
    ax.set_title(res.title, fontsize=10)
    place_legend(ax)
    res.paths = save_figure(fig, Path(out_dir), res.name)
    return res


def dig_curves(df: pd.DataFrame, out_dir: str | Path, *,
               colors: dict[str, str] | None = None) -> PlotResult:
    """DIG (discriminator gradient gap) against step on a log scale, one line per cell in its
    colour (``colors``, default ``cell_colors(df)``); when ``data.fraction`` is swept the
    labels name it, the paper's Fig. 1 (and with the regularizer swept too, Fig. 6)."""
    res = PlotResult("dig_curves", "discriminator gradient gap over training per cell")
    if "dig" not in df.columns:
        res.reason = "dig is not reported"
        return res
    factors = list(df.attrs.get("factors", []))
    rows = df[pd.to_numeric(df["dig"], errors="coerce") > 0]  # log scale: positive gaps only
    found, more = _top(_curve_cells(rows, "dig", factors), "dig")
    if not found or all(len(c) < 2 for _, c in found):
        res.reason = "fewer than two positive dig reports per cell"
        return res
    colors = cell_colors(df) if colors is None else colors
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, c in found:
        color = res.colors[label] = colors.get(label, LINE)
        ax.plot(c.index, c["mean"], marker=".", color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step (G updates)")
    ax.set_ylabel("DIG (log)")
    res.title += more
    ax.set_title(res.title, fontsize=10)
    place_legend(ax)
    res.paths = save_figure(fig, Path(out_dir), res.name)
    return res


def importance_bars(importances: dict[str, float], out_dir: str | Path,
                    reason: str = "", metric: str = "fid") -> PlotResult:
    """Horizontal bars of fANOVA importances (skipped with ``reason`` when there are none)."""
    res = PlotResult("importance", f"fANOVA importance of the swept factors for {metric}")
    if not importances:
        res.reason = reason or "no importances"
        return res
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(items)))
    ax.barh([k for k, _ in items], [v for _, v in items], color=LINE)  # factors, not cells
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of variance explained")
    ax.set_title(res.title, fontsize=10)
    res.paths = save_figure(fig, Path(out_dir), res.name)
    return res


def make_plots(df: pd.DataFrame, tv: pd.DataFrame, out_dir: str | Path, *, metric: str = "fid",
               importances: dict[str, float] | None = None, importance_reason: str = "",
               reading: str = "", samples: bool = True,
               colors: dict[str, str] | None = None) -> list[PlotResult]:
    """Every figure the data supports (``tv``: ``stats.trial_values`` of the reading used for
    the per-cell plots, described by ``reading``); skipped ones carry their reason. Every
    figure colours a cell alike: ``colors``, default ``cell_colors(df)`` over all cells."""
    out = Path(out_dir)
    colors = cell_colors(df) if colors is None else colors
    results = [learning_curves(df, out, metric, colors=colors),
               metric_vs_factor(tv, out, "regularizer.weight", metric, reading, colors=colors),
               metric_vs_factor(tv, out, "sparsity.level", metric, reading, colors=colors),
               dig_curves(df, out, colors=colors),
               importance_bars(importances or {}, out, importance_reason, metric)]
    if samples:
        results.append(sample_grids(tv, str(df.attrs.get("experiment", "")), out, metric, df,
                                    colors=colors))
    return results
