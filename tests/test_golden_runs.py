"""The one-loop redesign kept behaviour bit for bit: golden runs recorded with the code before it
(tests/fixtures/golden: a dense DigGAN + DiffAugment run, a conditional LeCam run with flips, a
sparse AdvAug-gd run with ticket rounds) are reproduced exactly on CPU, through the CLI's
``metrics.jsonl`` and through the Tune sink's reports."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest

from tuneable_gan.cli import main
from tuneable_gan.config import load_config

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
# Wall-clock rates differ run to run; everything else must not.
TIMING = {"steps_per_s"}
# Reports also carry the trial's config and where it ran; the golden Tune rows predate the
# resolved config (``regularizer.weight`` was null there, with a separate ``reg_weight``).
NOT_TRAINING = {"device", "gpu_ids", "node_id", "reg_weight"}


def rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def without(row: dict, keys: set[str]) -> str:
    """The row without ``keys`` and config keys, as canonical JSON (NaN equals NaN there)."""
    return json.dumps({k: v for k, v in row.items() if k not in keys and "." not in k},
                      sort_keys=True)


@pytest.mark.parametrize("name", ["dense", "lecam", "sparse"])
def test_cli_reproduces_the_golden_metrics_jsonl(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEABLE_GAN_TICKETS", str(tmp_path / "tickets"))
    assert main(["train", str(GOLDEN / f"{name}.yaml"), "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    got, want = rows(tmp_path / "run" / "metrics.jsonl"), rows(GOLDEN / f"{name}.metrics.jsonl")
    assert [without(r, TIMING) for r in got] == [without(r, TIMING) for r in want]


@pytest.mark.parametrize("name", ["dense", "sparse"])
def test_tune_sink_reproduces_the_golden_reports(name, tmp_path):
    import tuneable_gan.tune.trainable as tr
    from tuneable_gan.trainer import GANTrainer

    reports: list[dict] = []

    def report(metrics, checkpoint=None):
        reports.append(dict(metrics) | {"_ckpt": checkpoint is not None})

    cfg = load_config(GOLDEN / f"{name}.yaml")
    trainer = GANTrainer(cfg, tickets=tmp_path / "tickets")
    with mock.patch.object(tr.tune, "report", report), \
            mock.patch.object(tr.ray, "get_gpu_ids", lambda: []), \
            mock.patch.object(tr.ray, "get_runtime_context") as ctx:
        ctx.return_value.get_node_id.return_value = "node"
        tr.loop.run(trainer, [tr.TuneSink(trainer, "fid", "min")])
    trainer.close()
    want = rows(GOLDEN / f"{name}.tune.jsonl")
    skip = TIMING | NOT_TRAINING
    assert [without(r, skip) for r in reports] == [without(r, skip) for r in want]
    # The config a report carries is the resolved one: the lambda the trial used.
    assert all(r["regularizer.weight"] == trainer.cfg.regularizer.weight for r in reports)
