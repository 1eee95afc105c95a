"""A Tune trial restored from a corrupt newest checkpoint takes the older one ``num_to_keep``
kept beside it, with one warning, and continues exactly as a trial restored from that one."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import yaml
from conftest import TINY
from ray import tune

from tuneable_gan.checkpoint import STATE_FILE, write_checkpoint
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.tune import trainable
from tuneable_gan.tune.space import load_space
from tuneable_gan.tune.trainable import TrialContext, train_gan, trial_config

PARAMS = {"regularizer.weight": 10.0}


def context(tmp_path: Path) -> TrialContext:
    doc = {"name": "restore", "base": TINY,
           "space": {"regularizer.weight": {"grid": [10.0]}},
           "tune": {"search": "grid", "scheduler": "fifo", "resources": {"cpu": 1},
                    "storage": str(tmp_path / "results")}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return TrialContext.of(load_space(tmp_path / "s.yaml"))


def trial(ctx: TrialContext, ckpt: Path | None) -> list[str]:
    """The trial's reports (canonical JSON without timing and placement) when Tune hands it
    ``ckpt`` (None: a fresh start)."""
    reports: list[str] = []

    def report(metrics, checkpoint=None):
        reports.append(json.dumps({k: v for k, v in metrics.items() if k not in {
            "steps_per_s", "time_this_iter_s", "node_id", "gpu_ids"}}, sort_keys=True))

    given = None if ckpt is None else tune.Checkpoint.from_directory(str(ckpt))
    with mock.patch.object(trainable.tune, "report", report), \
            mock.patch.object(trainable.tune, "get_checkpoint", return_value=given), \
            mock.patch.object(trainable.ray, "get_gpu_ids", return_value=[]), \
            mock.patch.object(trainable.ray, "get_runtime_context"):
        train_gan(dict(PARAMS), ctx)
    return reports


def test_a_corrupt_newest_trial_checkpoint_falls_back_to_the_older_one(tmp_path, capsys):
    ctx = context(tmp_path)
    cfg = trial_config(ctx.base, ctx.search, dict(PARAMS))
    trainer = GANTrainer(cfg)
    trial_dir = tmp_path / "trial"
    for i in range(2):  # checkpoints of steps 3 and 4, as Tune keeps them
        while trainer.step < 3 + i:
            trainer.train_step()
        write_checkpoint(trial_dir / f"checkpoint_00000{i}", trainer.state_dict(), trainer.cfg)
    trainer.close()
    older, newest = trial_dir / "checkpoint_000000", trial_dir / "checkpoint_000001"
    want = trial(ctx, older)
    assert capsys.readouterr().err.count("warning") == 0
    blob = bytearray((newest / STATE_FILE).read_bytes())
    blob[len(blob) // 2:len(blob) // 2 + 64] = bytes(64)  # 64 zeroed bytes in the middle
    (newest / STATE_FILE).write_bytes(bytes(blob))
    got = trial(ctx, newest)
    err = capsys.readouterr().err
    assert got == want and len(want) >= 1
    assert err.count("warning: skipped a bad checkpoint") == 1 and str(older) in err
