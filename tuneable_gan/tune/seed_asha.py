"""Seed-group ASHA: asynchronous successive halving that judges a configuration by the mean
over its seeds, so all seeds of one configuration are promoted or stopped together.

Plain ASHA treats every seed as its own trial, so one unlucky seed can stop a good
configuration. ``SeedGroupASHA`` keeps Ray's rungs and cutoff rule and applies them to groups
(``group_of(trial.config)``, ``group_size`` seeds each):

* Rungs: ``grace_period * reduction_factor**k`` below ``max_t`` (Ray's count of rungs). A trial
  reporting at time ``t`` records its metric at the highest rung <= ``t`` it has not recorded.
* A group's decision at a rung is taken once each of its ``group_size`` seeds has recorded
  there or has ended without doing so (completed, removed, or errored for good); the mean is
  over the recorded values. Decisions are taken in rung order.
* Cutoff (Ray's rule): the group continues unless its mean is worse than the
  ``(1 - 1/reduction_factor)`` quantile (linear interpolation, NaN ignored) of the means that
  other groups recorded at that rung before it; with none recorded it continues; a mean equal
  to the cutoff continues. The group's mean is then recorded for later groups.
* Until its group's decision a trial that reached the rung CONTINUEs: waiting would idle its
  worker, and its siblings may not even have started yet.
* STOP stops every seed of the group: the one reporting now, the others at their next result.
  A seed reaching an already decided rung (late, e.g. retried) follows the decision; its value
  is recorded but does not change the group's mean. A trial at ``max_t`` stops, as in Ray.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

STATE_VERSION = 1
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _whole_config(config: dict[str, Any]) -> Hashable:
    return json.dumps(config, sort_keys=True, default=repr)


class SeedGroupASHA(FIFOScheduler):
    """ASHA over groups of trials (the seeds of a configuration); see the module docstring."""

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None,
                 mode: str | None = None, max_t: int = 100, grace_period: int = 1,
                 reduction_factor: float = 4,
                 group_of: Callable[[dict[str, Any]], Hashable] | None = None,
                 group_size: int = 1) -> None:
        """``group_of`` maps a trial config to its configuration (default: the whole config,
        every trial its own group); ``group_size`` is the number of seeds per configuration."""
        if not (0 < grace_period <= max_t and reduction_factor > 1 and group_size >= 1):
            raise ValueError("SeedGroupASHA needs 0 < grace_period <= max_t, "
                             "reduction_factor > 1 and group_size >= 1")
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__()
        self._time_attr, self._metric, self._mode = time_attr, metric, mode
        self._max_t, self._rf, self._group_size = max_t, reduction_factor, group_size
        self._group_of = group_of or _whole_config
        # Ray's rung count (async_hyperband._Bracket); a rung at max_t could never decide.
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        self._milestones = [m for m in (grace_period * reduction_factor ** k
                                        for k in range(count)) if m < max_t]
        self.set_state(self._empty_state())

    # -- Ray's scheduler API ---------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``TuneConfig`` unless given to the constructor
        (False, as Ray's schedulers answer, when both name one)."""
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        if self._metric is None and self._mode:
            self._metric = DEFAULT_METRIC
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Register ``trial`` in its group (a trial restored as finished counts as ended)."""
        if not self._metric or self._mode not in ("min", "max"):
            raise ValueError(f"SeedGroupASHA has no valid metric ({self._metric}) or mode "
                             f"({self._mode}): pass them here or to tune.TuneConfig()")
        self._join(trial)
        # A resume re-adds finished trials too; they will never report again.
        if getattr(trial, "status", None) in (Trial.TERMINATED, Trial.ERROR):
            self._ended.add(trial.trial_id)
        else:
            self._ended.discard(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Record the result at its rung and return CONTINUE or STOP (see the module)."""
        if self._time_attr not in result or self._metric not in result:
            return CONTINUE  # as Ray: nothing to judge
        group = self._join(trial)
        self._ended.discard(trial.trial_id)
        self._settle_all()  # errors seen since the last result may have been final
        t, value = result[self._time_attr], result[self._metric]
        if group not in self._stopped and t < self._max_t and value is not None:
            self._record(trial.trial_id, group, t, float(value))
            self._settle(group)
        if group in self._stopped or t >= self._max_t:
            self._num_stopped += 1
            return STOP
        return CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any,
                          result: dict[str, Any]) -> None:
        """Record a final result (as Ray does) and let the group decide without this trial."""
        group = self._join(trial)
        value = (result or {}).get(self._metric)
        if (group not in self._stopped and value is not None
                and (result or {}).get(self._time_attr) is not None):
            self._record(trial.trial_id, group, result[self._time_attr], float(value))
        self._ended.add(trial.trial_id)
        self._settle_all()

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        """Leave the trial out of its group's later rungs (unless it is re-added)."""
        self._join(trial)
        # No decision here: Tune re-adds a trial it retries right after this call, so the
        # next event (on_trial_result/complete/remove) settles only errors that stayed final.
        self._ended.add(trial.trial_id)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        """A PENDING/PAUSED trial removed for good: its group decides without it."""
        self._join(trial)
        self._ended.add(trial.trial_id)
        self._settle_all()

    def debug_string(self) -> str:
        """One line per rung: the cutoff now and the groups decided / stopped there."""
        lines = [f"Using SeedGroupASHA: num_stopped={self._num_stopped}, "
                 f"groups={len(self._members)}, stopped groups={len(self._stopped)}"]
        for m, rung in zip(self._milestones, self._rungs):
            dec = rung["decisions"]
            stops = sum(d["action"] == STOP for d in dec.values())
            waiting = sum(g not in dec and g not in self._stopped for g in rung["records"])
            lines.append(f"Rung {m:g}: cutoff={self._cutoff(dec, None)} decided={len(dec)} "
                         f"stopped={stops} waiting={waiting}")
        return "\n".join(lines)

    def save(self, checkpoint_path: str) -> None:
        """Write ``get_state()`` as JSON (not a pickle: nothing to trust on restore)."""
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Read a file written by ``save``."""
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))

    # -- state -------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Rung records and decisions, groups and trials, as a JSON-serialisable dict:
        ``rungs[milestone] = {records: {group: {trial_id: value}}, decisions: {group: {mean,
        action}}}`` (metric values as reported), ``trials[trial_id] = {group, ended}``."""
        return copy.deepcopy({
            "version": STATE_VERSION, "num_stopped": self._num_stopped,
            "stopped": sorted(self._stopped),
            "trials": {tid: {"group": g, "ended": tid in self._ended}
                       for tid, g in self._group.items()},
            "rungs": {_rung_key(m): r for m, r in zip(self._milestones, self._rungs)}})

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the state with one from ``get_state`` (of a scheduler with these rungs)."""
        keys = [_rung_key(m) for m in self._milestones]
        if state.get("version") != STATE_VERSION or sorted(state.get("rungs", {})) != sorted(keys):
            raise ValueError(f"scheduler state has rungs {sorted(state.get('rungs', {}))} "
                             f"(version {state.get('version')}); this one has {keys}")
        state = copy.deepcopy(state)
        self._num_stopped = int(state["num_stopped"])
        self._stopped: set[str] = set(state["stopped"])
        self._group: dict[str, str] = {t: d["group"] for t, d in state["trials"].items()}
        self._ended: set[str] = {t for t, d in state["trials"].items() if d["ended"]}
        self._members: dict[str, list[str]] = {}
        for tid, g in self._group.items():
            self._members.setdefault(g, []).append(tid)
        self._rungs: list[dict[str, Any]] = [state["rungs"][k] for k in keys]

    def _empty_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "num_stopped": 0, "stopped": [], "trials": {},
                "rungs": {_rung_key(m): {"records": {}, "decisions": {}}
                          for m in self._milestones}}

    # -- the algorithm -----------------------------------------------------------------------

    def _join(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid not in self._group:
            key = self._group_of(trial.config)
            group = key if isinstance(key, str) else repr(key)
            self._group[tid] = group
            self._members.setdefault(group, []).append(tid)
        return self._group[tid]

    def _record(self, tid: str, group: str, t: float, value: float) -> None:
        # Ray's rung choice: the highest milestone <= t this trial has not recorded yet.
        for m, rung in reversed(list(zip(self._milestones, self._rungs))):
            mine = rung["records"].get(group, {})
            if t >= m and tid not in mine:
                rung["records"].setdefault(group, {})[tid] = value
                return

    def _settle_all(self) -> None:
        for group in list(self._members):
            self._settle(group)

    def _settle(self, group: str) -> None:
        """Take the group's pending decisions, in rung order, while all its seeds are in."""
        if group in self._stopped:
            return
        for rung in self._rungs:
            records, decisions = rung["records"].get(group), rung["decisions"]
            if not records or group in decisions:
                # Empty: no seed got here yet, or all jumped it (a seed that has recorded a
                # higher rung is past this one, so the higher rung may still be decided).
                continue
            ended = sum(t in self._ended and t not in records for t in self._members[group])
            if len(records) + ended < self._group_size:
                return  # a seed is still on its way here; the reported ones continue
            mean = float(np.mean(list(records.values())))
            cutoff = self._cutoff(decisions, group)
            # Ray's comparison: strictly worse than the cutoff stops; NaN never does.
            action = STOP if cutoff is not None and self._better(cutoff, mean) else CONTINUE
            decisions[group] = {"mean": mean, "action": action}
            if action == STOP:
                self._stopped.add(group)
                return

    def _cutoff(self, decisions: dict[str, dict[str, Any]], group: str | None) -> float | None:
        """The (1 - 1/rf) quantile of the other groups' means at a rung, in metric units."""
        sign = 1.0 if self._mode == "max" else -1.0
        # As Ray: quantile of rewards (metric * sign, higher is better), NaN left out.
        rewards = [sign * d["mean"] for g, d in decisions.items()
                   if g != group and not math.isnan(d["mean"])]
        if not rewards:
            return None
        return sign * float(np.percentile(rewards, (1 - 1 / self._rf) * 100))

    def _better(self, a: float, b: float) -> bool:
        return a > b if self._mode == "max" else a < b


def _rung_key(milestone: float) -> str:
    return str(int(milestone)) if float(milestone).is_integer() else repr(float(milestone))
