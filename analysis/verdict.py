"""The verdict at the top of a report: what won, by how much, how sure, in a few sentences
generated from the statistics (``stats.compare`` and ``stats.aggregate`` of one reading).

It names the best cell by mean metric, its difference from the baseline over matched seeds with
a 95% t interval of the paired differences, the test and its Holm-corrected p (and says in
words whether anything is significant), the number of seeds behind each number, what early
stopping removed, and a plain warning when a conclusion rests on one seed or when the cells'
protocols differ.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis import stats
from tuneable_gan.constants import direction

ALPHA = 0.05


def _fmt(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _cell(row: pd.Series, factors: list[str]) -> dict[str, Any]:
    return {f: row[f] for f in factors}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(stats.same_value(a[k], b[k]) for k in a)


def verdict(agg: pd.DataFrame, cmp: pd.DataFrame | None, metric: str, reading: str,
            seeds: int, stopped: int, trials: int, conditioning: list[str]) -> list[str]:
    """The verdict's sentences for one reading (``reading``: "finished trials" or "at step S,
    all trials"). ``agg``: ``stats.aggregate`` of that reading; ``cmp``: ``stats.compare`` of
    it (None without swept factors); ``seeds``: seeds per configuration in the design;
    ``stopped``: trials early stopping removed of ``trials``; ``conditioning``: the distinct
    conditioning parts of the cells' eval protocols (more than one: say so)."""
    lower = direction(metric) == "min"
    better = "lower" if lower else "higher"
    mean = f"{metric}_mean" if f"{metric}_mean" in agg else metric
    factors = list(agg.attrs.get("factors") or [])
    have = agg[agg["n"] > 0] if "n" in agg else agg
    out: list[str] = []
    if have.empty or mean not in have:
        return [f"No cell has a usable {metric} ({reading}): nothing can be concluded yet."]
    best = have.sort_values(mean, ascending=lower).iloc[0]
    best_cell = _cell(best, factors)
    n_best = int(best["n"])
    if cmp is not None and not cmp.empty:
        out += headline(cmp, factors, metric, lower)
    out.append(f"Best cell by mean {metric} ({reading}, {better} is better): "
               f"{stats.cell_label(best_cell) or 'the only configuration'}, "
               f"{metric} {_fmt(best[mean])} over {n_best} of {seeds} seed(s).")
    if cmp is not None and not cmp.empty:
        out += _against_baseline(cmp, best_cell, factors, metric, lower)
    if stopped:
        out.append(f"Early stopping removed {stopped} of {trials} trials from the final "
                   "values; cells with fewer finished seeds than the design rest on fewer "
                   "numbers (the per-cell counts are in the tables; the reading at the common "
                   "budget compares every trial).")
    if n_best < 2:
        out.append(f"Warning: the best cell's {metric} rests on one seed; it can be one lucky "
                   "run. Run more seeds before drawing a conclusion.")
    elif n_best < seeds:
        out.append(f"Warning: the best cell has {n_best} of its {seeds} seeds in this reading.")
    out += _memorisation(have, factors)
    if len(conditioning) > 1:
        out.append("Note: the cells' protocols differ in their conditioning ("
                   + "; ".join(conditioning) + "): the measurement is the same, the "
                   "generators are conditioned differently.")
    return out


def headline(cmp: pd.DataFrame, factors: list[str], metric: str, lower: bool) -> list[str]:
    """The answer first, in one sentence: did the most favourable cell beat the baseline on
    this run, by how much (95% interval over matched seeds) and how sure (Holm p)."""
    base = cmp.attrs.get("baseline_label", "the baseline")
    rows = cmp[~cmp["is_baseline"] & cmp["delta"].notna()]
    if rows.empty:
        return [f"Answer: no cell could be compared with the baseline ({base}) over matched "
                "seeds."]
    sign = 1.0 if lower else -1.0  # favourable = lower metric when lower is better
    r = rows.iloc[int((sign * rows["delta"].astype(float)).to_numpy().argmin())]
    cell = stats.cell_label(_cell(r, factors))
    delta, n, ph = float(r["delta"]), int(r["n_pairs"]), float(r["p_holm"])
    lo, hi = float(r.get("delta_lo", math.nan)), float(r.get("delta_hi", math.nan))
    ci = f" (95% CI [{_fmt(lo)}, {_fmt(hi)}])" if math.isfinite(lo) else ""
    by = f"{metric} {delta:+.3g}{ci} over {n} matched seed(s)"
    sure = (f"Holm-corrected p = {_fmt(ph)}" if math.isfinite(ph) else
            "no test (fewer than 2 matched seeds)")
    significant = math.isfinite(ph) and ph < ALPHA
    if sign * delta < 0 and significant:
        return [f"Answer: yes, {cell} beat the baseline ({base}) on this run: {by}; {sure}, "
                f"significant at {ALPHA}."]
    if sign * delta < 0:
        return [f"Answer: no cell beat the baseline ({base}) beyond seed-to-seed noise; the "
                f"best, {cell}, is {by}; {sure}, not significant at {ALPHA}."]
    worse = "significantly" if significant else "not significantly"
    return [f"Answer: no, no cell beat the baseline ({base}) on this run; the closest, {cell}, "
            f"is worse by {by}; {sure} ({worse} worse)."]


