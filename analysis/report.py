"""One self-contained report of an experiment: ``report.html`` (images embedded as base64 PNG),
``report.md``, the ablation tables (md, tex, csv), ``results.parquet``, ``plots/`` and
``best_config.yaml`` with the command that reproduces the best trial.

CLI (wired as ``tuneable-gan report``): ``run(experiment, out, baseline, metric)`` takes the
raw strings; ``main(argv)`` parses them. Errors a user can cause raise ``UserError`` (one line).
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis import (
    calibration,
    importance,
    noise_floor,
    output,
    paper,
    pbt,
    plots,
    stats,
    tables,
    tickets,
    verdict,
)
from analysis.checkpoints import best_checkpoint
from analysis.collect import STATUSES, collect, read_collected, trial_table, write_parquet
from tuneable_gan.errors import UserError

_EXTRAS = ("is_mean", "kid", "precision", "recall", "density", "coverage", "nn_fake",
           "nn_ratio", "modes_covered", "w1")  # shown beside the metric when reported
Block = tuple[str, Any]
RESULTS = "results.parquet"


def parse_baseline(items: Sequence[str]) -> dict[str, Any]:
    """``["regularizer.weight=0", ...]`` -> {key: value}; values are read as YAML."""
    out: dict[str, Any] = {}
    for text in items:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--baseline expects key=value, got {text!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _values(df: pd.DataFrame, metric: str) -> list[str]:
    def reported(c: str) -> bool:
        return c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()

    return [metric, *(c for c in _EXTRAS if c != metric and reported(c))]


def _best(agg: pd.DataFrame, tv: pd.DataFrame, metric: str) -> pd.Series | None:
    """The best trial of the cell with the best mean ``metric`` (cells with a usable trial)."""
    ok = agg[agg["n"] > 0]
    if ok.empty:
        return None
    asc = stats.direction(metric) != "max"
    cell = ok.sort_values(f"{metric}_mean", ascending=asc).iloc[0]
    factors = list(agg.attrs.get("factors", []))
    mine = tv[tv["usable"]]
    for f in factors:
        mine = mine[[stats.same_value(v, cell[f]) for v in mine[f]]]
    return mine.sort_values(metric, ascending=asc).iloc[0] if not mine.empty else None


def _best_config(experiment: str, row: pd.Series, df: pd.DataFrame, last: pd.DataFrame,
                 metric: str, out: Path) -> tuple[Path, str]:
    """Write the trial's config (from its best checkpoint by ``metric``, else its reported
    config); returns the path and where the config came from, for the report."""
    path = out / "best_config.yaml"
    found = (best_checkpoint(experiment, df[df["trial_id"] == row["trial_id"]], metric)
             if row.get("trial_dir") else None)
    if found is not None:
        try:
            with found.fs.open_input_stream(f"{found.path}/config.yaml") as f:
                data = f.read()
        except OSError:
            data = None  # fall back to the config the trial reported
        if data is not None:
            output.write_bytes(path, data)
            which = "best checkpoint by " + metric if found.best else "newest checkpoint"
            at = f" ({found.path.rsplit('/', 1)[-1]}, step {found.step})" if found.step else ""
            return path, f"its {which}{at}"
    from tuneable_gan.config import valid_keys

    rep = last[last["trial_id"] == row["trial_id"]].iloc[0]
    cfg = {k: _plain(rep[k]) for k in valid_keys() if k in rep.index}
    output.write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path, "its last report (no checkpoint kept)"


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):
        v = v.tolist()
    return None if isinstance(v, float) and math.isnan(v) else v


def _space_lines(attrs: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(k, _inline(v)) for k, v in attrs.get("axes", {}).items()]
    rows.append(("train.seed", f"{attrs.get('seeds', 1)} seed(s)"))
    t = attrs.get("tune", {})
    for k in ("metric", "mode", "search", "num_samples", "scheduler", "resources"):
        if k in t:
            rows.append((f"tune.{k}", _inline(t[k])))
    return rows


def _inline(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    return str(v)


def _notes(attrs: dict[str, Any], stopped: int, at: int | None) -> list[str]:
    t = attrs.get("tune", {})
    sched = t.get("scheduler")
    asha = isinstance(sched, dict) and "asha" in sched
    notes = []
    if asha and stopped:
        notes.append(f"ASHA stopped {stopped} trial(s) early. The final table averages finished "
                     "trials only and counts stopped ones per cell; the budget table compares "
                     f"every trial at step {at}, the step all of them reached.")
    if asha and t.get("search") == "optuna":
        notes.append("Bias: with search=optuna and ASHA, Ray's OptunaSearch records every trial "
                     "ASHA stopped as COMPLETE with its early (usually worse) value, so the TPE "
                     "model mixes low-budget and full-budget results and may steer away from "
                     "configurations that start slowly. Treat the searcher's choices with care; "
                     "use fid_best as the metric, a larger grace_period or FIFO to avoid it.")
    return notes


def build_report(experiment: str, out: str | None = None,
                 baseline: dict[str, Any] | None = None, metric: str | None = None,
                 noise_sets: int = noise_floor.N_SETS) -> Path:
    """Write the report of ``experiment`` into ``out`` (default ``<experiment>/report/``; for
    a remote URI, ``./report-<name>/``) and return the path of ``report.html``.
    ``noise_sets``: latent sets of the evaluation noise floor (below 2: not measured)."""
    t0 = time.perf_counter()
    df = collect(experiment)
    attrs = df.attrs
    if out is None:
        remote = "://" in str(experiment)
        out = f"report-{attrs['name']}" if remote else str(Path(experiment) / "report")
    if "://" in str(out):
        raise UserError(f"--out must be a local directory, got {out}")
    dest = output.check_out_dir(out)
    metric = metric or attrs.get("tune", {}).get("metric") or "fid"
    if df["step"].notna().sum() == 0:
        last = trial_table(df)
        counts = ", ".join(f"{n} {s}" for s, n in last["status"].value_counts().items())
        reasons = [r for r in last["status_reason"] if r]
        raise UserError(f"no trial of {experiment} has reported yet ({counts})"
                        + (f"; first problem: {reasons[0]}" if reasons else ""))
    if metric not in df.columns:
        known = ", ".join(c for c in ("fid", "fid_best", "is_mean", "modes_covered", "w1")
                          if c in df.columns)
        raise UserError(f"--metric {metric}: not reported by this experiment (try {known})")
    protocol = stats.check_protocol(df)
    factors = list(attrs.get("factors", []))
    if baseline is None:  # the space's declared baseline, else the default rule
        baseline = dict(attrs.get("baseline") or {}) or stats.default_baseline(df)
    if baseline:  # a bad --baseline fails here, before anything is written
        stats.baseline_cells(stats.trial_values(df, [metric]), baseline, factors)
    values = _values(df, metric)
    last = trial_table(df)
    output.make_dir(dest)
    write_parquet(df, dest / RESULTS)

    readings: list[tuple[str, int | None]] = [("final", None)]
    at = stats.common_step(df)
    n_stopped = int((last["status"] == "stopped").sum())
    if n_stopped and at is not None:
        readings.append((f"step{at}", at))
    blocks: list[Block] = []
    aggs: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    cmps: dict[str, pd.DataFrame | None] = {}
    for stem, step in readings:
        aggs[stem] = (stats.aggregate(df, values, at_step=step),
                      stats.trial_values(df, [metric], at_step=step))
        cmps[stem] = stats.compare(df, baseline, metric, at_step=step) if factors else None
    # The best configuration is what a finished trial reached when one did: a full-length run
    # is the thing being reproduced; the common budget only when nothing finished.
    best_from = "final" if (aggs["final"][0]["n"] > 0).any() else readings[-1][0]
    best = _best(*aggs[best_from], metric)
    floor, no_floor = noise_floor.noise_floor(str(attrs["experiment"]), best, df, metric,
                                              noise_sets)
    for stem, step in readings:
        table = tables.ablation_table(aggs[stem][0], cmps[stem],
                                      noise=floor.swamps if floor else None)
        tables.write_tables(table, dest, "ablation" if step is None else f"ablation_{stem}")
        title = "Ablation: final values" if step is None else f"Ablation: at step {step}"
        blocks += [("h2", title), ("table", table)]
    blocks += paper.section(df, protocol)
    if tickets.has_tickets(last):
        table, summary = tickets.ticket_table(last)
        tables.write_tables(table, dest, "tickets")
        blocks += [("h2", "Lottery tickets"), ("p", summary), ("table", table)]
    # Plots, importance and the best configuration use the final reading when every cell has a
    # finished trial, else the common budget (which every stopped trial reached).
    primary = "final" if (aggs["final"][0]["n"] > 0).all() or len(aggs) == 1 else readings[1][0]
    agg, tv = aggs[primary]
    reading = "finished trials" if primary == "final" else f"at step {at}, all trials"
    imp, why = importance.importance(df, metric, at_step=None if primary == "final" else at)
    shutil.rmtree(dest / "plots", ignore_errors=True)  # no figure left over from a past build
    figs = plots.make_plots(df, tv, dest / "plots", metric=metric, importances=imp,
                            importance_reason=why, reading=reading)
    # Whether the rungs (or, for FIFO, any early evaluation) ranked trials as the end did.
    blocks += calibration.section(df, metric, dest)
    blocks += pbt.section(df, metric, dest)
    best_reading = "finished trials" if best_from == "final" else f"at step {at}, all trials"

    counts = last["status"].value_counts()
    devices = ", ".join(map(str, last["device"].dropna().unique())) if "device" in last else ""
    hours = pd.to_numeric(last.get("time_total_s"), errors="coerce").fillna(0).sum() / 3600
    conditioning = sorted({str(fp).split(" + ", 1)[1] if " + " in str(fp) else "none"
                           for fp in df.get("eval_protocol", pd.Series(dtype=object)).dropna()})
    said = verdict.verdict(agg, cmps[primary], metric, reading, int(attrs.get("seeds", 1)),
                           n_stopped, len(last), conditioning)
    if floor is not None:
        said += [x for x in (floor.sentence(), noise_floor.swamped(floor, cmps[primary])) if x]
    else:
        said.append(f"Evaluation noise floor: not measured ({no_floor}).")
    head: list[Block] = [
        ("h1", f"Sweep report: {attrs['name']}"),
        ("p", attrs.get("description") or ""),
        ("h2", "Verdict"), *[("p", line) for line in said],
        ("kv", [("experiment", str(attrs["experiment"])), ("eval protocol", protocol or "—"),
                ("trials", ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)),
                ("compute", f"{hours:.3f} trial-hours = {60 * hours:.1f} trial-minutes (sum of "
                            "the trials' time_total_s; "
                            f"devices: {devices or '—'})"),
                ("baseline", stats.cell_label(baseline) if baseline else "—"),
                ("metric", metric)]),
        *[("p", n) for n in _notes(attrs, n_stopped, at)],
        ("h2", "Search space"), ("kv", _space_lines(attrs)),
    ]
    if best is not None:
        cfg_path, source = _best_config(str(attrs["experiment"]), best, df, last, metric, dest)
        head += [("h2", "Best configuration"),
                 ("p", f"Best cell by mean {metric} ({best_reading}): "
                       f"{stats.cell_label({f: best[f] for f in factors})}; its best trial "
                       f"{best['trial_id']} (seed {best.get('train.seed')}, {metric} "
                       f"{best[metric]:.4g} at step {best['step']}). best_config.yaml is from "
                       f"{source}. Reproduce it with:"),
                 ("code", f"tuneable-gan train {shlex.quote(str(cfg_path))} --out runs/best")]
    errored = last[last["status"] == "errored"]
    tail: list[Block] = [("h2", "Figures")]
    if imp:  # the design passed importance.design_problem; say how much it rests on
        use = tv[tv["usable"]]
        n_cells = len(use.groupby([f for f in factors if f in use], dropna=False))
        tail.append(("p", f"Parameter importance (fANOVA) rests on {n_cells} cells and "
                          f"{len(use)} usable trials ({reading})."))
    for f in figs:
        tail.append(("img", f) if f.png else ("p", f"{f.title}: skipped ({f.reason})."))
    trials = tables.trials_table(df, metric)  # every trial, after the summaries it feeds
    tables.write_tables(trials, dest, "trials")
    tail += [("h2", "Trials"), ("table", trials)]
    if not errored.empty:
        tail += [("h2", "Errored trials"),
                 ("kv", [(r.trial_id, r.status_reason) for r in errored.itertuples()])]
    damaged = damaged_logs(last)
    if damaged:
        tail += [("h2", "Damaged trial logs"),
                 ("p", "These trials' result.json is not whole; their statuses come from what "
                       "Ray's experiment state and the sweep say they did."),
                 ("kv", damaged)]
    elapsed = time.perf_counter() - t0
    n_reports = int(df["step"].notna().sum())
    tail.append(("p", f"Built in {elapsed:.1f} s from {len(last)} trials, {n_reports} reports."))
    doc = head + blocks + tail
    output.write_text(dest / "report.md", _markdown(doc, dest))
    path = dest / "report.html"
    output.write_text(path, _html(doc, attrs["name"]))
    return path


def damaged_logs(last: pd.DataFrame) -> list[tuple[str, str]]:
    """(trial, what is wrong) for each trial whose result.json is torn or incomplete."""
    if "log_problem" not in last:
        return []
    return [(str(t), str(p)) for t, p in zip(last["trial_id"], last["log_problem"])
            if isinstance(p, str) and p]


def _markdown(doc: list[Block], dest: Path) -> str:
    out = []
    for kind, x in doc:
        if kind in ("h1", "h2"):
            out.append(f"{'#' if kind == 'h1' else '##'} {x}")
        elif kind == "p" and x:
            out.append(x)
        elif kind == "kv":
            out.append("| | |\n|---|---|\n" + "\n".join(
                f"| {k} | {_md_escape(str(v))} |" for k, v in x))
        elif kind == "table":
            out.append(tables.to_markdown(x).rstrip())
        elif kind == "code":
            out.append(f"```bash\n{x}\n```")
        elif kind == "img":
            out.append(f"![{x.title}]({x.png.relative_to(dest).as_posix()})")
    return "\n\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:14px}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:left}th{background:#f0f0f0}pre{background:#f6f6f6;padding:.6em}
img{max-width:100%;border:1px solid #eee}.cap{font-size:13px;color:#555;max-width:900px}"""


