"""What ``tuneable-gan sweep`` prints while it runs: a table of the trials with the swept values,
``step``, the sweep metric and its best so far, and a status that tells a trial the scheduler
stopped from one that ran its ``train.steps``; and one line per trial that ends.

What Ray 2.60 does with the terminal (``ray/tune/``, the installed wheel), and so why this is
built as it is:

* The "new output engine" is the default: ``experimental/output.py:117`` (``get_air_verbosity``)
  switches it off only when ``RAY_AIR_NEW_OUTPUT`` is ``"0"``, read when ``fit()`` runs
  (``tune.py:619``).
* With it on, ``RunConfig(progress_reporter=...)`` is dropped (``tune.py:899-903``, "AIR_VERBOSITY
  is set, ignoring passed-in ProgressReporter for now") and ``utils/callback.py:92`` adds
  Ray's ``TuneTerminalReporter``, whose table takes its parameter columns from the domains of the
  param space (``_infer_params``, output.py:131: ``__sample__`` is one) and its metric columns
  from the first keys of a report (``_infer_user_metrics``, output.py:196: our reports start with
  the constant config keys); at verbose=1 it prints each trial's config when it starts
  (output.py:792-802) and its whole last report when it completes (``on_trial_complete`` ->
  ``_print_result``, output.py:727-743: ~85 lines for a trainable that reports its flat config),
  the same for a trial ASHA stopped as for one that finished.
* With ``RAY_AIR_NEW_OUTPUT=0`` (the legacy engine) ``verbose=1`` is ``Verbosity.V1_EXPERIMENT``
  (tune.py:634): Tune calls the given reporter (tune.py:994, at the end with ``done``: 1017),
  and its ``TrialProgressCallback`` prints per-trial results only at V2 or V3
  (``progress_reporter.py:1412-1419``). A ``CLIReporter`` prints its table at V1 only with
  ``print_intermediate_tables`` (progress_reporter.py:881; the default is read from the global
  verbosity when the reporter is built, progress_reporter.py:204), so it is set here.

So the sweep's driver runs the legacy engine (``use_reporter_engine``) with ``SweepReporter``,
and ``TrialEndLine`` (a plain callback, which either engine calls) prints the one line per trial.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune import CLIReporter
from ray.tune.experiment import Trial

from tuneable_gan.constants import SEED_KEY
from tuneable_gan.tune.space import SweepSpec

ENGINE_ENV = "RAY_AIR_NEW_OUTPUT"
# Ray's legacy table order: what is running first, what ended last.
STATUS_ORDER = (Trial.RUNNING, Trial.PAUSED, Trial.PENDING, Trial.TERMINATED, Trial.ERROR)
STOPPERS = {"asha": "ASHA", "seed_asha": "seed-group ASHA"}
MAX_CELL = 20  # characters of a table cell or header


def use_reporter_engine() -> None:
    """Make Ray's driver use ``RunConfig.progress_reporter`` (the legacy output engine) unless
    the user chose an engine: Ray 2.60 reads ``RAY_AIR_NEW_OUTPUT`` when ``fit()`` starts, in the
    driver only. An explicit ``RAY_AIR_NEW_OUTPUT=1`` keeps Ray's own output (and its warning
    that the reporter is ignored); ``TrialEndLine`` prints either way."""
    os.environ.setdefault(ENGINE_ENV, "0")


def short_names(keys: list[str]) -> dict[str, str]:
    """Dotted key -> column header: the last part where no other key ends in it
    (``regularizer.weight`` -> ``weight``), else the whole key."""
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: t if tails.count(t) == 1 else k for k, t in zip(keys, tails)}


@dataclass(frozen=True)
class Columns:
    """What the table and the end lines show of a sweep: its swept keys (header names), its
    metric and mode, and the name of the scheduler that may stop trials early ("" if none)."""

    params: dict[str, str]
    metric: str
    mode: str
    stopper: str = ""

    @classmethod
    def of(cls, spec: SweepSpec) -> Columns:
        """The columns of ``spec``: its axes (the seed when it has several), never Tune's own
        ``__sample__`` / ``__trial_index__`` keys."""
        keys = [*spec.axes, *([SEED_KEY] if spec.seeds > 1 and SEED_KEY not in spec.axes
                              else [])]
        return cls(short_names(keys), spec.tune.metric, spec.tune.mode,
                   STOPPERS.get(spec.tune.scheduler.name, ""))

    @property
    def best(self) -> str:
        """The best-so-far column (none when the metric is a best already, like fid_best)."""
        return "" if self.metric.endswith("_best") else f"{self.metric}_best"


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def best_so_far(trial: Trial, cols: Columns) -> float | None:
    """The trial's best metric: its own ``<metric>_best`` where it reports one (the trainer's,
    kept across restores), else the best of the reports Tune saw (``metric_analysis``)."""
    last = trial.last_result or {}
    v = _number(last.get(cols.best)) if cols.best else None
    if v is None:
        v = _number((trial.metric_analysis.get(cols.metric) or {}).get(cols.mode))
    return v if v is not None and not math.isnan(v) else None


def ending(trial: Trial, cols: Columns) -> str:
    """How a trial that ended did: "diverged", "finished" (its last report is at
    ``train.steps``) or "stopped by <scheduler>" (earlier; "stopped early" without one)."""
    last = trial.last_result or {}
    if last.get("diverged"):
        return "diverged"
    step, steps = _number(last.get("step")), _number(last.get("train.steps"))
    if step is not None and steps is not None and step >= steps:
        return "finished"
    return f"stopped by {cols.stopper}" if cols.stopper else "stopped early"


def status(trial: Trial, cols: Columns) -> str:
    """Ray's status, with a terminated trial's ``ending`` in its place."""
    return ending(trial, cols) if trial.status == Trial.TERMINATED else trial.status


def fmt(v: Any) -> str:
    """A cell: numbers to 4 significant digits, None empty, long text cut from the left."""
    if v is None:
        return ""
    n = _number(v)
    s = f"{n:.4g}" if n is not None and isinstance(v, float) else str(v)
    return s if len(s) <= MAX_CELL else "..." + s[3 - MAX_CELL:]


def param(trial: Trial, key: str) -> Any:
    """The value the trial ran with: its report's (cell rules and PBT mutations included),
    else its Tune config's (before the first report)."""
    last = trial.last_result or {}
    return last[key] if key in last else trial.config.get(key)


