"""SeedGroupASHA: rung decisions on a configuration's mean over its seeds (unit tests drive the
scheduler directly with fake trials), its space-file form, and one tiny sweep on local Ray."""

from __future__ import annotations

import json
import pickle
import random
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import TINY
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from space_docs import VALID, load

from tuneable_gan.constants import SEED_KEY
from tuneable_gan.errors import ConfigError
from tuneable_gan.tune import integrity, launch
from tuneable_gan.tune.launch import configuration_of
from tuneable_gan.tune.seed_asha import SeedGroupASHA
from tuneable_gan.tune.space import SchedulerSpec, load_space, spec_from_dict

C, S = "CONTINUE", "STOP"
SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def trial(cfg: str, seed: int, index: bool = False) -> SimpleNamespace:
    """A fake trial: configuration ``cfg`` (its regularizer.weight) and seed ``seed``; with
    ``index``, the seed as Repeater's ``__trial_index__`` (search: optuna) instead."""
    config = {"regularizer.weight": cfg, ("__trial_index__" if index else SEED_KEY): seed}
    return SimpleNamespace(trial_id=f"{cfg}_{seed}", config=config, status="PENDING")


def res(t: int, v: float) -> dict:
    return {"training_iteration": t, "fid": v}


def seed_asha(mode: str = "min", group_size: int = 2, **kw) -> SeedGroupASHA:
    kw = {"max_t": 8, "grace_period": 1, "reduction_factor": 2} | kw
    return SeedGroupASHA(metric="fid", mode=mode, group_of=configuration_of,
                         group_size=group_size, **kw)


def drive(sched, trials: dict, stream: list) -> list[str]:
    """Add every trial, then feed ``stream`` ((name, t, fid) results; (name, "error") and
    (name, "complete", t, fid) events); the decisions of the results, in order."""
    for tr in trials.values():
        sched.on_trial_add(None, tr)
    return feed(sched, trials, stream)


def feed(sched, trials: dict, stream: list) -> list[str]:
    out = []
    for name, *ev in stream:
        tr = trials[name]
        if ev[0] == "error":
            sched.on_trial_error(None, tr)
        elif ev[0] == "readd":
            sched.on_trial_add(None, tr)
        elif ev[0] == "complete":
            sched.on_trial_complete(None, tr, res(*ev[1:]))
        else:
            out.append(sched.on_trial_result(None, tr, res(*ev)))
    return out


TRIALS = {f"{c}{s}": trial(c, s) for c in "abc" for s in (0, 1)}
# At rung 1, b's seeds are both 10 and a's are 4 and 12: a's mean (8) beats b's (10).
ONE_BAD_SEED = [("b0", 1, 10.0), ("b1", 1, 10.0), ("a0", 1, 4.0), ("a1", 1, 12.0)]


def test_one_bad_seed_of_a_good_configuration_is_kept_where_plain_asha_stops_it():
    ray_asha = ASHAScheduler(metric="fid", mode="min", max_t=8, grace_period=1,
                             reduction_factor=2)
    # Plain ASHA: a1 (12) is worse than the median of 10, 10, 4 and is stopped.
    assert drive(ray_asha, TRIALS, ONE_BAD_SEED) == [C, C, C, S]
    sched = seed_asha()
    assert drive(sched, TRIALS, ONE_BAD_SEED) == [C, C, C, C]
    assert feed(sched, TRIALS, [("a0", 2, 3.0), ("a1", 2, 11.0)]) == [C, C]
    dec = sched.get_state()["rungs"]["1"]["decisions"]
    assert [(d["mean"], d["action"]) for d in dec.values()] == [(10.0, C), (8.0, C)]


