"""``analysis.checkpoints``: the report's samples and best config come from the best kept
checkpoint by the metric, found through the reports that carried one."""

from __future__ import annotations

import math

import pandas as pd

from analysis.checkpoints import best_checkpoint, kept, last_checkpoint


def experiment(tmp_path, names: list[str]):
    trial = tmp_path / "exp" / "trial_a"
    trial.mkdir(parents=True)
    for n in names:
        (trial / n).mkdir(parents=True)
    (trial / "result.json").write_text("")  # a file, not a checkpoint
    return str(tmp_path / "exp")


def reports(rows: list[tuple[int, float, str | None]]) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": "a", "trial_dir": "trial_a", "step": s, "fid": f,
                          "is_mean": -f, "checkpoint_dir_name": c} for s, f, c in rows])


def test_the_best_kept_checkpoint_by_the_metric_is_chosen(tmp_path):
    # Ray kept 000001 (the best) and 000003 (the newest); 000000 and 000002 were deleted.
    exp = experiment(tmp_path, ["checkpoint_000001", "checkpoint_000003"])
    rows = reports([(100, 50.0, "checkpoint_000000"), (200, 30.0, "checkpoint_000001"),
                    (300, 35.0, None), (400, 20.0, "checkpoint_000002"),
                    (500, 40.0, "checkpoint_000003")])
    found = best_checkpoint(exp, rows, "fid")
    assert found.best and found.step == 200 and found.path.endswith("trial_a/checkpoint_000001")
    # A metric where higher is better: is_mean = -fid, so the best kept is still 000001.
    assert best_checkpoint(exp, rows, "is_mean").step == 200
    assert last_checkpoint(exp, "trial_a")[1].endswith("checkpoint_000003")
    assert [p.rsplit("/", 1)[-1] for p in kept(exp, "trial_a")[1]] == [
        "checkpoint_000001", "checkpoint_000003"]


def test_ties_take_the_first_and_no_finite_metric_falls_back_to_the_newest(tmp_path):
    exp = experiment(tmp_path, ["checkpoint_000000", "checkpoint_000001"])
    rows = reports([(100, 30.0, "checkpoint_000000"), (200, 30.0, "checkpoint_000001")])
    assert best_checkpoint(exp, rows, "fid").step == 100
    rows["fid"] = [math.nan, math.inf]  # e.g. a ticket stage: no sweep metric yet
    found = best_checkpoint(exp, rows, "fid")
    assert not found.best and found.step == 200 and found.path.endswith("checkpoint_000001")


def test_no_checkpoint_kept_gives_none(tmp_path):
    exp = experiment(tmp_path, [])
    assert best_checkpoint(exp, reports([(100, 30.0, "checkpoint_000000")]), "fid") is None
    assert last_checkpoint(exp, "trial_a") is None
    assert last_checkpoint(str(tmp_path / "nowhere"), "trial_a") is None