def _against_baseline(cmp: pd.DataFrame, best_cell: dict[str, Any], factors: list[str],
                      metric: str, lower: bool) -> list[str]:
    base_label = cmp.attrs.get("baseline_label", "the baseline")
    rows = cmp[~cmp["is_baseline"]]
    out: list[str] = []
    mine = [r for _, r in rows.iterrows() if _same(best_cell, _cell(r, factors))]
    if not mine:
        out.append(f"The best cell is the baseline ({base_label}): no other cell beats it.")
    else:
        r = mine[0]
        n = int(r["n_pairs"])
        delta = float(r["delta"])
        if n == 0 or not math.isfinite(delta):
            out.append(f"It shares no seed with the baseline ({base_label}): no paired "
                       "comparison.")
        else:
            lo, hi = float(r.get("delta_lo", math.nan)), float(r.get("delta_hi", math.nan))
            ci = (f", 95% CI [{_fmt(lo)}, {_fmt(hi)}]" if math.isfinite(lo) else
                  " (one matched seed: no interval)")
            p, ph = float(r["p"]), float(r["p_holm"])
            test = (f"{r['test']} test p = {_fmt(p)}, Holm-corrected p = {_fmt(ph)}"
                    if math.isfinite(p) else "no test (fewer than 2 matched seeds)")
            out.append(f"Against the baseline ({base_label}) over {n} matched seed(s): "
                       f"{metric} {delta:+.3g}{ci}; {test}.")
    tested = rows[rows["p_holm"].notna()]
    significant = tested[tested["p_holm"] < ALPHA]
    if tested.empty:
        out.append("No cell could be tested against the baseline (each needs 2 or more "
                   "seeds matched with it): nothing here is significant.")
    elif significant.empty:
        out.append(f"No difference from the baseline is significant at {ALPHA} after Holm's "
                   f"correction over the {len(tested)} cell(s) tested: at this number of "
                   "seeds the differences are within seed-to-seed noise.")
    else:
        def said(r: pd.Series) -> str:
            side = "worse" if (float(r["delta"]) > 0) == lower else "better"
            return (f"{stats.cell_label(_cell(r, factors))} is {side} than the baseline "
                    f"({metric} {float(r['delta']):+.3g}, p_holm {_fmt(float(r['p_holm']))})")

        out.append(f"Significant at {ALPHA} after Holm's correction over the {len(tested)} "
                   f"cell(s) tested: " + "; ".join(said(r) for _, r in significant.iterrows())
                   + ".")
    return out


def _memorisation(have: pd.DataFrame, factors: list[str]) -> list[str]:
    """A sentence on copying when the sweep measured it (eval.nn): the cells whose nn_ratio
    (fakes' nearest-neighbour distance to the training images over held-out reals') lies below
    1 with its whole 95% interval."""
    if "nn_ratio_mean" not in have or not have["nn_ratio_mean"].notna().any():
        return []
    hi = have["nn_ratio_ci_high"].where(have["nn_ratio_ci_high"].notna(), have["nn_ratio_mean"])
    copying = have[hi < 1.0]
    if copying.empty:
        return ["Memorisation (eval.nn): no cell's samples sit closer to the training images "
                "than held-out real images do (nn_ratio below 1 with its 95% interval)."]
    cells = "; ".join(f"{stats.cell_label(_cell(r, factors)) or 'the only configuration'} "
                      f"(nn_ratio {_fmt(float(r['nn_ratio_mean']))})"
                      for _, r in copying.iterrows())
    return [f"Memorisation (eval.nn): the samples of {cells} sit closer to the training images "
            "than held-out real images do (nn_ratio below 1 with its 95% interval): part of "
            "a low FID there is copying."]
