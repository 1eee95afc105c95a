"""Reliability of one command-line run (issue 17): Ctrl-C and SIGKILL at any point, then
--resume, equal the straight run bitwise; a torn metrics.jsonl; a full disk at every writer;
--out that cannot be written; a bad newest checkpoint falls back to the previous one."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY

from tuneable_gan import checkpoint, run_dir
from tuneable_gan.checkpoint import read_checkpoint
from tuneable_gan.cli import main
from tuneable_gan.config import from_dict
from tuneable_gan.digits_cnn import DigitsCNN, ensure_digits_classifier
from tuneable_gan.errors import DiskFullError
from tuneable_gan.tickets import TicketStore
from tuneable_gan.trainer import GANTrainer

# TINY (6 steps, eval and checkpoint every 3, a row every step) with a cheap evaluation.
RUN = TINY | {"eval.num_samples": 256}
FINAL = "checkpoints/step_0000006/state.pt"


def flat(obj, prefix=""):
    """Every leaf of a nested state dict, by path."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in flat(val, f"{prefix}/{i}").items()}
    return {prefix: obj}


def rows(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock column."""
    return [{k: v for k, v in json.loads(ln).items() if k != "steps_per_s"}
            for ln in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(out: Path, ref: Path) -> None:
    """Same rows and, bitwise, the same final state (every tensor and value)."""
    assert rows(out) == rows(ref)
    a = flat(torch.load(out / FINAL, weights_only=True))
    b = flat(torch.load(ref / FINAL, weights_only=True))
    assert a.keys() == b.keys()
    for k in a:
        same = torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
        assert same, k


def err_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("tuneable-gan: error:")]


def warn_lines(err: str) -> list[str]:
    """The run's warnings about its files, not the G EMA warning every tiny run gets (the
    tiny config's 0.9 EMA over 6 steps; tests/test_ema_warning.py tests that one)."""
    return [ln for ln in err.splitlines() if ln.startswith("tuneable-gan: warning:")
            and not ln.startswith("tuneable-gan: warning: optim.g_ema")]


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "run.yaml"
    p.write_text(from_dict(RUN).to_yaml())
    return p


@pytest.fixture(scope="module")
def straight(cfg_file, tmp_path_factory) -> Path:
    """The run straight through, once per module: what every drill must reproduce."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("straight") / "run"
    assert run_dir.train(str(cfg_file), [], out, quiet=True) == 0
    return out


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# -- Ctrl-C ------------------------------------------------------------------------------------

def _sigint_when(monkeypatch, owner, name: str, when) -> None:
    """Patch ``owner.name`` to deliver a real SIGINT the first time ``when(*args)`` holds,
    then run the original (the signal lands inside that call)."""
    original = getattr(owner, name)
    fired = []

    def hook(*args, **kwargs):
        if not fired and when(*args, **kwargs):
            fired.append(True)
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, hook)


# (where the signal lands, the step the run must stop at: the step in flight, finished)
INTERRUPTS = {
    "d_step": (GANTrainer, "d_step", lambda t, k: t.phase.step == 3 and k == 1, 4),
    "g_step": (GANTrainer, "g_step", lambda t: t.phase.step == 4, 5),
    "evaluate": (GANTrainer, "evaluate", lambda t: t.step == 3, 3),
    "checkpoint_save": (checkpoint, "_write_synced",
                        lambda path, data: path.name == "state.pt"
                        and path.parent.name.startswith(".step_0000003"), 3),
}


@pytest.mark.parametrize("point", list(INTERRUPTS))
def test_ctrl_c_anywhere_then_resume_equals_the_straight_run(point, cfg_file, straight,
                                                              tmp_path, monkeypatch, capsys):
    owner, name, when, stop_at = INTERRUPTS[point]
    out = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        _sigint_when(m, owner, name, when)
        code = run_dir.train(str(cfg_file), [], out, quiet=True)
    err = capsys.readouterr().err
    assert code == run_dir.EXIT_INTERRUPTED, err
    assert f"interrupted at step {stop_at}; checkpoint saved" in err
    assert (out / "checkpoints/LATEST").read_text().strip() == f"step_{stop_at:07d}"
    assert [r["step"] for r in rows(out)] == list(range(1, stop_at + 1))
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handler is back
    assert run_dir.train(str(cfg_file), [], out, resume=True, quiet=True) == 0
    assert_same_run(out, straight)


def test_second_ctrl_c_quits_without_saving(cfg_file, tmp_path, monkeypatch, capsys):
    # Both signals inside step 5's G step: the second one is Python's KeyboardInterrupt again.
    def twice(t):
        if t.phase.step == 4:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return False

    _sigint_when(monkeypatch, GANTrainer, "g_step", twice)
    out = tmp_path / "run"
    assert run_dir.train(str(cfg_file), [], out, quiet=True) == run_dir.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "quit without saving" in err and "Traceback" not in err
    assert (out / "checkpoints/LATEST").read_text().strip() == "step_0000003"
    assert not (out / "checkpoints/step_0000005").exists()


SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)  # the in-process reference run uses one thread too
from tuneable_gan.cli import main
from tuneable_gan.trainer import GANTrainer
step = GANTrainer.train_step
def slow(self):
    out = step(self)
    time.sleep(0.25)  # room for the signal to land anywhere; the numbers do not change
    return out
GANTrainer.train_step = slow
sys.exit(main(sys.argv[1:]))
"""


def _start(cfg_file: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, "train", str(cfg_file), "--out",
                             str(out), "--quiet"], stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)


