"""Seed statistics per ablation cell, paired comparisons with a baseline, parameter importance.

A *cell* is one combination of the swept factors (every axis but the seed); its trials are the
seed replicates. Decisions, each stated where the numbers are used:

* Two readings of a trial. ``final`` (``at_step=None``): the value at its last report, counted
  only for trials that *finished* (reached ``train.steps``). ASHA-stopped trials are never
  averaged with finished ones: they are counted per cell (``stopped``: "1/2 seeds stopped at
  200"), as are diverged, errored and running trials. ``at_step=S``: every trial that reached
  step S, stopped or not, read at its last report at or before S: one common budget, so cells
  ASHA cut short are compared fairly (``common_step`` gives ASHA's first rung).
* Spread: sample std (ddof 1) and the t 95% interval of the mean (``bootstrap_ci``: a
  percentile bootstrap of 2-5 seeds is little more than their range).
* Paired test against the baseline cell over matching seeds: paired t-test for 2-5 pairs (the
  Wilcoxon signed-rank test cannot reach p < 0.05 with 5 pairs or fewer: its smallest two-sided
  p is 2/2^n), Wilcoxon signed-rank from 6 pairs (no normality assumption, robust to one
  collapsed seed, ~95% of the t-test's efficiency on normal data). Holm-corrected across cells.
* Rows with different ``eval_protocol`` fingerprints are never aggregated (UserError).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from tuneable_gan.constants import RESOLVED_KEYS, SEED_KEY, direction  # noqa: F401 (pbt, plots)
from tuneable_gan.errors import UserError

MIN_WILCOXON = 6


def check_protocol(df: pd.DataFrame) -> str | None:
    """The ``eval_protocol`` of ``df`` (None if it has none); UserError if its rows were
    measured differently. A fingerprint is the measurement (extractor, sample count, reference
    split, resolution, how G runs), then `` + `` how evaluation's conditioning was drawn (an
    instance prior and its sampler). The measurement must be one; the conditioning may differ
    between cells, since it is the method a swept factor changes, but not within one."""
    if "eval_protocol" not in df:
        return None
    rows = df[df["eval_protocol"].notna()]
    fps = sorted(str(v) for v in rows["eval_protocol"].unique())
    measures = sorted({fp.split(" + ", 1)[0] for fp in fps})
    if len(measures) > 1:
        raise UserError(
            f"refusing to aggregate rows with {len(measures)} different eval_protocol "
            f"fingerprints ({', '.join(measures)}): metrics from different feature extractors, "
            "sample counts, reference splits or resolutions are not comparable; filter to one "
            "eval_protocol")
    if len(fps) <= 1:
        return fps[0] if fps else None
    factors = [f for f in df.attrs.get("factors", []) if f in rows]
    keys = (rows[factors].astype(str).agg("|".join, axis=1) if factors
            else pd.Series("", index=rows.index))
    per_cell = rows.groupby(keys)["eval_protocol"].nunique()
    if factors and (per_cell <= 1).all():
        conds = sorted({fp.split(" + ", 1)[1] if " + " in fp else "none" for fp in fps})
        return f"{measures[0]} (conditioning per cell: {'; '.join(conds)})"
    raise UserError(
        f"refusing to aggregate rows of one cell evaluated with different conditioning "
        f"({', '.join(fps)}): filter to one eval_protocol")


def factors_of(df: pd.DataFrame, factors: Sequence[str] | None = None) -> list[str]:
    """``factors`` if given, else the swept factors ``collect`` recorded in ``df.attrs``."""
    out = list(df.attrs.get("factors", []) if factors is None else factors)
    missing = [f for f in out if f not in df.columns]
    if missing:
        raise UserError(f"factor {missing[0]} is not a column of the results")
    return out


def plain_value(v: Any) -> Any:
    """A cell value as plain Python: ``None`` for None or NaN (a missing value), numpy scalars
    unwrapped."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, isinstance(v, str), v if isinstance(v, (int, float)) else str(v))
                 for v in key)


def same_value(a: Any, b: Any) -> bool:
    """Equality of factor values that tolerates 0 vs 0.0 and float round trips."""
    a, b = plain_value(a), plain_value(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def cell_label(cell: dict[str, Any]) -> str:
    """``weight=100, pairing=random`` (short keys where unambiguous); "all" for no factors."""
    shorts = [k.rsplit(".", 1)[-1] for k in cell]
    keys = [s if shorts.count(s) == 1 else k for k, s in zip(cell, shorts)]
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in zip(keys, cell.values())) or "all"


def fmt_value(v: Any) -> str:
    """A factor value for labels and tables: floats by ``:g``, ``""`` for an empty string."""
    # An empty string (diffaugment "" = off) would read as a missing value: quote it.
    return f"{v:g}" if isinstance(v, float) else '""' if v == "" else str(v)


