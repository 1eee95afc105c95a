"""collect and report on damaged or misleading experiment directories (issue 17): a torn
result.json line, an errored trial Ray's last state still calls RUNNING, a sweep that ended,
and report outputs that cannot be written. Each case edits a copy of the recorded experiment
(tests/fixtures/experiment: 4 trials, ASHA, train.steps 8; trials 00000 and 00001 finished with
reports at 2, 4, 6, 8)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import read_only_dir

from analysis.collect import collect, trial_table
from analysis.report import build_report
from analysis.report import main as report_main
from tuneable_gan.errors import DiskFullError, UserError
from tuneable_gan.tune import driver_state

RECORDED = Path(__file__).parents[1] / "fixtures" / "experiment"
TRIAL = "trial_9c1a4_00000"
TID = "9c1a4_00000"


@pytest.fixture
def exp(tmp_path) -> Path:
    dst = tmp_path / "tiny"
    shutil.copytree(RECORDED, dst)
    return dst


def lines(exp: Path, trial: str = TRIAL) -> list[str]:
    return (exp / trial / "result.json").read_text().splitlines()


def tear_last(exp: Path, keep_step: bool, trial: str = TRIAL) -> dict:
    """Cut the trial's last result.json line short (after or before its "step"); its row."""
    rows = lines(exp, trial)
    cut = rows[-1].index('"step"') + (len('"step": 8,') if keep_step else 0)
    (exp / trial / "result.json").write_text("\n".join(rows[:-1] + [rows[-1][:cut]]))
    return json.loads(rows[-1])


def set_state(exp: Path, trial_id: str, status: str, meta: dict | None = None) -> None:
    path = next(exp.glob("experiment_state-*.json"))
    doc = json.loads(path.read_text())
    for entry in doc["trial_data"]:
        info = json.loads(entry[0])
        if info["trial_id"] == trial_id:
            entry[0] = json.dumps(info | {"status": status})
            entry[1] = json.dumps(meta or {})
    path.write_text(json.dumps(doc))


def use_fifo(exp: Path) -> None:
    spec = exp / "tuneable_gan_sweep.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["tune"]["scheduler"] = "fifo"
    spec.write_text(yaml.safe_dump(doc))


def trial(exp: Path, trial_id: str = TID, now: float | None = None):
    df = collect(exp, now=time.time() + 10_000 if now is None else now)
    return trial_table(df).set_index("trial_id").loc[trial_id], df


# -- item 9: a torn result.json line -------------------------------------------------------------


def test_a_torn_last_line_of_a_finished_fifo_trial_is_no_early_stop(exp):
    use_fifo(exp)
    tear_last(exp, keep_step=False)
    t, _ = trial(exp)
    assert t["status"] == "finished" and t["step"] == 6  # not "stopped early at step 6 of 8"
    assert "FIFO stops no trial early" in t["status_reason"]
    assert t["log_problem"].startswith("result.json line 4 is not a whole JSON row")
    (exp / TRIAL / "result.json").write_text("\n".join(lines(exp)[:-1]) + "\n")  # no torn line
    t, _ = trial(exp)
    assert t["status"] == "finished" and t["log_problem"] == t["status_reason"] == (
        "result.json ends at step 6 of 8; FIFO stops no trial early, so its last reports are "
        "missing")


def test_a_torn_line_that_names_its_step_tells_what_the_trial_reached(exp):
    tear_last(exp, keep_step=True)
    t, _ = trial(exp)
    assert t["status"] == "finished" and pd_na(t["stopped_at"])
    assert "the torn line is the report of step 8; its values are lost" in t["log_problem"]
    tear_last(exp, keep_step=False, trial="trial_9c1a4_00001")  # ASHA: it may have stopped
    t, _ = trial(exp, "9c1a4_00001")
    assert t["status"] == "stopped" and t["stopped_at"] == 6
    assert t["status_reason"] == "stopped early at step 6 or later (result.json's last line " \
                                 "is torn) of 8"


def test_the_lost_last_report_comes_back_from_rays_state(exp):
    row = tear_last(exp, keep_step=False)
    set_state(exp, TID, "TERMINATED", {"num_failures": 0, "last_result": row})
    t, df = trial(exp)
    mine = df[df["trial_id"] == TID]
    assert mine["step"].tolist() == [2, 4, 6, 8] and t["status"] == "finished"
    for k in ("fid", "fid_best", "d_loss", "is_mean", "time_total_s"):
        assert t[k] == row[k], k  # the report itself, not the one before it
    assert "the report of step 8 is missing from result.json and was taken from Ray's" \
        in t["log_problem"]