def test_real_sigint_and_sigkill_then_resume_equal_the_straight_run(cfg_file, straight,
                                                                     tmp_path, capsys):
    """A real os.kill(SIGINT) after step 4's row, and a SIGKILL at a random moment after the
    first checkpoint (its delay printed on failure): both resume to the straight run."""
    a, b = tmp_path / "sigint", tmp_path / "sigkill"
    pa, pb = _start(cfg_file, a), _start(cfg_file, b)
    _wait_for(pa, lambda: (a / "metrics.jsonl").is_file()
              and len((a / "metrics.jsonl").read_text().splitlines()) >= 4)
    os.kill(pa.pid, signal.SIGINT)
    _wait_for(pb, lambda: (b / "checkpoints/LATEST").is_file())
    delay = random.uniform(0.0, 0.8)
    print(f"SIGKILL {delay:.3f} s after the first checkpoint")  # shown if the test fails
    time.sleep(delay)
    os.kill(pb.pid, signal.SIGKILL)
    err = pa.communicate(timeout=60)[1]
    pb.communicate(timeout=60)
    assert pa.returncode == 130 and "checkpoint saved" in err and "Traceback" not in err, err
    assert pb.returncode == -signal.SIGKILL
    for out in (a, b):
        assert run_dir.train(str(cfg_file), [], out, resume=True, quiet=True) == 0
        assert_same_run(out, straight)


# -- metrics.jsonl ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def half(cfg_file, tmp_path_factory) -> Path:
    """The first 3 steps of the run, its checkpoint at 3 (copied by each test that uses it)."""
    out = tmp_path_factory.mktemp("half") / "run"
    assert run_dir.train(str(cfg_file), ["train.steps=3"], out, quiet=True) == 0
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    shutil.copytree(src, tmp_path / "run")
    return tmp_path / "run"


