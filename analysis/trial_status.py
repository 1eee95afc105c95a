"""One trial of an experiment: the evidence its files hold and the rules that give its status.

``analysis.collect`` gathers the evidence (``Trial``: result.json rows and its torn lines,
error.txt's failures, what Ray's newest experiment state says); ``decide`` gives its status. Several
sources lag or lie in known ways: Ray saves its state every ~10 s (a trial that finished or
failed since is still RUNNING there), a crash or a full disk can tear result.json's last line,
and after a driver's end nothing is running whatever the state says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_LIVE = ("RUNNING", "PENDING", "PAUSED")
# Ray's error.txt: one "Failure # N (occurred at YYYY-MM-DD_HH-MM-SS)" header per failure; the
# date has the format of a result row's "date", so the two compare as strings.
_FAILURE = re.compile(r"^Failure # (\d+)(?: \(occurred at (\S+)\))?", re.MULTILINE)
_STEP = re.compile(r'"step": (\d+)[,}]')


@dataclass
class StateEntry:
    """One trial as Ray's newest experiment state file saw it."""

    status: str
    dirname: str
    config: dict[str, Any]
    failures: int | None = None
    last_result: dict[str, Any] | None = None


@dataclass
class Trial:
    """What a trial's files and Ray's state say of one trial."""

    trial_id: str
    dirname: str | None = None
    state: str | None = None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    mtime: float = 0.0
    torn: list[int] = field(default_factory=list)  # 1-based numbers of unreadable lines
    torn_step: int | None = None  # the step a torn last line names, when it got that far
    failures: int = 0  # the highest "Failure # N" of error.txt
    failed_at: str | None = None  # its date, as error.txt gives it
    state_failures: int | None = None  # the failures Ray's state counted
    state_result: dict[str, Any] | None = None  # the last result Ray's state holds


def parse_rows(text: str) -> tuple[list[dict[str, Any]], list[int], int | None]:
    """(rows, numbers of the lines that are not JSON rows, the step a torn last line names)."""
    rows, torn, lines = [], [], text.splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            torn.append(i)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            torn.append(i)
    step = None
    if torn and torn[-1] == len(lines):
        found = _STEP.search(lines[-1])
        step = int(found.group(1)) if found else None
    return rows, torn, step


def parse_failures(text: str) -> tuple[int, str | None]:
    """(the last failure's number, its date) from an error.txt."""
    found = _FAILURE.findall(text)
    if not found:
        return 1, None  # an error.txt says the trial failed at least once, if not when
    number, date = found[-1]
    return int(number), date or None


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "error"


def recover(t: Trial, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """``rows`` plus the last result Ray's state holds when result.json lost it (a torn or
    missing last line): the trial's real last report, its metrics included; and what is wrong
    with result.json, in words ("" when nothing)."""
    problems = []
    if t.torn:
        lines = ", ".join(map(str, t.torn[:5])) + (" ..." if len(t.torn) > 5 else "")
        problems.append(f"result.json line {lines} is not a whole JSON row (torn by a crash or "
                        "a full disk?)")
    last = t.state_result
    top = max((r["step"] for r in rows if isinstance(r.get("step"), (int, float))), default=None)
    if last is not None and (top is None or last["step"] > top):
        problems.append(f"the report of step {last['step']} is missing from result.json and "
                        "was taken from Ray's experiment state")
        rows = [*rows, dict(last)]
    elif t.torn_step is not None and (top is None or t.torn_step > top):
        problems.append(f"the torn line is the report of step {t.torn_step}; its values are "
                        "lost")
    return rows, "; ".join(problems)


def _failed_last(t: Trial, last: dict[str, Any] | None) -> bool:
    """Whether the trial's latest event is a failure (error.txt after its last report)."""
    if not t.failures:
        return False
    when = (last or {}).get("date")
    return t.failed_at is None or not isinstance(when, str) or t.failed_at >= when


def decide(t: Trial, rows: list[dict[str, Any]], steps: int | None, alive: bool,
            fifo: bool) -> tuple[str, int | None, str]:
    """(status, stopped_at, reason) of one trial; the order of the rules is the decision."""
    rows = [r for r in rows if r.get("step") is not None]
    last = rows[-1] if rows else None
    step = int(last["step"]) if last else None
    # What the trial reached: its last whole report, or further when a torn line says so.
    reached = max((s for s in (step, t.torn_step) if s is not None), default=None)
    if any(bool(r.get("diverged")) for r in rows):
        return "diverged", None, f"losses became NaN/inf at step {step}"
    # Reaching train.steps is final whatever a lagging experiment state says (docs/ray.md 5.1).
    if reached is not None and steps is not None and reached >= steps:
        return "finished", None, ""
    # A failure after the last report wins over a RUNNING state that predates it (Ray saves
    # its state every ~10 s) and over any state once the driver is gone; a state that already
    # counts the failure and says RUNNING is Tune retrying the trial.
    failed = _failed_last(t, last)
    knows = t.state_failures is not None and t.state_failures >= t.failures
    if t.state == "ERROR" or (failed and (not alive or not knows)):
        return "errored", None, t.error or "Tune marked the trial ERROR"
    if alive and (t.state in _LIVE or (t.state is None and not (last or {}).get("done"))):
        if failed:
            return "running", None, f"restarting after failure {t.failures}"
        return "running", None, "pending" if t.state == "PENDING" else ""
    if fifo and step is not None and t.state == "TERMINATED":
        # FIFO stops no trial: a terminated one ran to its end and result.json lost the rest.
        return "finished", None, f"result.json ends at step {step} of {steps}; FIFO stops no " \
                                 "trial early, so its last reports are missing"
    if step is not None and (t.state == "TERMINATED" or (t.state is None and last.get("done"))):
        maybe = " or later (result.json's last line is torn)" if t.torn and \
            t.torn_step is None else ""
        return "stopped", reached, f"stopped early at step {reached}{maybe} of {steps}"
    if t.error:
        return "errored", None, t.error
    where = f"step {step}" if step is not None else "no report"
    return "errored", None, f"experiment not running and trial ended at {where} without a " \
                            "final report (interrupted? `tuneable-gan resume` continues it)"