def _html(doc: list[Block], name: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(name)} report</title>"
           f"<style>{_CSS}</style></head><body>"]
    for kind, x in doc:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{e(x)}</{kind}>")
        elif kind == "p" and x:
            out.append(f"<p>{e(x)}</p>")
        elif kind == "kv":
            out.append("<table>" + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>"
                                           for k, v in x) + "</table>")
        elif kind == "table":
            head = "".join(f"<th>{e(c)}</th>" for c in x.columns)
            body = "".join("<tr>" + "".join(f"<td>{'<b>' + e(t) + '</b>' if b else e(t)}</td>"
                                            for t, b in zip(r, m)) + "</tr>"
                           for r, m in zip(x.rows, x.bold))
            out.append(f"<table><tr>{head}</tr>{body}</table><p class='cap'>{e(x.caption)}</p>")
        elif kind == "code":
            out.append(f"<pre>{e(x)}</pre>")
        elif kind == "img":
            data = base64.b64encode(x.png.read_bytes()).decode()
            out.append(f"<figure><img alt='{e(x.title)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption class='cap'>{e(x.title)}</figcaption></figure>")
    return "\n".join(out) + "\n</body></html>\n"


def run(experiment: str, out: str | None = None, baseline: Sequence[str] = (),
        metric: str | None = None, noise_sets: int = noise_floor.N_SETS) -> int:
    """``tuneable-gan report``: build the report and print where it is; returns 0."""
    path = build_report(experiment, out, parse_baseline(baseline) if baseline else None, metric,
                        noise_sets)
    for trial, problem in damaged_logs(trial_table(read_collected(path.parent / RESULTS))):
        print(f"tuneable-gan: warning: trial {trial}: {problem}", file=sys.stderr)
    print(f"report: {path}")
    print(f"tables: {path.parent / 'ablation.md'} (.tex, .csv); data: "
          f"{path.parent / 'results.parquet'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``report EXPERIMENT_DIR [--out DIR] [--baseline key=value ...] [--metric M]``."""
    p = argparse.ArgumentParser(prog="tuneable-gan report", description=__doc__)
    p.add_argument("experiment")
    p.add_argument("--out", default=None)
    p.add_argument("--baseline", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--metric", default=None)
    p.add_argument("--noise-floor", type=int, default=noise_floor.N_SETS, metavar="N")
    a = p.parse_args(argv)
    return run(a.experiment, a.out, a.baseline, a.metric, a.noise_floor)
