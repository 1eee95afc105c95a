"""ASHA across resume: the scheduler's rung records are stored beside the experiment and put
back into the restored scheduler, so a resumed sweep judges later trials against the rungs the
interrupted one recorded."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, stand_in_report, stand_in_start
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from tuneable_gan.tune import integrity, launch, scheduler_state
from tuneable_gan.tune.launch import configuration_of
from tuneable_gan.tune.result_log import RESULT_LOG
from tuneable_gan.tune.seed_asha import SeedGroupASHA
from tuneable_gan.tune.space import load_space


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """This user's resume key directory, private to the test."""
    monkeypatch.setenv(integrity.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


class FakeTrial:
    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config, self.status = trial_id, config, "RUNNING"


def stream(n: int = 6) -> list[tuple[FakeTrial, dict]]:
    trials = [FakeTrial(f"t{i}", {"w": i // 2, "train.seed": i % 2}) for i in range(n)]
    return [(t, {"training_iteration": it, "fid": float((7 * i + 3 * it) % 11)})
            for it in (1, 2, 3, 4) for i, t in enumerate(trials)]


def schedulers() -> list:
    return [ASHAScheduler(time_attr="training_iteration", metric="fid", mode="min", max_t=4,
                          grace_period=1, reduction_factor=2),
            SeedGroupASHA(metric="fid", mode="min", max_t=4, grace_period=1,
                          reduction_factor=2, group_of=configuration_of, group_size=2)]


@pytest.mark.parametrize("which", [0, 1], ids=["asha", "seed_asha"])
def test_a_restored_state_gives_the_same_decisions_as_the_original(which):
    events = stream()
    original, restored = schedulers()[which], schedulers()[which]
    for t, _ in events[:6]:
        original.on_trial_add(None, t)
        restored.on_trial_add(None, t)
    for t, r in events[:9]:  # an interrupt after the first rung and part of the second
        original.on_trial_result(None, t, r)
    doc = json.loads(json.dumps(scheduler_state.get_state(original)))  # through the file
    scheduler_state.set_state(restored, doc)
    assert scheduler_state.get_state(restored) == doc
    rest = [(t, r) for t, r in events[9:]]
    assert [original.on_trial_result(None, t, r) for t, r in rest] == [
        restored.on_trial_result(None, t, r) for t, r in rest]
    assert scheduler_state.get_state(restored) == scheduler_state.get_state(original)


def test_a_state_of_other_rungs_or_another_kind_is_refused():
    asha, seed = schedulers()
    other = ASHAScheduler(time_attr="training_iteration", metric="fid", mode="min", max_t=8,
                          grace_period=1, reduction_factor=2)
    with pytest.raises(ValueError, match="rungs"):
        scheduler_state.set_state(other, scheduler_state.get_state(asha))
    with pytest.raises(ValueError, match="does not fit a SeedGroupASHA"):
        scheduler_state.set_state(seed, scheduler_state.get_state(asha))
    assert scheduler_state.get_state(tune.schedulers.FIFOScheduler()) is None


# -- a real sweep, interrupted, and resumed ------------------------------------------------------


def train_gan(config, ctx):
    """A quick stand-in trainable (named as the real one: Tuner.restore matches names): 6
    reports, fid = weight + 1/step, a checkpoint every report, resumed from it."""
    w = float(config["regularizer.weight"])
    for step in range(stand_in_start() + 1, 7):
        time.sleep(0.2)
        stand_in_report({"step": step, "fid": w + 1 / step}, True)


class Interrupt(tune.Callback):
    """Once three trials have passed the first rung: stop the sweep with Tune's own stop signal
    (what Ctrl-C does), leaving trials to run on resume."""

    def __init__(self) -> None:
        self.done = False

    def __getstate__(self):
        return {"done": True}  # restored on resume from tuner.pkl: it must not fire again

    def on_step_begin(self, iteration, trials, **info):
        past = [t for t in trials if (t.last_result or {}).get("training_iteration", 0) >= 1]
        if not self.done and len(past) >= 3:
            self.done = True
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow
def test_asha_rungs_survive_an_interrupt_and_resume(ray_2cpu, tmp_path, home, monkeypatch):
    doc = {"name": "rungs", "base": TINY,
           "space": {"regularizer.weight": {"grid": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}},
           "tune": {"storage": str(tmp_path / "results"), "resources": {"cpu": 1},
                    "search": "grid",
                    "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2,
                                           "max_t": 6}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    spec = load_space(tmp_path / "s.yaml")
    launch.run_sweep(spec, fn=train_gan, callbacks=[Interrupt()])
    exp = launch.experiment_path(spec)
    before = scheduler_state.load(exp)
    rung1 = {m: rec for m, rec in before["brackets"][0]}[1.0]
    assert len(rung1) >= 3, before  # the interrupted sweep had judged trials at rung 1
    restored = []
    real = scheduler_state.set_state

    def spy(scheduler, state):
        real(scheduler, state)
        restored.append(scheduler_state.get_state(scheduler))

    monkeypatch.setattr(scheduler_state, "set_state", spy)
    results, _ = launch.resume_sweep(exp, fn=train_gan)
    assert results.num_errors == 0
    assert restored == [before]  # the rung records, exactly as the interrupt left them
    after = scheduler_state.load(exp)
    for (m, old), (m2, new) in zip(before["brackets"][0], after["brackets"][0]):
        assert m == m2 and old.items() <= new.items()  # kept, then added to
    assert after["num_stopped"] >= before["num_stopped"]
    # The driver's report log went on from what the interrupted driver stored: no step lost.
    for d in Path(exp).glob("trial_*"):
        steps = {json.loads(ln)["step"] for ln in (d / RESULT_LOG).read_text().splitlines()}
        assert steps == set(range(1, max(steps) + 1)), (d.name, sorted(steps))
