"""Ablation tables from ``stats.aggregate`` (+ ``stats.compare``): Markdown, LaTeX (booktabs),
CSV.

One row per cell: the factor values, ``n (seeds)`` (usable / all seeds of the cell), ``mean ±
std`` (or ``mean [95% CI]``, the t interval of ``stats.bootstrap_ci``) per value column, the
difference from the baseline with its Holm-corrected p-value and the test that gave it, and the
cell's stopped/diverged notes. A statistic that cannot be computed is "—", never a stand-in: no
interval below 2 seeds, no p-value below 2 seeds matched with the baseline (the caption says
so where it happens). The best mean of each column is bold: lowest for FID-like metrics,
highest for ``is_mean`` and ``modes_covered``; columns without a direction (dig, losses) get
none. The CSV names the interval's columns by what they are (``<v>_ci95_t_low``/``_high``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import output
from analysis.stats import direction, fmt_value, plain_value
from tuneable_gan.constants import SEED_KEY as SEED_COLUMN

_TEST_ABBR = {"paired t": "t", "Wilcoxon": "W"}
N_COLUMN = "n (seeds)"
# How stats.bootstrap_ci computed <v>_ci_low/high (aggregate's attrs["ci_method"], t if unset).
_CI_TEXT = {"t": "t interval of the mean, mean ± t * sd / sqrt(n), t from Student's t with n-1 "
                 "degrees of freedom",
            "auto": "t interval of the mean below 6 seeds, percentile bootstrap from 6"}
_LATEX_ESC = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
              "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
              "^": r"\textasciicircum{}"}


@dataclass
class Table:
    """A formatted table: header, display text per cell, which cells are bold, the numeric
    frame behind it (for CSV) and a caption saying what the numbers are."""

    columns: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]
    raw: pd.DataFrame
    caption: str
    n_factors: int = 0


def _decimals(values: np.ndarray) -> int:
    finite = np.abs(values[np.isfinite(values)])
    if finite.size == 0:
        return 2
    top = finite.max()
    return 1 if top >= 100 else 2 if top >= 1 else 3 if top >= 0.01 else 5


def _num(x: float, d: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{d}f}"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ablation_table(agg: pd.DataFrame, comparison: pd.DataFrame | None = None,
                   values: list[str] | None = None, *, spread: str = "std",
                   noise: Callable[[float, int], bool] | None = None) -> Table:
    """Format ``agg`` (``stats.aggregate``) and, when given, its ``comparison``
    (``stats.compare``, same factors, same cell order). ``values``: value columns to show
    (default all of ``agg``); ``spread``: "std" (mean ± std) or "ci" (mean [low, high]);
    ``noise``: whether a Δ over n matched seeds is within the evaluation noise floor
    (``noise_floor.Floor.swamps``); such a Δ is marked ``(noise)``."""
    if spread not in ("std", "ci"):
        raise ValueError(f"spread must be std or ci, got {spread!r}")
    factors = list(agg.attrs.get("factors", []))
    derived = [k for k in agg.attrs.get("derived", []) if k in agg.columns]
    values = list(values or agg.attrs.get("values", []))
    shorts = [f.rsplit(".", 1)[-1] for f in factors]
    names = [s if shorts.count(s) == 1 else f for f, s in zip(factors, shorts)]
    # A resolved value the run used (e.g. the paper rule's lambda), not a swept factor.
    columns = [*names, *(f"{k.rsplit('.', 1)[-1]} (resolved)" for k in derived), N_COLUMN,
               *values]
    has_cmp = comparison is not None and not comparison.empty
    if has_cmp:
        cv = comparison.attrs.get("value", "")
        columns += [f"Δ {cv}", "p (Holm)"]
    columns.append("stopped / notes")
    best: dict[str, float] = {}
    for v in values:
        means = agg[f"{v}_mean"].to_numpy(dtype=float)
        ok = np.isfinite(means)
        # A column where every cell ties says nothing: no bold there.
        if direction(v) and ok.sum() > 1 and np.ptp(means[ok]) > 0:
            best[v] = means[ok].min() if direction(v) == "min" else means[ok].max()
    dec = {v: _decimals(agg[f"{v}_mean"].to_numpy(dtype=float)) for v in values}
    if has_cmp:  # differences in the units (and decimals) of the compared value
        cv = comparison.attrs.get("value", "")
        dec["Δ"] = dec.get(cv) or _decimals(np.abs(agg[f"{cv}_mean"].to_numpy(dtype=float))
                                            if f"{cv}_mean" in agg else np.array([]))
    rows, bold = [], []
    for i, r in agg.reset_index(drop=True).iterrows():
        text = [_fmt_factor(r[f]) for f in [*factors, *derived]] + [
            f"{int(r['n'])}/{int(r['n_seeds'])}"]
        marks = [False] * len(text)
        for v in values:
            m, d = r[f"{v}_mean"], dec[v]
            if spread == "std":
                s = r[f"{v}_std"]
                text.append(_num(m, d) + ("" if pd.isna(s) or pd.isna(m) else f" ± {_num(s, d)}"))
            else:
                lo, hi = r[f"{v}_ci_low"], r[f"{v}_ci_high"]
                ci = " [—]" if pd.isna(lo) else f" [{_num(lo, d)}, {_num(hi, d)}]"
                text.append(_num(m, d) + ("" if pd.isna(m) else ci))
            marks.append(v in best and np.isfinite(m) and math.isclose(m, best[v]))
        if has_cmp:
            c = comparison.iloc[i]
            if c["is_baseline"]:
                text += ["baseline", ""]
            else:
                delta = "—" if pd.isna(c["delta"]) else f"{c['delta']:+.{dec['Δ']}f}"
                if noise is not None and noise(float(c["delta"]), int(c["n_pairs"])):
                    delta += " (noise)"
                abbr = _TEST_ABBR.get(c["test"], "")
                text += [delta, _p(c["p_holm"]) + (f" ({abbr})" if abbr else "")]
            marks += [False, False]
        text.append("; ".join(x for x in (r["stopped"], r["note"]) if x))
        marks.append(False)
        rows.append(text)
        bold.append(marks)
    raw = agg.rename(columns=_ci_names(agg, values))
    if has_cmp:
        keep = [c for c in ("is_baseline", "n_pairs", "delta", "delta_lo", "delta_hi", "test",
                            "p", "p_holm") if c in comparison]
        raw = pd.concat([raw.reset_index(drop=True), comparison[keep].reset_index(drop=True)],
                        axis=1)
    caption = _caption(agg, comparison if has_cmp else None, spread)
    if has_cmp and noise is not None:
        caption += (" (noise): |Δ| within what re-drawing the evaluation latents alone moves "
                    "a difference over that many seeds (the noise floor, in the verdict).")
    return Table(columns, rows, bold, raw, caption, len(factors) + len(derived))


def _four(x: float) -> str:
    return f"{x:.4g}" if pd.notna(x) and math.isfinite(x) else "—"


def trials_table(df: pd.DataFrame, metric: str) -> Table:
    """One row per trial (every status): its id, swept values, seed, status, the step it
    reached, ``metric`` at its last report and its best over all reports, and its run time.
    ``df``: ``collect``'s reports, one row per report."""
    factors = [f for f in df.attrs.get("factors", []) if f in df]
    sign = -1.0 if direction(metric) == "max" else 1.0
    rows, raw = [], []
    for tid, g in df.groupby("trial_id", sort=True):
        last = g[g["last_report"]].iloc[-1] if g["last_report"].any() else g.iloc[-1]
        vals = pd.to_numeric(g.get(metric), errors="coerce")
        ok = vals[np.isfinite(vals)] if vals is not None else pd.Series(dtype=float)
        best = float(ok.iloc[int(np.argmin(sign * ok.to_numpy()))]) if len(ok) else math.nan
        value = pd.to_numeric(pd.Series([last.get(metric)]), errors="coerce").iloc[0]
        time_s = pd.to_numeric(pd.Series([last.get("time_total_s")]), errors="coerce").iloc[0]
        step = last.get("step")
        rec = {"trial": str(tid), **{f: last[f] for f in factors},
               "seed": last.get(SEED_COLUMN), "status": last.get("status"),
               "step": None if pd.isna(step) else int(step), metric: value,
               f"best {metric}": best, "time (s)": time_s}
        raw.append(rec)
        rows.append([rec["trial"], *(_fmt_factor(last[f]) for f in factors),
                     "—" if pd.isna(rec["seed"]) else str(int(rec["seed"])),
                     str(rec["status"]), "—" if rec["step"] is None else str(rec["step"]),
                     _four(value), _four(best),
                     "—" if pd.isna(time_s) else f"{time_s:.0f}"])
    columns = ["trial", *(f.rsplit(".", 1)[-1] for f in factors), "seed", "status", "step",
               metric, f"best {metric}", "time (s)"]
    caption = (f"Every trial: its last report's {metric} and its best over all its reports "
               "(a stopped trial's at the step it reached), wall time in Ray's "
               "time_total_s.")
    return Table(columns, rows, [[False] * len(columns) for _ in rows], pd.DataFrame(raw),
                 caption, len(factors))