def test_a_bad_mean_stops_every_seed_including_one_told_to_continue():
    sched = seed_asha()
    # a0 (4) reached the rung first and continues while a1 is on its way; a1 (30) makes the
    # mean 17, worse than b's 10: a1 stops now, a0 at its next result, b goes on.
    stream = [("b0", 1, 10.0), ("b1", 1, 10.0), ("a0", 1, 4.0), ("a1", 1, 30.0),
              ("b0", 2, 9.0), ("a0", 2, 3.0), ("a0", 3, 3.0)]
    assert drive(sched, TRIALS, stream) == [C, C, C, S, C, S, S]
    state = sched.get_state()
    assert state["rungs"]["1"]["decisions"][configuration_of(TRIALS["a0"].config)] == {
        "mean": 17.0, "action": S}
    assert state["rungs"]["2"]["records"] == {configuration_of(TRIALS["b0"].config):
                                              {"b_0": 9.0}}
    assert "num_stopped=3" in sched.debug_string()


def test_the_decision_waits_for_every_seed_but_not_for_one_that_errored():
    sched = seed_asha()
    a = configuration_of(TRIALS["a0"].config)
    # Waiting: a0 (30, worse than b's 10) continues while a1 has not reached the rung.
    assert drive(sched, TRIALS, [("b0", 1, 10.0), ("b1", 1, 10.0), ("a0", 1, 30.0)]) == [C] * 3
    assert a not in sched.get_state()["rungs"]["1"]["decisions"]
    # A retried error (Tune re-adds the trial at once) still counts: a0 keeps waiting.
    assert feed(sched, TRIALS, [("a1", "error"), ("a1", "readd"), ("a0", 2, 30.0)]) == [C]
    # A final error: the next result decides on a0 alone, and stops it.
    assert feed(sched, TRIALS, [("a1", "error"), ("a0", 3, 30.0)]) == [S]
    assert sched.get_state()["rungs"]["1"]["decisions"][a] == {"mean": 30.0, "action": S}
    # A seed that errored (or finished) before the rung: its sibling decides at once.
    sched = seed_asha()
    stream = [("b0", 1, 10.0), ("b1", 1, 10.0), ("c1", "complete", 0, 1.0), ("c0", 1, 30.0)]
    assert drive(sched, TRIALS, stream) == [C, C, S]


def test_mode_max_and_min_judge_the_same_stream_oppositely():
    # a's mean (17) is decided first; b's (10) is compared with it.
    stream = [("a0", 1, 4.0), ("a1", 1, 30.0), ("b0", 1, 10.0), ("b1", 1, 10.0),
              ("b0", 2, 10.0)]
    assert drive(seed_asha("min"), TRIALS, stream) == [C, C, C, C, C]
    assert drive(seed_asha("max"), TRIALS, stream) == [C, C, C, S, S]
    # mode through Tune's set_search_properties, as launch leaves it.
    sched = SeedGroupASHA(max_t=8, grace_period=1, reduction_factor=2,
                          group_of=configuration_of, group_size=2)
    assert sched.set_search_properties("fid", "max") and sched.metric == "fid"
    assert not sched.set_search_properties("fid", "min")  # already set: refused, as Ray does
    assert drive(sched, TRIALS, stream) == [C, C, C, S, S]


def test_groups_come_from_repeater_index_too_and_rungs_follow_ray():
    optuna = {f"{c}{s}": trial(c, s, index=True) for c in "ab" for s in (0, 1)}
    stream = [("b0", 1, 10.0), ("b1", 1, 10.0), ("a0", 1, 4.0), ("a1", 1, 30.0)]
    assert drive(seed_asha(), optuna, stream) == [C, C, C, S]
    assert list(seed_asha(max_t=8).get_state()["rungs"]) == ["1", "2", "4"]
    assert list(seed_asha(max_t=9, grace_period=2, reduction_factor=3)
                .get_state()["rungs"]) == ["2", "6"]
    # A trial at max_t stops, as in Ray.
    assert drive(seed_asha(max_t=2), TRIALS, [("a0", 1, 1.0), ("a0", 2, 1.0)]) == [C, S]


