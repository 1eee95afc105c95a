"""The sweep's terminal output (``tuneable_gan.tune.progress``): a table of the swept values,
step, the metric and its best, whose status tells an ASHA-stopped trial from a finished one,
one line per ended trial and none of Ray's per-trial dumps; checked on one tiny ASHA sweep
(a scripted trainable, one trial stopped) and on fake trials."""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import TINY
from ray import tune

from tuneable_gan.constants import SEED_KEY
from tuneable_gan.tune import progress
from tuneable_gan.tune.launch import run_sweep
from tuneable_gan.tune.progress import Columns, SweepReporter, end_line, ending, short_names
from tuneable_gan.tune.space import load_space, trial_config

GOOD, BAD = 10.0, 40.0  # the fid of the first trial to start, and of the other
BASE = TINY | {"train.steps": 8, "train.eval_every": 2}


def scripted_trial(config, ctx):
    """Reports as ``TuneSink`` does (the trial's flat config, step, fid, fid_best) at steps
    2, 4, 6, 8, without training: the first trial to start reports GOOD, the next BAD."""
    cfg = trial_config(ctx.base, ctx.search, config)
    starts = Path(ctx.tickets).parent / "starts"
    starts.mkdir(parents=True, exist_ok=True)
    fid = BAD if any(starts.iterdir()) else GOOD
    (starts / tune.get_context().get_trial_id()).touch()
    for step in range(2, 9, 2):
        tune.report(cfg.flat() | {"step": step, "fid": fid, "fid_best": fid, "diverged": False})


scripted_trial.__name__ = "train_gan"


def space(tmp_path: Path, axes: dict | None = None, **tune_keys) -> Path:
    doc = {"name": "progress", "base": BASE,
           "space": {"regularizer.weight": {"uniform": [1.0, 10.0]}} | (axes or {}),
           "tune": {"storage": str(tmp_path / "results"), "resources": {"cpu": 1},
                    "search": "random", "num_samples": 2} | tune_keys}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow  # ~5 s of trials; starting Ray on 2 busy CPUs takes most of the rest
