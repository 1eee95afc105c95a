"""Resume trust (issue 17): resume unpickles nothing its integrity record does not vouch for,
an interrupted or killed sweep stays resumable by the user who ran it, the summary prints the
best report, and sweep/resume input errors are one line with nothing written."""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, read_only_dir, stand_in_report, stand_in_start
from ray import tune

from tuneable_gan.cli import main
from tuneable_gan.tune import integrity, launch
from tuneable_gan.tune.space import load_space

RECORDED = Path(__file__).parents[1] / "fixtures" / "experiment"
STATE = "basic-variant-state-2026-01-01_00-00-00.json"  # a searcher pickle, named as Ray does


class Plant:
    """A crafted pickle: loading it creates ``marker`` (what a planted file could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """This user's resume key directory, private to the test."""
    monkeypatch.setenv(integrity.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def sealed(tmp_path, home) -> Path:
    """The recorded experiment with the pickles Ray keeps (benign ones), sealed as a sweep
    seals it."""
    exp = tmp_path / "exp" / "tiny"
    shutil.copytree(RECORDED, exp)
    (exp / launch.TUNER_FILE).write_bytes(pickle.dumps({"benign": 1}))
    (exp / STATE).write_bytes(pickle.dumps({"counter": 4}))
    (exp / "trial_9c1a4_00000" / "params.pkl").write_bytes(pickle.dumps({"w": 0.0}))
    integrity.seal(str(exp))
    integrity.verify(str(exp))  # what the sweep wrote passes
    return exp


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one stderr line, which is returned."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tuneable-gan: error: "), err
    return err[0]


@pytest.mark.parametrize("rel", [launch.TUNER_FILE, STATE, "experiment_state-2099-01-01.json",
                                 "trial_9c1a4_00001/error.pkl", "trial_9c1a4_00000/params.pkl"])
def test_resume_refuses_a_planted_pickle_and_runs_none_of_it(sealed, tmp_path, capsys, rel):
    marker = tmp_path / "marker"
    (sealed / rel).write_bytes(pickle.dumps(Plant(marker)))
    line = one_error(capsys, ["resume", str(sealed)])
    assert f"{sealed}/{rel} is not a file this experiment's sweep wrote" in line
    assert integrity.TRUST_FLAG in line
    assert not marker.exists()


def test_resume_refuses_an_edited_spec_record_or_key(sealed, tmp_path, capsys, monkeypatch):
    spec = sealed / "tuneable_gan_sweep.yaml"
    good = spec.read_text()
    spec.write_text(good.replace("train.steps: 8", "train.steps: 9"))
    assert "tuneable_gan_sweep.yaml is not a file" in one_error(capsys, ["resume", str(sealed)])
    spec.write_text(good)
    record = sealed / integrity.RECORD_FILE
    doc = json.loads(record.read_text())
    doc["files"][launch.TUNER_FILE] = ["0" * 64]  # vouch for another tuner.pkl
    record.write_text(json.dumps(doc))
    assert "was edited" in one_error(capsys, ["resume", str(sealed)])
    record.write_bytes(os.urandom(300))
    assert "is not an integrity record" in one_error(capsys, ["resume", str(sealed)])
    record.unlink()
    line = one_error(capsys, ["resume", str(sealed)])
    assert f"has no {integrity.RECORD_FILE}" in line and integrity.TRUST_FLAG in line