def test_one_seed_per_configuration_decides_exactly_as_ray_asha():
    rng = random.Random(0)
    trials = {f"t{i}": trial(str(i), 0) for i in range(20)}
    for rf, max_t in ((2, 8), (3, 9)):
        ray_asha = ASHAScheduler(metric="fid", mode="min", max_t=max_t, grace_period=1,
                                 reduction_factor=rf)
        ours = seed_asha(group_size=1, max_t=max_t, reduction_factor=rf)
        for tr in trials.values():
            ray_asha.on_trial_add(None, tr)
            ours.on_trial_add(None, tr)
        live, n = {name: 0 for name in trials}, 0
        while live:
            name = rng.choice(sorted(live))
            live[name] += 1
            r = res(live[name], rng.uniform(0, 100))
            got = ours.on_trial_result(None, trials[name], r)
            assert got == ray_asha.on_trial_result(None, trials[name], r), (rf, name, r)
            n += got == S and live[name] < max_t  # stopped early
            if got == S:
                del live[name]
                ray_asha.on_trial_complete(None, trials[name], r)
                ours.on_trial_complete(None, trials[name], r)
        assert 0 < n < len(trials), n  # some stopped early, some ran to max_t


def test_state_round_trip_and_save_restore_give_the_same_decisions(tmp_path):
    first = [("b0", 1, 10.0), ("b1", 1, 10.0), ("a0", 1, 4.0), ("c0", 1, 50.0),
             ("a1", 1, 12.0), ("b0", 2, 9.0), ("c1", "error")]
    rest = [("c0", 2, 50.0), ("a0", 2, 8.0), ("b1", 2, 8.0), ("a1", 2, 30.0), ("b0", 3, 7.0),
            ("a0", 3, 3.0), ("b0", 4, 7.0), ("b1", 4, 7.0)]
    one = seed_asha()
    drive(one, TRIALS, first)
    state = json.loads(json.dumps(one.get_state()))  # plain JSON
    two, three = seed_asha(), seed_asha()
    two.set_state(state)
    one.save(str(tmp_path / "s.json"))
    three.restore(str(tmp_path / "s.json"))
    copy = pickle.loads(pickle.dumps(one))  # tuner.pkl pickles the scheduler
    expect = feed(one, TRIALS, rest)
    assert expect == [S, C, C, S, C, S, C, C]
    for other in (two, three, copy):
        assert feed(other, TRIALS, rest) == expect
        assert other.get_state() == one.get_state()
    with pytest.raises(ValueError, match="rungs"):
        seed_asha(max_t=4).set_state(state)


# -- the space file ------------------------------------------------------------------------


def test_seed_asha_parses_round_trips_and_is_built_by_launch(tmp_path):
    doc = VALID | {"tune": VALID["tune"] | {"scheduler": {"seed_asha": {
        "grace_period": 2, "reduction_factor": 3, "max_t": 3}}}}
    spec = load(tmp_path, doc)
    assert spec.tune.scheduler == SchedulerSpec("seed_asha", {
        "grace_period": 2, "reduction_factor": 3, "max_t": 3})
    assert spec_from_dict(spec.to_dict(), spec.source) == spec
    assert spec.smoke().tune.scheduler.params == {"grace_period": 1, "reduction_factor": 3,
                                                  "max_t": 3}
    sched = launch._scheduler(spec)
    assert isinstance(sched, SeedGroupASHA) and sched._group_size == 3
    assert list(sched.get_state()["rungs"]) == ["2"]
    # One seed is allowed (it is plain ASHA then); max_t defaults to the report count.
    one = load(tmp_path, doc | {"space": VALID["space"] | {"train.seed": {"seeds": 1}},
                                "tune": VALID["tune"] | {"scheduler": "seed_asha"}})
    assert one.tune.scheduler == SchedulerSpec("seed_asha", {"grace_period": 1,
                                                             "reduction_factor": 4})
    sched = launch._scheduler(one)
    assert sched._group_size == 1 and sched._max_t == one.reports_per_trial() == 3


