"""Ray Tune integration on a 2-CPU local Ray: ASHA, retries from checkpoints, resume, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, assert_resumed_rows

from tuneable_gan.cli import main
from tuneable_gan.tune import trainable as trainable_mod
from tuneable_gan.tune.launch import run_sweep
from tuneable_gan.tune.result_log import RESULT_LOG
from tuneable_gan.tune.space import load_space

BASE = TINY | {"train.steps": 8, "train.eval_every": 2, "train.checkpoint_every": 4,
               "eval.num_samples": 64, "eval.batch_size": 64}


def write_space(path: Path, space: dict, tune: dict, base: dict | None = None) -> Path:
    doc = {"name": "t", "base": base or BASE, "space": space,
           "tune": {"storage": str(path.parent / "results"), "resources": {"cpu": 1}} | tune}
    path.write_text(yaml.safe_dump(doc))
    return path


def rows(trial_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines()]




@pytest.mark.slow  # 25 s measured on the 2-CPU CI machine
def test_asha_stops_some_trials_and_every_trial_has_results(ray_2cpu, tmp_path):
    spec = load_space(write_space(
        tmp_path / "s.yaml", {"regularizer.weight": {"grid": [0.0, 1.0, 10.0, 100.0]}},
        {"search": "grid", "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}}}))
    results = run_sweep(spec)
    assert len(results) == 4 and results.num_errors == 0
    iters = sorted(r.metrics["training_iteration"] for r in results)
    assert iters[0] < 4 and iters[-1] == 4, iters  # some stopped early, one ran its 4 reports
    for r in results:
        df = r.metrics_dataframe
        assert {"fid", "dig", "d_loss", "eval_protocol", "regularizer.weight"} <= set(df.columns)
        assert df["step"].tolist() == [2 * (i + 1) for i in range(len(df))]
        assert not df["diverged"].any()
        assert r.metrics["device"] == "cpu" and r.metrics["gpu_ids"] == ""


def flaky_train_gan(config, ctx):
    """train_gan whose first attempt dies at its 3rd report (after the step-4 checkpoint)."""
    marker = Path(ctx.tickets).parent / f"failed-{config['regularizer.weight']}"
    if not marker.exists():
        real_report, calls = trainable_mod.tune.report, []

        def report(metrics, checkpoint=None):
            calls.append(1)
            if len(calls) == 3:
                marker.write_text("x")
                raise RuntimeError("injected failure")
            real_report(metrics, checkpoint=checkpoint)

        trainable_mod.tune.report = report
        try:
            trainable_mod.train_gan(config, ctx)
        finally:
            trainable_mod.tune.report = real_report
        return
    trainable_mod.train_gan(config, ctx)


flaky_train_gan.__name__ = "train_gan"  # Tuner.restore matches trainables by name


@pytest.mark.slow  # 25 s measured on the 2-CPU CI machine
def test_failed_trial_is_retried_from_its_checkpoint_with_no_step_lost(ray_2cpu, tmp_path):
    spec = load_space(write_space(
        tmp_path / "s.yaml", {"regularizer.weight": {"grid": [1.0, 2.0]}},
        {"search": "grid", "scheduler": "fifo", "max_failures": 1}))
    results = run_sweep(spec, fn=flaky_train_gan)
    assert results.num_errors == 0
    for r in results:
        # The driver's log: Ray's result.json may lose the rows since its last sync when the
        # trial restarts (tuneable_gan.tune.result_log).
        steps = [json.loads(ln)["step"] for ln in
                 (Path(r.path) / RESULT_LOG).read_text().splitlines()]
        # Reports at 2, 4 (checkpoint), failure at 6, retry from step 4: 6, 8. Nothing lost or
        # repeated beyond the checkpoint interval, and the run ends at exactly train.steps.
        assert steps == [2, 4, 6, 8], steps
        assert r.metrics["step"] == 8 and r.checkpoint is not None


def test_bad_space_exits_2_with_one_line(tmp_path, capsys):
    p = write_space(tmp_path / "s.yaml", {"regularizer.wieght": {"grid": [1.0]}}, {})
    assert main(["sweep", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'regularizer.weight'" in err[0]


def test_resources_no_node_can_satisfy_are_refused(ray_2cpu, tmp_path, capsys):
    p = write_space(tmp_path / "s.yaml", {"regularizer.weight": {"grid": [1.0]}},
                    {"search": "grid", "resources": {"cpu": 1, "gpu": 1}})
    assert main(["sweep", str(p)]) == 2
    err = capsys.readouterr().err
    assert "largest node has 2 CPUs and 0 GPUs" in err


@pytest.mark.slow
def test_interrupted_sweep_resumes_only_unfinished_trials(tmp_path):
    """Ctrl-C of the driver mid-sweep, then `tuneable-gan resume`: finished trials keep their
    results, interrupted ones continue from their checkpoints, and every trial ends at its
    last step."""
    # 60 steps, interrupted once two trials are past their first checkpoint (step 8): the
    # driver's Ctrl-C can take seconds while trials keep training, and CI once saw every started
    # trial reach 40 steps before it stopped.
    last = 60
    base = BASE | {"train.steps": last, "train.eval_every": 4, "train.checkpoint_every": 4}
    p = write_space(tmp_path / "s.yaml", {"regularizer.weight": {"grid": [1.0, 2.0, 3.0, 4.0]}},
                    {"search": "grid", "scheduler": "fifo", "max_concurrent": 2}, base=base)
    env = os.environ | {"TUNEABLE_GAN_CACHE": str(tmp_path / "cache"),
                        "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    proc = subprocess.Popen([sys.executable, "-m", "tuneable_gan.cli", "sweep", str(p)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    exp = tmp_path / "results" / "t"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until the first two trials are past a checkpoint
        done = [d for d in exp.glob("trial_*") if (d / "result.json").exists()
                and len(rows(d)) >= 2]
        if len(done) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    before = {d.name: rows(d) for d in exp.glob("trial_*") if (d / "result.json").exists()}
    r = subprocess.run([sys.executable, "-m", "tuneable_gan.cli", "resume", str(exp)], env=env,
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    after = {d.name: rows(d) for d in exp.glob("trial_*")}
    assert len(after) == 4
    for name, rs in after.items():
        prior = before.get(name)
        if prior and prior[-1]["step"] == last:
            assert rs == prior  # finished before the interrupt: not rerun
        else:  # continued from its checkpoint (every report carries one), not from scratch
            assert rs[:len(prior or [])] == (prior or [])
            assert_resumed_rows(rs, 4, last)
    # something was interrupted
    assert any(p and p[-1]["step"] < last for p in before.values()), {
        k: [x["step"] for x in v] for k, v in before.items()}