def test_a_sweep_prints_the_swept_values_and_the_metric_and_tells_stopped_from_finished(
        ray_2cpu, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(progress.ENGINE_ENV, "unset")
    monkeypatch.delenv(progress.ENGINE_ENV)  # Ray's default engine until the sweep sets it
    monkeypatch.setenv("TUNEABLE_GAN_HOME", str(tmp_path / "home"))
    # One trial at a time: the second (BAD) reaches rung 1 after the first (GOOD) passed it.
    spec = load_space(space(tmp_path, max_concurrent=1, scheduler={
        "asha": {"grace_period": 1, "reduction_factor": 2}}))
    capfd.readouterr()
    results = run_sweep(spec, fn=scripted_trial,
                        callbacks=[progress.StartLines(["tuneable-gan: warning: a sweep's"])])
    cap = capfd.readouterr()
    assert results.num_errors == 0 and len(results) == 2
    assert cap.err.count("tuneable-gan: warning: a sweep's") == 1  # cli's EMA lines go so
    lines = (cap.out + cap.err).splitlines()
    text = "\n".join(lines)
    # Neither Tune's own key nor the constant config keys of the reports are shown.
    assert "__sample__" not in text and "data.fraction" not in text, text
    header = [ln for ln in lines if ln.startswith("trial ") and "status" in ln][-1]
    assert header.split() == ["trial", "status", "weight", "step", "fid", "fid_best"]
    final = lines[lines.index(header) + 2:lines.index(header) + 4]
    assert any(re.fullmatch(r"trial_\S+\s+finished\s+[\d.]+\s+8\s+10\s+10", r) for r in final)
    assert any(re.fullmatch(r"trial_\S+\s+stopped by ASHA\s+[\d.]+\s+2\s+40\s+40", r)
               for r in final), final
    ends = [ln for ln in lines if re.match(r"trial_\S+ (finished|stopped)", ln)]
    assert len(ends) == 2, text
    assert any(re.fullmatch(r"trial_\S+ finished at step 8 of 8 \(fid 10, best 10; "
                            r"regularizer\.weight=[\d.]+\)", ln) for ln in ends), ends
    assert any(re.fullmatch(r"trial_\S+ stopped by ASHA at step 2 of 8 \(fid 40, best 40; "
                            r"regularizer\.weight=[\d.]+\)", ln) for ln in ends), ends
    # A trial's completion is its one end line: no result dump (Ray's is ~100 lines a trial).
    for tid in re.findall(r"^trial_(\S+) ", "\n".join(ends), re.M):
        mine = [ln for ln in lines if tid in ln and not ln.startswith((f"trial_{tid}  ",
                                                                          "best fid so far"))]
        assert len(mine) == 1, mine
    assert len(lines) < 60, text
    assert os.environ[progress.ENGINE_ENV] == "0"  # what made Ray call the reporter


def fake(status: str = "TERMINATED", config: dict | None = None, **last) -> SimpleNamespace:
    """A trial as the reporter reads it."""
    return SimpleNamespace(trial_id="abc_00001", status=status, config=config or {},
                           last_result=last, metric_analysis={}, error_file="/x/error.txt")


COLS = Columns({"regularizer.weight": "weight"}, "fid", "min", "ASHA")


def test_a_terminated_trial_is_finished_stopped_or_diverged():
    at = {"train.steps": 8, "fid": 3.0}
    assert ending(fake(step=8, **at), COLS) == "finished"
    assert ending(fake(step=4, **at), COLS) == "stopped by ASHA"
    assert ending(fake(step=4, **at), Columns({}, "fid", "min")) == "stopped early"
    assert ending(fake(step=5, diverged=True, **at), COLS) == "diverged"
    t = fake(step=4, **at, **{"regularizer.weight": 2.5, "fid_best": 2.0})
    assert end_line(t, COLS) == ("trial_abc_00001 stopped by ASHA at step 4 of 8 "
                                 "(fid 3, best 2; regularizer.weight=2.5)")


def test_the_table_shows_pending_running_and_errored_trials():
    rep = SweepReporter(COLS)
    rep.setup(start_time=0.0, total_samples=3, metric="fid", mode="min")
    running = fake("RUNNING", step=2, fid=7.25, **{"regularizer.weight": 1.5, "train.steps": 8})
    running.metric_analysis = {"fid": {"min": 7.25}}  # no fid_best reported: Tune's best
    pending = fake("PENDING", config={"regularizer.weight": 9.0, "__sample__": 1})
    errored = fake("ERROR", step=2, fid=math.inf, **{"regularizer.weight": 3.0})
    text = rep.render([errored, pending, running], False, "Logical resource usage: 1/2 CPUs")
    lines = text.splitlines()
    assert lines[0].startswith("== 3/3 trials (1 ERROR, 1 PENDING, 1 RUNNING), ")
    assert lines[1] == "Logical resource usage: 1/2 CPUs"
    assert lines[2] == "best fid so far: 7.25 (trial_abc_00001)"
    assert lines[3].split() == ["trial", "status", "weight", "step", "fid", "fid_best"]
    assert [ln.split() for ln in lines[5:8]] == [
        ["trial_abc_00001", "RUNNING", "1.5", "2", "7.25", "7.25"],
        ["trial_abc_00001", "PENDING", "9"],
        ["trial_abc_00001", "ERROR", "3", "2", "inf"]]
    assert lines[8] == "trial_abc_00001 errored: /x/error.txt"
    assert "__sample__" not in text


def test_the_columns_are_the_axes_and_the_seed_never_tunes_keys(tmp_path):
    spec = load_space(space(tmp_path, {SEED_KEY: {"seeds": 2}}))
    assert Columns.of(spec) == Columns({"regularizer.weight": "weight", SEED_KEY: "seed"},
                                       "fid", "min", "")
    assert "__sample__" in spec.param_space()  # Tune's key, which Ray's table showed
    assert Columns({}, "fid_best", "min").best == ""  # a best metric has no best column
    assert short_names(["optim.g_lr", "a.weight", "b.weight"]) == {
        "optim.g_lr": "g_lr", "a.weight": "a.weight", "b.weight": "b.weight"}


def test_a_restored_reporter_sets_the_engine_and_an_explicit_choice_is_kept(monkeypatch):
    monkeypatch.setenv(progress.ENGINE_ENV, "unset")
    monkeypatch.delenv(progress.ENGINE_ENV)
    blob = pickle.dumps(SweepReporter(COLS))  # as tuner.pkl holds it
    assert progress.ENGINE_ENV not in os.environ
    pickle.loads(blob)  # what Tuner.restore does before fit()
    assert os.environ[progress.ENGINE_ENV] == "0"
    monkeypatch.setenv(progress.ENGINE_ENV, "1")
    progress.use_reporter_engine()
    assert os.environ[progress.ENGINE_ENV] == "1"
