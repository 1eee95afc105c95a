"""The one-loop redesign kept behaviour bit for bit: golden runs recorded with the code before it
(tests/fixtures/golden: a dense DigGAN + DiffAugment run, a conditional LeCam run with flips, a
sparse AdvAug-gd run with ticket rounds) are reproduced exactly on CPU, through the CLI's
``metrics.jsonl`` and through the Tune sink's reports.

Three changes were made on purpose afterwards, each by an audit against the reference code,
and the comparison applies exactly those and nothing else:

* ``eval_protocol`` names how G_ema generates (``-geval`` for these eval-mode runs);
* ``reg_loss`` is the penalty of the D steps that carry it, not its mean over all D steps:
  DigGAN on the first of k D steps logs k times the old mean (exact for k = 2), and a step
  that carries none logs no ``reg_loss`` (the old rows had 0.0);
* LeCam counts iterations from 0 as lecam-gan does, so its penalty starts one G step later:
  the LeCam run is compared with the old recording up to its warm-up's end and, as a whole, with
  a recording made after the change (``lecam.v2.metrics.jsonl``).
"""

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
LECAM_START = 50  # lecam.yaml's regularizer.start


def rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def without(row: dict, keys: set[str]) -> str:
    """The row without ``keys`` and config keys, as canonical JSON (NaN equals NaN there)."""
    return json.dumps({k: v for k, v in row.items() if k not in keys and "." not in k},
                      sort_keys=True)


def as_now(row: dict, d_steps: int) -> dict:
    """An old golden row with the deliberate changes of the module docstring applied."""
    row = dict(row)
    if "eval_protocol" in row:
        row["eval_protocol"] += "-geval"
    if row.get("reg_loss") == 0.0:
        del row["reg_loss"]
    elif "reg_loss" in row:
        row["reg_loss"] *= d_steps  # the golden DigGAN runs penalise the first D step only
    return row


def golden(name: str) -> list[dict]:
    cfg = load_config(GOLDEN / f"{name}.yaml")
    first_only = cfg.regularizer.name == "diggan"
    return [as_now(r, cfg.optim.d_steps if first_only else 1)
            for r in rows(GOLDEN / f"{name}.metrics.jsonl")]


def run_cli(name: str, tmp_path: Path) -> list[dict]:
    assert main(["train", str(GOLDEN / f"{name}.yaml"), "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    return rows(tmp_path / "run" / "metrics.jsonl")


@pytest.mark.parametrize("name", ["dense", "sparse"])
def test_cli_reproduces_the_golden_metrics_jsonl(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEABLE_GAN_TICKETS", str(tmp_path / "tickets"))
    got = run_cli(name, tmp_path)
    assert [without(r, TIMING) for r in got] == [without(r, TIMING) for r in golden(name)]


def test_cli_reproduces_the_lecam_run_before_and_after_its_warm_up(tmp_path):
    got = run_cli("lecam", tmp_path)
    old = golden("lecam")
    early = [i for i, r in enumerate(old) if r["step"] <= LECAM_START]
    assert early and [without(got[i], TIMING) for i in early] == [
        without(old[i], TIMING) for i in early]
    assert without(got[-1], TIMING) != without(old[-1], TIMING)  # the shift is real
    v2 = rows(GOLDEN / "lecam.v2.metrics.jsonl")
    assert [without(r, TIMING) for r in got] == [without(r, TIMING) for r in v2]


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
    cfg = load_config(GOLDEN / f"{name}.yaml")
    want = [as_now(r, cfg.optim.d_steps) for r in rows(GOLDEN / f"{name}.tune.jsonl")]
    skip = TIMING | NOT_TRAINING
    assert [without(r, skip) for r in reports] == [without(r, skip) for r in want]
    # The config a report carries is the resolved one: the lambda the trial used.
    assert all(r["regularizer.weight"] == trainer.cfg.regularizer.weight for r in reports)
