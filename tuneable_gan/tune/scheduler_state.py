"""ASHA's rungs across resume.

Ray saves the searcher with the experiment but not the scheduler: ``Tuner.restore`` unpickles the
scheduler as ``tuner.pkl`` holds it, from before the first result, so a resumed ASHA sweep has
empty rungs, promotes every trial past them and stops fewer trials than the run it continues.

``SchedulerRecorder`` (a Tune callback, driver side) writes the scheduler's state as plain JSON,
``tuneable_gan_scheduler.json``, into the driver's staging directory whenever it changed, at the
end of each step and of the experiment; Ray syncs that directory to the storage with its own
state, and the integrity record (``integrity``) seals it in the same step, since this callback
runs before the recorder. ``resume_sweep`` reads it back (``load``) and puts it into the restored
scheduler (``set_state``) before the first trial is re-added.

Schedulers: Ray's ``ASHAScheduler`` (its brackets' rung records, trial id -> reward) and
``SeedGroupASHA`` (its own ``get_state``). FIFO has no state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tuneable_gan.tune.seed_asha import SeedGroupASHA

STATE_FILE = "tuneable_gan_scheduler.json"
FORMAT = 1


def get_state(scheduler: TrialScheduler) -> dict[str, Any] | None:
    """The scheduler's decisions so far as a JSON-serialisable dict; None for a stateless one."""
    if isinstance(scheduler, SeedGroupASHA):
        return {"format": FORMAT, "kind": "seed_asha", "state": scheduler.get_state()}
    if isinstance(scheduler, ASHAScheduler):
        # Ray keeps each bracket's rungs as [(milestone, {trial_id: reward})]; the rewards are
        # sign-adjusted metric values, restored as they were.
        brackets = [[[float(m), dict(rec)] for m, rec in b._rungs] for b in scheduler._brackets]
        return {"format": FORMAT, "kind": "asha", "num_stopped": scheduler._num_stopped,
                "brackets": brackets}
    return None


def set_state(scheduler: TrialScheduler, doc: dict[str, Any]) -> None:
    """Put a ``get_state`` document back into a scheduler built with the same settings;
    ValueError if it came from another kind or other rungs."""
    if doc.get("format") != FORMAT:
        raise ValueError(f"scheduler state format {doc.get('format')} (this version reads "
                         f"{FORMAT})")
    if isinstance(scheduler, SeedGroupASHA) and doc.get("kind") == "seed_asha":
        scheduler.set_state(doc["state"])
        return
    if isinstance(scheduler, ASHAScheduler) and doc.get("kind") == "asha":
        saved = doc["brackets"]
        have = [[float(m) for m, _ in b._rungs] for b in scheduler._brackets]
        if [[m for m, _ in b] for b in saved] != have:
            raise ValueError(f"scheduler state has rungs {[[m for m, _ in b] for b in saved]}, "
                             f"this scheduler {have}")
        for bracket, rungs in zip(scheduler._brackets, saved):
            bracket._rungs = [(m, dict(rec)) for (m, _), (_, rec) in zip(bracket._rungs, rungs)]
        scheduler._num_stopped = int(doc["num_stopped"])
        return
    raise ValueError(f"scheduler state of kind {doc.get('kind')!r} does not fit a "
                     f"{type(scheduler).__name__}")


def load(experiment: str) -> dict[str, Any] | None:
    """The state document stored in ``experiment`` (a path or URI), or None if there is none."""
    from tuneable_gan.tune.integrity import fs_of

    fs, root = fs_of(experiment)
    try:
        with fs.open_input_stream(f"{root}/{STATE_FILE}") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except OSError as e:
        if fs.get_file_info(f"{root}/{STATE_FILE}").type == pafs.FileType.NotFound:
            return None
        raise e


class SchedulerRecorder(tune.Callback):
    """Writes the scheduler's state beside Ray's experiment state when it changed (see the
    module docstring). Pickled into ``tuner.pkl`` without the scheduler: resume attaches the
    restored one."""

    def __init__(self, scheduler: TrialScheduler | None) -> None:
        self.scheduler = scheduler
        self._written: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(None)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.write(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.write(trials)

    def write(self, trials: list[Any]) -> None:
        """Write the state into the staging directory if it changed since the last write."""
        doc = get_state(self.scheduler) if self.scheduler is not None else None
        if doc is None or not trials:
            return
        text = json.dumps(doc, sort_keys=True)
        if text == self._written:
            return
        staging = Path(trials[0].storage.experiment_driver_staging_path)
        tmp = staging / f".{STATE_FILE}.tmp"
        tmp.write_text(text)
        os.replace(tmp, staging / STATE_FILE)  # whole or absent, never half-written
        self._written = text