def common_step(df: pd.DataFrame) -> int | None:
    """The largest step every finished or stopped trial reached (ASHA's first rung)."""
    last = df[df["last_report"] & df["status"].isin(["finished", "stopped"])]
    return None if last.empty else int(last["step"].min())


def _value_columns(df: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    cols = []
    for m in metrics:
        if m not in df.columns:
            raise UserError(f"metric {m!r} is not reported by this experiment (reported: "
                            f"{', '.join(c for c in _numeric(df))})")
        cols.append(m)
        if not m.endswith("_best") and f"{m}_best" in df.columns:
            cols.append(f"{m}_best")
    return list(dict.fromkeys(cols))


def _numeric(df: pd.DataFrame) -> list[str]:
    skip = ("step", "training_iteration", "timestamp", "pid", "stopped_at")
    return [c for c in df.columns if "." not in c and c not in skip
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def trial_values(df: pd.DataFrame, metrics: Sequence[str] = ("fid",), *,
                 at_step: int | None = None,
                 factors: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per trial: factors, seed, status, the step read, ``usable`` and each metric
    (plus ``<m>_best`` where the trial reports it, e.g. ``fid_best``).

    ``at_step=None``: the last report; usable only for finished trials. ``at_step=S``: the last
    report at or before S, usable for every trial that reached S without diverging.
    """
    factors = factors_of(df, factors)
    metrics = list(metrics)
    cols = _value_columns(df, metrics)
    out = []
    for tid, g in df.sort_values(["trial_id", "step"]).groupby("trial_id", sort=True):
        last = g.iloc[-1]
        rec: dict[str, Any] = {"trial_id": tid, "trial_dir": last.get("trial_dir"),
                               **{f: plain_value(last[f]) for f in factors},
                               **{k: plain_value(last[k]) for k in RESOLVED_KEYS
                                  if k in last.index and k not in factors},
                               SEED_KEY: plain_value(last.get(SEED_KEY)), "status": last["status"],
                               "stopped_at": last["stopped_at"]}
        g = g[g["step"].notna()]  # a trial that never reported has one row with step NaN
        take = g if at_step is None else g[g["step"] <= at_step]
        reached = not g.empty and (at_step is None or g["step"].iloc[-1] >= at_step)
        if take.empty or not reached:
            out.append(rec | {"step": None, "usable": False} | dict.fromkeys(cols, np.nan))
            continue
        row = take.iloc[-1]
        for c in cols:
            rec[c] = float(row[c]) if pd.notna(row[c]) else np.nan
        ok = (last["status"] == "finished") if at_step is None else not bool(row.get("diverged"))
        finite = all(math.isfinite(rec[m]) for m in metrics if not math.isnan(rec[m]))
        out.append(rec | {"step": int(row["step"]), "usable": bool(ok and finite)})
    tv = pd.DataFrame(out)
    tv.attrs = dict(df.attrs) | {"factors": factors, "values": cols, "at_step": at_step}
    return tv


def _cells(tv: pd.DataFrame, factors: list[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    keys = [tuple(plain_value(v) for v in r) for r in tv[factors].itertuples(index=False)] \
        if factors else [()] * len(tv)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return [(k, tv.iloc[groups[k]]) for k in sorted(groups, key=_sort_key)]


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                 n_resamples: int = 10_000, seed: int = 0, *,
                 method: str = "t") -> tuple[float, float]:
    """A ``confidence`` interval of the mean of ``values`` (the seeds of a cell); (nan, nan)
    below two values or with a non-finite one: no interval rather than a fake one.

    ``method="t"`` (the default, what ``aggregate`` reports): mean ± t_{(1+c)/2, n-1} · s/√n
    with s the sample std (ddof 1); exact for normal seed-to-seed noise, and by the central
    limit theorem close to nominal coverage otherwise. ``method="auto"``: the t interval
    below ``6`` values, a seeded percentile bootstrap (``n_resamples`` means of resamples)
    from 6 on. Why t by default, at every n: a percentile bootstrap of n values is bounded by
    their min and max (with 2 seeds it *is* [min, max], a ~50% interval of the mean for
    normal data) and under-covers at the seed counts sweeps have (its spread is the biased
    s·√((n-1)/n)/√n and it uses normal, not t, quantiles: simulated on normal data, ~76% for
    a nominal 95% at n = 3, ~87% at 6, ~89% at 10, where the t interval gives 95%); and
    switching methods within one table would make a 6-seed cell's interval ~40% narrower
    than a 5-seed cell's for the method alone. The name is kept for its caller
    (``aggregate``)."""
    if method not in ("t", "auto"):
        raise UserError(f"method must be t or auto, got {method!r}")
    x = np.asarray(values, dtype=float)
    if x.size < 2 or not np.isfinite(x).all():
        return math.nan, math.nan
    if method == "auto" and x.size >= 6:
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
        a = (1 - confidence) / 2
        lo, hi = np.quantile(means, [a, 1 - a])
        return float(lo), float(hi)
    half = st.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def _counts(g: pd.DataFrame) -> dict[str, Any]:
    n = len(g)
    st_ = g[g["status"] == "stopped"]
    steps = sorted({int(s) for s in st_["stopped_at"].dropna()})
    stopped = (f"{len(st_)}/{n} seeds stopped at {', '.join(map(str, steps))}"
               if len(st_) else "")
    other = [f"{(g['status'] == s).sum()}/{n} {s}" for s in ("diverged", "errored", "running")
             if (g["status"] == s).any()]
    return {"n_seeds": n, "n_stopped": len(st_), "stopped": stopped, "note": "; ".join(other),
            **{f"n_{s}": int((g["status"] == s).sum()) for s in ("diverged", "errored",
                                                                  "running")}}


def aggregate(df: pd.DataFrame, metrics: Sequence[str] = ("fid",), *,
              at_step: int | None = None, factors: Sequence[str] | None = None,
              confidence: float = 0.95, n_resamples: int = 10_000,
              seed: int = 0) -> pd.DataFrame:
    """Per cell: ``n_seeds`` (trials), ``n`` (usable, see ``trial_values``), the counts of
    stopped/diverged/errored/running trials with a ``stopped`` note, and per value column
    ``<v>_mean``, ``<v>_std``, ``<v>_ci_low``, ``<v>_ci_high``. Resolved config values
    (``constants.RESOLVED_KEYS``) that differ between cells but not within one are kept as
    columns too, named in ``attrs["derived"]``. UserError on mixed protocols."""
    protocol = check_protocol(df)
    tv = trial_values(df, metrics, at_step=at_step, factors=factors)
    factors, cols = tv.attrs["factors"], tv.attrs["values"]
    out = []
    resolved = [k for k in RESOLVED_KEYS if k in tv.columns and k not in factors]
    for key, g in _cells(tv, factors):
        use = g[g["usable"]]
        rec: dict[str, Any] = dict(zip(factors, key)) | {"n": len(use)} | _counts(g)
        for k in resolved:  # one value per cell, or None where the cell's trials differ
            vals = {plain_value(v) for v in g[k]}
            rec[k] = vals.pop() if len(vals) == 1 else None
        for c in cols:
            x = use[c].to_numpy(dtype=float)
            lo, hi = bootstrap_ci(x, confidence, n_resamples, seed)
            rec |= {f"{c}_mean": float(x.mean()) if x.size else math.nan,
                    f"{c}_std": float(x.std(ddof=1)) if x.size > 1 else math.nan,
                    f"{c}_ci_low": lo, f"{c}_ci_high": hi}
        out.append(rec)
    agg = pd.DataFrame(out)
    # Resolved values that tell cells apart (a paper-rule lambda): shown beside the factors.
    derived = [k for k in resolved
               if len({repr(plain_value(v)) for v in agg[k]}) > 1 and agg[k].notna().all()]
    agg = agg.drop(columns=[k for k in resolved if k not in derived])
    agg.attrs = tv.attrs | {"eval_protocol": protocol, "confidence": confidence,
                            "derived": derived}
    return agg


def paired_test(x: Sequence[float], y: Sequence[float], test: str = "auto") -> tuple[float, str]:
    """(two-sided p, test name) for paired samples ``x`` vs ``y``: "paired t" or "Wilcoxon"
    (``test="auto"``: Wilcoxon from ``MIN_WILCOXON`` pairs, else t); NaN below 2 pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if test not in ("auto", "t", "wilcoxon"):
        raise UserError(f"test must be auto, t or wilcoxon, got {test!r}")
    if x.size < 2:
        return math.nan, "none (fewer than 2 pairs)"
    name = "Wilcoxon" if test == "wilcoxon" or (test == "auto" and x.size >= MIN_WILCOXON) \
        else "paired t"
    if np.all(x == y):
        return 1.0, name  # no difference at all (both tests are undefined there)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = st.wilcoxon(x, y).pvalue if name == "Wilcoxon" else st.ttest_rel(x, y).pvalue
    return float(p), name


def t_interval(d: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The t interval of the mean of ``d`` (mean +- t_{(1+c)/2, n-1} sd / sqrt n): for the
    paired differences of a few seeds, where a bootstrap has nothing to resample. (NaN, NaN)
    below 2 values."""
    d = np.asarray(d, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    half = st.t.ppf((1 + confidence) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order; NaN stays NaN and is not
    counted among the hypotheses."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def baseline_cells(tv: pd.DataFrame, baseline: dict[str, Any],
                   factors: Sequence[str]) -> list[tuple[Any, ...]]:
    """Every cell (in sorted order) matching ``baseline``; UserError if none or a key is not
    swept."""
    for k in baseline:
        if k not in factors:
            raise UserError(f"baseline key {k} is not a swept factor (swept: "
                            f"{', '.join(factors) or 'none'})")
    cells = [key for key, _ in _cells(tv, list(factors))]
    hits = [c for c in cells if all(same_value(dict(zip(factors, c))[k], v)
                                    for k, v in baseline.items())]
    if not hits:
        want = ", ".join(f"{k}={fmt_value(v)}" for k, v in baseline.items())
        raise UserError(f"no cell has {want} (cells: "
                        f"{'; '.join(cell_label(dict(zip(factors, c))) for c in cells[:6])})")
    return hits


def default_baseline(df: pd.DataFrame, factors: Sequence[str] | None = None) -> dict[str, Any]:
    """regularizer.name=none if swept, else regularizer.weight=0 if swept, else the first
    cell."""
    factors = factors_of(df, factors)
    for key, value in (("regularizer.name", "none"), ("regularizer.weight", 0.0)):
        if key in factors and any(same_value(v, value) for v in df[key].dropna().unique()):
            return {key: value}
    tv = trial_values(df, [], factors=factors) if factors else None
    if tv is None or tv.empty:
        return {}
    return dict(zip(factors, _cells(tv, list(factors))[0][0]))


def compare(df: pd.DataFrame, baseline: dict[str, Any] | None = None, value: str = "fid", *,
            at_step: int | None = None, factors: Sequence[str] | None = None,
            test: str = "auto") -> pd.DataFrame:
    """Each cell against the baseline cell over matching seeds: ``n_pairs``, ``delta`` (mean
    of cell - baseline), ``test``, ``p`` and Holm-adjusted ``p_holm`` (across cells)."""
    check_protocol(df)
    factors = factors_of(df, factors)
    tv = trial_values(df, [value], at_step=at_step, factors=factors)
    baseline = default_baseline(df, factors) if baseline is None else baseline
    hits = baseline_cells(tv, baseline, factors)
    cells = _cells(tv, factors)
    # A baseline that leaves factors free (prior.network=none across fractions) is one cell
    # per slice: each cell is compared with the baseline cell of its own slice, the other
    # factors equal, which is the ablation a reader means.
    rest = [i for i, f in enumerate(factors) if f not in baseline]
    slice_of = {tuple(str(h[i]) for i in rest): h for h in hits}
    per_slice = len(hits) > 1 and len(slice_of) == len(hits)

    def by_seed(g: pd.DataFrame) -> pd.Series:
        u = g[g["usable"] & g[value].notna()]
        return u.groupby(SEED_KEY)[value].mean()  # duplicates of a seed: their mean

    refs = {h: by_seed(dict(cells)[h]) for h in hits}
    out = []
    for key, g in cells:
        bkey = slice_of.get(tuple(str(key[i]) for i in rest)) if per_slice else hits[0]
        if bkey is None:  # an incomplete grid: this slice has no baseline cell
            out.append(dict(zip(factors, key)) | {"is_baseline": False, "n_pairs": 0,
                                                  "delta": math.nan, "test": "—",
                                                  "p": math.nan})
            continue
        s, ref = by_seed(g), refs[bkey]
        common = s.index.intersection(ref.index)
        rec = dict(zip(factors, key)) | {"is_baseline": key == bkey, "n_pairs": len(common)}
        if key == bkey:
            out.append(rec | {"delta": 0.0, "test": "baseline", "p": math.nan})
            continue
        x, y = s[common].to_numpy(), ref[common].to_numpy()
        p, name = paired_test(x, y, test)
        lo, hi = t_interval(x - y)
        out.append(rec | {"delta": float((x - y).mean()) if len(common) else math.nan,
                          "delta_lo": lo, "delta_hi": hi, "test": name, "p": p})
    cmp = pd.DataFrame(out)
    cmp["p_holm"] = holm(cmp["p"].to_numpy())
    if per_slice:
        names = ", ".join(factors[i].rsplit(".", 1)[-1] for i in rest)
        label, note = f"{cell_label(baseline)} with the same {names}", ""
        chosen = dict(baseline)
    else:
        chosen = dict(zip(factors, hits[0]))
        label = cell_label(chosen)
        note = "" if len(hits) == 1 else (f"baseline matches {len(hits)} cells; using the "
                                          "first (give more --baseline keys to choose)")
    cmp.attrs = {"factors": factors, "value": value, "at_step": at_step, "note": note,
                 "baseline": chosen, "baseline_label": label}
    return cmp