def test_seed_asha_is_refused_for_lottery_tickets_as_asha_is():
    spec = load_space(SPACES / "sparsity.yaml")
    with pytest.raises(ConfigError) as e:
        spec.with_overrides(["tune.scheduler={seed_asha: {grace_period: 1}}"])
    assert e.value.problems == ["sparsity.yaml: tune.scheduler=seed_asha cannot judge "
                                "lottery-ticket trials (sparsity.level > 0 runs ticket rounds "
                                "first, with no ticket FID to compare); use scheduler: fifo"]


# -- a tiny sweep ----------------------------------------------------------------------------

FIDS = {0.0: (10.0, 10.0), 1.0: (4.0, 40.0)}  # weight -> fid of seeds 0, 1


def fake_train(config, ctx):
    """Four reports of a fixed fid per (weight, seed): weight 1 has one good seed but a bad
    mean. The order is pinned, whatever order the trials start in: all four start before any
    reports, and weight 1 reports step s only once both weight-0 seeds' step-s results were
    taken (``tune.report`` returns when the driver asks for the next result), so weight 0
    decides each rung first and weight 1's seeds reach rung 1 together."""
    weight, seed = float(config["regularizer.weight"]), int(config[SEED_KEY])
    marks = Path(ctx.tickets).parent / "marks"
    marks.mkdir(parents=True, exist_ok=True)
    (marks / f"start-{weight}-{seed}").touch()
    wait_for(lambda: len(list(marks.glob("start-*"))) == 4)
    for step in range(1, 5):
        time.sleep(0.5)
        if weight:
            wait_for(lambda step=step: all((marks / f"0.0-{s}-{step}").exists()
                                           for s in (0, 1)))
        tune.report({"step": step, "fid": FIDS[weight][seed]})
        (marks / f"{weight}-{seed}-{step}").touch()


def wait_for(ready, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow  # ~3 s of trials, but starting Ray and four actors takes 30-50 s on 2 CPUs
def test_a_sweep_stops_both_seeds_of_the_worse_configuration(ray_2cpu, tmp_path, monkeypatch):
    monkeypatch.setenv(integrity.HOME_ENV, str(tmp_path / "home"))
    doc = {"name": "sa", "base": TINY | {"train.steps": 8, "train.eval_every": 2},
           "space": {"regularizer.weight": {"grid": [0.0, 1.0]}, SEED_KEY: {"seeds": 2}},
           "tune": {"search": "grid", "storage": str(tmp_path / "results"),
                    "resources": {"cpu": 0.5},  # all four at once: seeds meet at the rungs
                    "scheduler": {"seed_asha": {"grace_period": 1, "reduction_factor": 2}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    spec = load_space(tmp_path / "s.yaml")
    made = []
    real = launch._scheduler
    monkeypatch.setattr(launch, "_scheduler", lambda s: made.append(real(s)) or made[-1])
    results = launch.run_sweep(spec, fn=fake_train)
    assert results.num_errors == 0 and len(results) == 4
    last = {(r.config["regularizer.weight"], r.config[SEED_KEY]): r.metrics["training_iteration"]
            for r in results}
    # Weight 0 (mean 10) runs its 4 reports; weight 1 (4 and 40, mean 22) is stopped on both
    # seeds by one decision at rung 1 (plain ASHA would have kept its seed 0: 4 < 10).
    assert last[(0.0, 0)] == last[(0.0, 1)] == 4, last
    assert last[(1.0, 0)] < 4 and last[(1.0, 1)] < 4, last
    rungs = made[0].get_state()["rungs"]
    bad = configuration_of({"regularizer.weight": 1.0})
    assert rungs["1"]["decisions"][bad] == {"mean": 22.0, "action": "STOP"}, rungs