def test_a_torn_middle_line_is_reported_and_the_rest_is_read(exp):
    rows = lines(exp)
    (exp / TRIAL / "result.json").write_text("\n".join([rows[0], rows[1][:50], *rows[2:]]))
    t, df = trial(exp)
    assert df[df["trial_id"] == TID]["step"].tolist() == [2, 6, 8] and t["status"] == "finished"
    assert t["log_problem"].startswith("result.json line 2 is not a whole JSON row")
    assert trial(exp, "9c1a4_00001")[0]["log_problem"] == ""


# -- item 3: an errored trial that Ray's last state calls RUNNING --------------------------------


def fail(exp: Path, trial: str, number: int, at: str) -> None:
    (exp / trial / "error.txt").write_text(
        f"Failure # {number} (occurred at {at})\nTraceback ...\nRuntimeError: boom\n")


def test_an_error_after_the_last_report_wins_over_a_running_state(exp):
    last = json.loads(lines(exp, "trial_9c1a4_00002")[-1])  # stopped by ASHA at step 2
    later = last["date"][:-2] + "59"
    fail(exp, "trial_9c1a4_00002", 1, later)
    set_state(exp, "9c1a4_00002", "RUNNING", {"num_failures": 0})  # saved before the failure
    t, _ = trial(exp, "9c1a4_00002", now=time.time())  # while the sweep looks alive
    assert t["status"] == "errored" and t["status_reason"] == "RuntimeError: boom"
    set_state(exp, "9c1a4_00002", "RUNNING", {"num_failures": 1})  # Ray counted it: a retry
    t, _ = trial(exp, "9c1a4_00002", now=time.time())
    assert t["status"] == "running" and t["status_reason"] == "restarting after failure 1"
    fail(exp, "trial_9c1a4_00002", 1, "2000-01-01_00-00-00")  # failed, retried, reported since
    set_state(exp, "9c1a4_00002", "RUNNING", {"num_failures": 0})
    assert trial(exp, "9c1a4_00002", now=time.time())[0]["status"] == "running"


def test_the_sweeps_end_wins_over_a_running_state(exp):
    set_state(exp, "9c1a4_00002", "RUNNING")
    assert trial(exp, "9c1a4_00002", now=time.time())[0]["status"] == "running"
    (exp / driver_state.DRIVER_FILE).write_text(driver_state.render("ended"))
    t, _ = trial(exp, "9c1a4_00002", now=time.time())
    assert t["status"] == "errored" and "`tuneable-gan resume` continues it" in t["status_reason"]
    (exp / driver_state.DRIVER_FILE).write_text(driver_state.render("running"))  # resumed
    assert trial(exp, "9c1a4_00002", now=time.time())[0]["status"] == "running"


# -- the report: damaged logs said, outputs that cannot be written -------------------------------


def test_the_report_lists_damaged_logs_and_warns(exp, tmp_path, capsys):
    tear_last(exp, keep_step=True)
    assert report_main([str(exp), "--out", str(tmp_path / "rep")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tuneable-gan")]
    assert len(err) == 1 and err[0].startswith(f"tuneable-gan: warning: trial {TID}: "
                                               "result.json line 4 is not a whole JSON row")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Damaged trial logs" in md and f"| {TID} | result.json line 4" in md


def test_report_out_that_is_a_file_or_unwritable_is_one_line(exp, tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "below"):
        with pytest.raises(UserError, match=f"{afile} is a file, not a directory") as e:
            build_report(str(exp), out=str(out))
        assert "\n" not in str(e.value)
    ro = read_only_dir(tmp_path / "ro", monkeypatch)
    with pytest.raises(UserError, match=f"cannot write in {ro}"):
        build_report(str(exp), out=str(ro / "rep"))
    assert list(ro.iterdir()) == [] and afile.read_text() == "x"
    ro.chmod(0o755)


def test_a_binary_stored_sweep_is_one_line(exp):
    (exp / "tuneable_gan_sweep.yaml").write_bytes(b"\xff\xfe\x00\x81" * 50)
    with pytest.raises(UserError, match="is not text") as e:
        build_report(str(exp), out=str(exp / "rep"))
    assert "\n" not in str(e.value) and not (exp / "rep").exists()


def test_a_full_disk_is_one_line_and_keeps_what_was_there(exp, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "results.parquet").write_bytes(b"old")

    def full(prefix="", suffix="", dir=None):  # every write of the report meets a full disk
        return os.open("/dev/full", os.O_WRONLY), str(Path(dir) / f"{prefix}x{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(DiskFullError, match=f"no space left writing {out}/results.parquet"):
        build_report(str(exp), out=str(out))
    assert (out / "results.parquet").read_bytes() == b"old"


def pd_na(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))