def test_torn_last_log_line_is_dropped_with_one_warning(half, cfg_file, straight, tmp_path,
                                                        capsys):
    out = _copy(half, tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "d_loss": 1.2')  # a kill in the middle of the append
    code, err = cli(capsys, "train", str(cfg_file), "--out", str(out), "--quiet", "--resume")
    assert code == 0, err
    assert len(warn_lines(err)) == 1 and "line 4 was cut off mid-write" in err
    assert_same_run(out, straight)


def test_bad_middle_log_line_is_one_error_and_nothing_written(half, cfg_file, tmp_path, capsys):
    out = _copy(half, tmp_path)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([lines[0], '{"step": 2, "d_', *lines[1:]]) + "\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = cli(capsys, "train", str(cfg_file), "--out", str(out), "--quiet", "--resume")
    assert code == 2 and len(err_lines(err)) == 1 and "Traceback" not in err
    assert f"{out / 'metrics.jsonl'} line 2 is not a JSON row" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# -- a bad newest checkpoint --------------------------------------------------------------------

def test_corrupt_newest_checkpoint_falls_back_to_the_previous(cfg_file, straight, tmp_path,
                                                              capsys):
    out = tmp_path / "run"
    assert run_dir.train(str(cfg_file), ["train.checkpoint_every=2"], out, quiet=True) == 0
    state = out / "checkpoints/step_0000006/state.pt"
    data = bytearray(state.read_bytes())
    for i in random.Random(0).sample(range(len(data) // 4, len(data)), 64):
        data[i] ^= 0xFF
    state.write_bytes(bytes(data))
    code, err = cli(capsys, "train", str(cfg_file), "--out", str(out), "--quiet", "--resume",
                    "--set", "train.checkpoint_every=2")
    assert code == 0, err
    (line,) = warn_lines(err)
    assert f"corrupt checkpoint {state}: checksum mismatch" in line
    assert line.endswith(f"resuming from {out / 'checkpoints/step_0000004'}")
    assert_same_run(out, straight)  # resumed from step 4: as if never stopped


# -- full disk ----------------------------------------------------------------------------------

def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _assert_disk_full(code: int, err: str, path: Path, out: Path,
                      extra: tuple[str, ...] = ()) -> None:
    """One line naming the path and the size, exit 2; the checkpoint of step 3 and LATEST
    intact, and no temporary left in checkpoints/ (only the ``extra`` complete entries)."""
    (line,) = err_lines(err)
    assert code == 2 and "Traceback" not in err
    assert f"no space left writing {path} (needs about " in line, line
    assert (out / "checkpoints/LATEST").read_text().strip() == "step_0000003"
    assert read_checkpoint(out / "checkpoints/step_0000003")[0]["step"] == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(
        ["LATEST", "best", "step_0000003", *extra])


def test_full_disk_at_a_checkpoint_or_latest_is_one_line(half, cfg_file, tmp_path,
                                                         monkeypatch, capsys):
    out = _copy(half, tmp_path)
    write = checkpoint._write_synced
    monkeypatch.setattr(checkpoint, "_write_synced", lambda p, d: (
        _enospc() if p.parent.name.startswith(".step_0000006") else write(p, d)))
    argv = ["train", str(cfg_file), "--out", str(out), "--quiet", "--resume"]
    code, err = cli(capsys, *argv)
    _assert_disk_full(code, err, out / "checkpoints/step_0000006/state.pt", out)
    assert len(rows(out)) == 6  # the rows went in before the checkpoint failed
    monkeypatch.setattr(checkpoint, "_write_synced", write)
    text = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda p, *a, **k: (
        _enospc() if p.name == ".LATEST.tmp" else text(p, *a, **k)))
    code, err = cli(capsys, *argv)
    # step 6 is complete (LATEST is written after it), but LATEST still names step 3.
    _assert_disk_full(code, err, out / "checkpoints/LATEST", out, extra=("step_0000006",))


def test_full_disk_at_metrics_leaves_no_torn_line(half, cfg_file, straight, tmp_path,
                                                   monkeypatch, capsys):
    out = _copy(half, tmp_path)
    real, calls = os.write, []

    def write(fd, data):  # the append of step 5's row writes half of it, then the disk is full
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl") or not (
                calls or b'"step": 5,' in bytes(data)):
            return real(fd, data)
        calls.append(len(data))
        return real(fd, bytes(data)[:len(data) // 2]) if len(calls) == 1 else _enospc()

    monkeypatch.setattr(run_dir.os, "write", write)
    argv = ["train", str(cfg_file), "--out", str(out), "--quiet", "--resume"]
    code, err = cli(capsys, *argv)
    assert code == 2 and len(err_lines(err)) == 1 and len(calls) == 2, err
    assert f"no space left writing {out / 'metrics.jsonl'} (needs about" in err
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4]  # complete rows only
    monkeypatch.setattr(run_dir.os, "write", real)
    code, err = cli(capsys, *argv)
    assert code == 0 and not warn_lines(err), err
    assert_same_run(out, straight)


def test_full_disk_at_tickets_and_the_extractor_cache_is_one_line(tmp_path, monkeypatch):
    store = TicketStore(tmp_path / "tickets")
    payload = {"masks": {"w": torch.ones(3, dtype=torch.bool)}, "init_G": {"w": torch.ones(3)}}
    monkeypatch.setattr("tuneable_gan.tickets.os.fsync", _enospc)
    with pytest.raises(DiskFullError) as e:
        store.save("dcgan-0123", 1, payload)
    assert f"no space left writing {tmp_path / 'tickets/dcgan-0123/init.pt'} (needs about" \
        in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in (tmp_path / "tickets/dcgan-0123").iterdir()) == []
    monkeypatch.undo()

    monkeypatch.setattr("tuneable_gan.digits_cnn.train_digits_classifier",
                        lambda: (DigitsCNN(), 0.5))  # the write is what is tested
    monkeypatch.setattr("tuneable_gan.disk.os.fdopen", _enospc)  # the cache write
    with pytest.raises(DiskFullError) as e:
        ensure_digits_classifier(tmp_path / "cache")
    assert f"no space left writing {tmp_path / 'cache/extractors'}" in str(e.value)
    assert "(needs about" in str(e.value)
    assert [p.suffix for p in (tmp_path / "cache/extractors").iterdir()] == [".lock"]


@pytest.fixture
def mount(tmp_path):
    """Mount a tmpfs (root only) and unmount it after; skips where mounting is not allowed."""
    mounted = []

    def make(options: str) -> Path:
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)],
                           capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def test_real_full_disk_is_one_line_and_resumes_after_space_is_freed(half, cfg_file, straight,
                                                                     mount, capsys):
    disk = mount("size=2m")
    out = _copy(half, disk)
    ckpt = sum(f.stat().st_size for f in (out / "checkpoints/step_0000003").iterdir())
    # Room for about half a checkpoint: steps 4 to 6 run, step 6's checkpoint cannot fit.
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * (free - ckpt // 2))
    argv = ["train", str(cfg_file), "--out", str(out), "--quiet", "--resume"]
    code, err = cli(capsys, *argv)
    # A new best at step 6 is written first (the eval), else the step's checkpoint fails.
    first = "best" if rows(straight)[-1]["best_step"] == 6 else "step_0000006"
    _assert_disk_full(code, err, out / f"checkpoints/{first}/state.pt", out)
    (disk / "filler").unlink()
    code, err = cli(capsys, *argv)
    assert code == 0, err
    assert_same_run(out, straight)


# -- --out --------------------------------------------------------------------------------------

def test_out_that_is_a_file_or_unwritable_is_one_line(cfg_file, tmp_path, mount, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    for out, needle in [(f, f"--out {f} is a file, not a directory"),
                        (f / "run", f"--out {f / 'run'}: {f} is a file, not a directory")]:
        for resume in ([], ["--resume"]):
            code, err = cli(capsys, "train", str(cfg_file), "--out", str(out), "--quiet",
                            *resume)
            assert code == 2 and err_lines(err) == [f"tuneable-gan: error: {needle}; choose "
                                                    "another --out"], err
    assert f.read_text() == "x"
    if os.geteuid() == 0:
        ro = mount("ro,size=64k")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    code, err = cli(capsys, "train", str(cfg_file), "--out", str(ro / "run"), "--quiet")
    assert code == 2 and err_lines(err) == [
        f"tuneable-gan: error: --out {ro / 'run'}: {ro} is not writable; choose another --out"]
    assert not (ro / "run").exists()