def table(rows: list[list[str]], header: list[str]) -> str:
    """Fixed-width columns, text left, numbers right, one rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w)
                         for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class SweepReporter(CLIReporter):
    """The sweep's progress table (``RunConfig.progress_reporter``; the legacy engine calls it,
    see the module docstring): trial, status, the swept values, step, metric, best so far; at
    most every ``max_report_frequency`` seconds and once at the end, with every trial."""

    def __init__(self, cols: Columns, max_report_frequency: int = 30,
                 max_progress_rows: int = 20) -> None:
        super().__init__(max_report_frequency=max_report_frequency,
                         max_progress_rows=max_progress_rows, print_intermediate_tables=True)
        self.cols = cols

    def __setstate__(self, state: dict[str, Any]) -> None:
        # tuner.pkl holds the reporter: a resumed driver unpickles it before fit(), which is
        # when Ray picks the engine, so the resumed sweep gets this table too.
        self.__dict__.update(state)
        use_reporter_engine()

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        # Ray's raises when the reporter already has a metric, which a restored one may have.
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        self._print(self.render(trials, done, *sys_info))

    def render(self, trials: list[Trial], done: bool, *sys_info: str) -> str:
        """The table and its header lines (``sys_info``: Ray's scheduler and resource lines)."""
        cols = self.cols
        counts: dict[str, int] = {}
        for t in trials:
            counts[status(t, cols)] = counts.get(status(t, cols), 0) + 1
        total = f"/{self._total_samples}" if self._total_samples else ""
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - (self._start_time or 0)))
        by_status = ", ".join(f"{n} {s}" for s, n in counts.items())
        out = [f"== {len(trials)}{total} trials ({by_status}), {elapsed} ==", *sys_info]
        scored = [(v, t) for t in trials if (v := best_so_far(t, cols)) is not None]
        if scored:
            v, t = (min if cols.mode == "min" else max)(scored, key=lambda vt: vt[0])
            out.append(f"best {cols.metric} so far: {fmt(v)} (trial_{t.trial_id})")
        order = sorted(trials, key=lambda t: (STATUS_ORDER.index(t.status)
                                              if t.status in STATUS_ORDER else 9))
        shown = order if done else order[:self._max_progress_rows]
        header = ["trial", "status", *cols.params.values(), "step", cols.metric,
                  *([cols.best] if cols.best else [])]
        rows = [[f"trial_{t.trial_id}", status(t, cols), *(fmt(param(t, k)) for k in cols.params),
                 fmt((t.last_result or {}).get("step")),
                 fmt((t.last_result or {}).get(cols.metric)),
                 *([fmt(best_so_far(t, cols))] if cols.best else [])] for t in shown]
        out.append(table(rows, [h[:MAX_CELL] for h in header]))
        if len(shown) < len(order):
            out.append(f"... {len(order) - len(shown)} more trials not shown")
        out += [f"trial_{t.trial_id} errored: {t.error_file}" for t in trials
                if t.status == Trial.ERROR]
        return "\n".join(out) + "\n"


def end_line(trial: Trial, cols: Columns) -> str:
    """One line for a trial that ended: how, at which step of how many, its metric, its best
    and its swept values."""
    last = trial.last_result or {}
    how = ending(trial, cols)
    at = f"at step {fmt(last.get('step'))} of {fmt(last.get('train.steps'))}"
    value = f"{cols.metric} {fmt(last.get(cols.metric))}"
    if cols.best:
        value += f", best {fmt(best_so_far(trial, cols))}"
    params = ", ".join(f"{k}={fmt(param(trial, k))}" for k in cols.params)
    return f"trial_{trial.trial_id} {how} {at} ({value}{'; ' + params if params else ''})"


class TrialEndLine(tune.Callback):
    """Prints ``end_line`` once for each trial that completes (finished, stopped by the
    scheduler, or diverged); Ray's own completion output is off (``SweepReporter``)."""

    def __init__(self, cols: Columns) -> None:
        self.cols = cols

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        print(end_line(trial, self.cols), flush=True)


class StartLines(tune.Callback):
    """Prints ``lines`` (the sweep's warnings, say) to stderr once the experiment starts: after
    every check ``launch.run_sweep`` makes, so a refused sweep prints only its error. Tune
    calls ``setup`` again in a resumed driver, which prints them again, once."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines)

    def setup(self, **info: Any) -> None:
        for line in self.lines:
            print(line, file=sys.stderr, flush=True)


def reporting(spec: SweepSpec) -> tuple[SweepReporter, TrialEndLine]:
    """The sweep's reporter and end-line callback, with Ray set to call the reporter."""
    use_reporter_engine()
    cols = Columns.of(spec)
    return SweepReporter(cols), TrialEndLine(cols)