def test_another_user_cannot_resume(sealed, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(integrity.HOME_ENV, str(tmp_path / "other"))
    assert "no resume key at" in one_error(capsys, ["resume", str(sealed)])
    integrity.load_key(create=True)  # the other user has a key of their own
    assert "sealed with another resume key" in one_error(capsys, ["resume", str(sealed)])
    key = integrity.key_path()
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    assert "can be read by others" in one_error(capsys, ["resume", str(sealed)])


def test_trust_flag_resumes_without_the_check_and_adopts_the_files(sealed, capsys, monkeypatch):
    (sealed / integrity.RECORD_FILE).unlink()
    reached = []

    def restore(path, **kwargs):
        reached.append(path)
        raise launch.UserError("restore reached")

    # Ray itself is not needed to see where the gate stands.
    monkeypatch.setattr(launch, "connect", lambda address=None: None)
    monkeypatch.setattr(launch, "check_resources", lambda spec: None)
    monkeypatch.setattr(launch.tune.Tuner, "restore", restore)
    assert "no tuneable_gan" in one_error(capsys, ["resume", str(sealed)]) and not reached
    assert "restore reached" in one_error(capsys, ["resume", str(sealed),
                                                   "--trust-experiment-dir"])
    assert reached == [str(sealed)]
    integrity.verify(str(sealed))  # adopted: the next resume needs no flag


def test_resume_of_a_binary_or_missing_spec_is_one_line(sealed, capsys):
    (sealed / "tuneable_gan_sweep.yaml").write_bytes(b"\xff\xfe\x00" + os.urandom(200))
    assert "is not text" in one_error(capsys, ["resume", str(sealed)])
    (sealed / "tuneable_gan_sweep.yaml").write_text("- just\n- a list\n")
    assert "is not a sweep document" in one_error(capsys, ["resume", str(sealed)])
    assert "no tuneable_gan_sweep.yaml" in one_error(capsys, ["resume", str(sealed.parent)])


def test_a_full_disk_writing_the_record_is_one_line(sealed):
    """The record is written through a temporary file; one that meets a full disk
    (/dev/full) raises DiskFullError and leaves the old record."""
    before = (sealed / integrity.RECORD_FILE).read_bytes()
    tmp = sealed / f".{integrity.RECORD_FILE}.{os.getpid()}.tmp"
    tmp.symlink_to("/dev/full")
    with pytest.raises(launch.UserError, match="no space left writing .*integrity") as e:
        integrity.seal(str(sealed))
    assert type(e.value).__name__ == "DiskFullError"
    assert (sealed / integrity.RECORD_FILE).read_bytes() == before


# -- sweep input errors: one line, nothing written -----------------------------------------------


def space_file(tmp_path: Path, name: str = "t", storage: Path | None = None) -> Path:
    doc = {"name": name, "base": TINY | {"train.steps": 8, "train.eval_every": 2},
           "space": {"regularizer.weight": {"grid": [1.0, 2.0]}},
           "tune": {"search": "grid", "scheduler": "fifo", "resources": {"cpu": 1},
                    "max_concurrent": 2, "storage": str(storage or tmp_path / "results")}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", "."])
def test_a_name_that_escapes_the_storage_is_refused(tmp_path, home, capsys, name):
    line = one_error(capsys, ["sweep", str(space_file(tmp_path)), "--name", name])
    assert f"--name {name!r}" in line and "one directory name" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing written


def test_a_space_named_dot_dot_is_refused(tmp_path, home, capsys):
    line = one_error(capsys, ["sweep", str(space_file(tmp_path, name=".."))])
    assert "name '..'" in line and not (tmp_path / "results").exists()


def test_a_storage_that_is_a_file_or_unwritable_is_refused(tmp_path, home, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for storage in (afile, afile / "below"):
        line = one_error(capsys, ["sweep", str(space_file(tmp_path)), "--storage", str(storage)])
        assert f"{afile} is a file, not a directory" in line and "--storage" in line
    ro = read_only_dir(tmp_path / "ro", monkeypatch)
    line = one_error(capsys, ["sweep", str(space_file(tmp_path)), "--storage", str(ro / "r")])
    assert f"cannot write in {ro}" in line and list(ro.iterdir()) == []
    ro.chmod(0o755)


# -- a real sweep, killed, and resumed -----------------------------------------------------------


def train_gan(config, ctx):
    """A quick stand-in trainable (named as the real one: Tuner.restore matches names): 8
    reports, fid = (step - 4)^2 + weight, a checkpoint every 2 steps, resumed from it."""
    start = stand_in_start()
    w = float(config["regularizer.weight"])
    for step in range(start + 1, 9):
        time.sleep(0.25)
        stand_in_report({"step": step, "fid": float((step - 4) ** 2) + w}, not step % 2)


class KillSnapshot(tune.Callback):
    """Once every trial is past its first checkpoint: copy the storage as a SIGKILL of the
    driver between two steps leaves it (no final state save, no end-of-sweep hook), then stop
    the sweep with Tune's own stop signal (what Ctrl-C does)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def on_step_begin(self, iteration, trials, **info):
        if self.dest.exists() or len(trials) < 2 or any(
                (t.last_result or {}).get("step", 0) < 3 for t in trials):
            return  # also on resume, which restores this callback from tuner.pkl
        trials[0].storage.syncer.wait()
        shutil.copytree(trials[0].storage.experiment_fs_path, self.dest)
        steps = sorted(t.last_result["step"] for t in trials)
        (self.dest.parent / "steps.json").write_text(json.dumps(steps))
        os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow  # 25 s measured on the 2-CPU CI machine
def test_killed_and_interrupted_sweeps_resume_for_their_user(ray_2cpu, tmp_path, home, capsys,
                                                             monkeypatch):
    spec = load_space(space_file(tmp_path))
    killed = tmp_path / "copy" / "t-killed"
    launch.run_sweep(spec, fn=train_gan, callbacks=[KillSnapshot(killed)])
    integrity.verify(launch.experiment_path(spec))  # the Ctrl-C path: sealed at the sweep's end
    steps = json.loads((killed.parent / "steps.json").read_text())
    assert len(steps) == 2 and steps[0] < 8, steps  # killed mid-sweep
    # The CLI's resume with this module's stand-in trainable instead of the real one.
    monkeypatch.setattr(launch, "resume_sweep", functools.partial(launch.resume_sweep,
                                                                  fn=train_gan))
    capsys.readouterr()
    code = main(["resume", str(killed)])  # the kill path: sealed step by step
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    for d in killed.glob("trial_*"):
        rows = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines()]
        w = rows[0]["config"]["regularizer.weight"]
        assert rows[-1]["step"] == 8
        assert {r["step"]: r["fid"] for r in rows} == {s: (s - 4) ** 2 + w for s in range(1, 9)}
    assert "best fid: 1 at step 4 (the best of the trial's reports; its last: 17 at step 8)" \
        in out, out[-2000:]
    integrity.verify(str(killed))  # the resumed run kept the record current


def test_a_full_disk_writing_the_stored_spec_is_one_line(ray_2cpu, tmp_path, home, capsys):
    spec = load_space(space_file(tmp_path))
    exp = Path(launch.experiment_path(spec))
    exp.mkdir(parents=True)
    (exp / f"tuneable_gan_sweep.yaml.{os.getpid()}.tmp").symlink_to("/dev/full")
    line = one_error(capsys, ["sweep", str(space_file(tmp_path))])
    assert f"no space left writing {exp}/tuneable_gan_sweep.yaml" in line
    assert sorted(p.name for p in exp.iterdir()) == []