def _ci_names(agg: pd.DataFrame, values: list[str]) -> dict[str, str]:
    """``<v>_ci_low`` -> ``<v>_ci95_t_low`` (the level and method in the name), per value."""
    conf = int(round(100 * agg.attrs.get("confidence", 0.95)))
    how = agg.attrs.get("ci_method", "t")
    vs = dict.fromkeys([*values, *agg.attrs.get("values", [])])
    return {f"{v}_ci_{e}": f"{v}_ci{conf}_{how}_{e}" for v in vs for e in ("low", "high")
            if f"{v}_ci_{e}" in agg}


def _missing_p(cmp: pd.DataFrame) -> str:
    """Why a p-value (and Δ) shows "—", for the caption; "" when none does."""
    rows = cmp[~cmp["is_baseline"].astype(bool) & cmp["p_holm"].isna()]
    if rows.empty:
        return ""
    no_base = rows["test"] == "—"
    few = ~no_base & (rows["n_pairs"] < 2)
    why = []
    if few.any():
        why.append("p: — where the cell has fewer than 2 seeds matched with the baseline's "
                   "(no paired test possible)")
    if no_base.any():
        why.append("Δ and p: — where no baseline cell shares the cell's other factors")
    if (~no_base & ~few).any():
        why.append("p: — where the test is undefined for the cell's values")
    return " " + "; ".join(why) + "."


def _fmt_factor(v: object) -> str:
    return "null" if plain_value(v) is None else fmt_value(v)


def _caption(agg: pd.DataFrame, cmp: pd.DataFrame | None, spread: str) -> str:
    at = agg.attrs.get("at_step")
    what = (f"Every trial that reached step {at} (stopped trials included), read at step {at}."
            if at is not None else
            "Finished trials only (last report); early-stopped trials are counted, not averaged.")
    conf = int(round(100 * agg.attrs.get("confidence", 0.95)))
    how = _CI_TEXT.get(agg.attrs.get("ci_method", "t"), str(agg.attrs.get("ci_method")))
    sp = ("mean ± std over seeds (sample std; none for 1 seed)" if spread == "std" else
          f"mean [{conf}% CI: {how}; — for fewer than 2 seeds]")
    text = (f"{what} {sp}; {N_COLUMN} = seeds averaged / seeds run in the cell; "
            "bold = best.")
    if cmp is not None:
        text += (f" Δ = mean paired difference from the baseline ({cmp.attrs['baseline_label']})"
                 " over matching seeds; p Holm-corrected across cells (t = paired t-test, "
                 "W = Wilcoxon signed-rank).")
        text += _missing_p(cmp)
        if cmp.attrs.get("note"):
            text += f" Note: {cmp.attrs['note']}."
    return text


def to_markdown(table: Table) -> str:
    """GitHub Markdown (bold as ``**x**``), the caption as a line below."""
    def cell(t: str, b: bool) -> str:
        t = t.replace("|", "\\|")
        return f"**{t}**" if b and t != "—" else t

    lines = ["| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(t, b) for t, b in zip(r, m)) + " |"
              for r, m in zip(table.rows, table.bold)]
    return "\n".join(lines) + f"\n\n{table.caption}\n"


def _tex(t: str) -> str:
    out = "".join(_LATEX_ESC.get(ch, ch) for ch in t)
    return out.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("—", "--")


def to_latex(table: Table, label: str = "tab:ablation") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    align = "l" * table.n_factors + "r" * (len(table.columns) - table.n_factors - 1) + "l"
    body = [" & ".join((rf"\textbf{{{_tex(t)}}}" if b and t != "—" else _tex(t))
                       for t, b in zip(r, m)) + r" \\" for r, m in zip(table.rows, table.bold)]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(table.caption)}}}",
        rf"\label{{{label}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
        " & ".join(_tex(c) for c in table.columns) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def to_csv(table: Table) -> str:
    """The numbers behind the table (full precision, one column per statistic)."""
    return table.raw.to_csv(index=False)


def write_tables(table: Table, out_dir: str | Path, stem: str = "ablation") -> dict[str, Path]:
    """``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv`` in ``out_dir``."""
    out = Path(out_dir)
    output.make_dir(out)
    paths = {"md": out / f"{stem}.md", "tex": out / f"{stem}.tex", "csv": out / f"{stem}.csv"}
    output.write_text(paths["md"], to_markdown(table))
    output.write_text(paths["tex"], to_latex(table, label=f"tab:{stem}"))
    output.write_text(paths["csv"], to_csv(table))
    return paths
