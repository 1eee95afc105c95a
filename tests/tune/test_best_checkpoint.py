"""Best checkpoints: a report that improves the trial's best metric carries a checkpoint, Tune
keeps the best by the metric as well as the newest (``num_to_keep: 1``), and the report's best
config and samples come from the best one, saying its step. The same sweep checks that each
evaluation's sample grid is an image in the trial's TensorBoard log."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from analysis.checkpoints import best_checkpoint, kept
from analysis.collect import collect
from analysis.report import build_report
from tuneable_gan.checkpoint import read_checkpoint
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.tune import trainable as trainable_mod
from tuneable_gan.tune.launch import run_sweep
from tuneable_gan.tune.space import load_space

# Scripted FIDs for the 4 evaluations (steps 2, 4, 6, 8): the best is at step 4; checkpoints
# fall due at steps 8 (checkpoint_every) and the last; improvements add steps 2 and 4.
FIDS = [50.0, 30.0, 40.0, 60.0]
BASE = TINY | {"train.steps": 8, "train.eval_every": 2, "train.checkpoint_every": 8,
               "eval.num_samples": 64, "eval.batch_size": 64}


def scripted_train_gan(config, ctx):
    """train_gan whose evaluations report ``FIDS`` in turn."""
    real, fids = GANTrainer.evaluate, iter(FIDS)

    def evaluate(self):
        return real(self) | {"fid": next(fids)}

    GANTrainer.evaluate = evaluate
    try:
        trainable_mod.train_gan(config, ctx)
    finally:
        GANTrainer.evaluate = real


scripted_train_gan.__name__ = "train_gan"


def image_events(trial_dir: Path) -> list[tuple[str, int, tuple[int, int]]]:
    """(tag, step, PNG (width, height)) of every image summary in the trial's event files,
    read from the TFRecord framing (length, crc, event, crc) with tensorboardX's protos."""
    from PIL import Image
    from tensorboardX.proto import event_pb2

    out = []
    for f in sorted(trial_dir.glob("events.out.tfevents.*")):
        data, i = f.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("image"):
                    png = Image.open(io.BytesIO(v.image.encoded_image_string))
                    out.append((v.tag, event.step, png.size))
    return out


@pytest.mark.slow
def test_the_best_checkpoint_survives_num_to_keep_and_feeds_the_report(ray_2cpu, tmp_path):
    doc = {"name": "best", "base": BASE, "space": {},
           "tune": {"storage": str(tmp_path / "results"), "resources": {"cpu": 1},
                    "num_to_keep": 1, "search": "grid"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    results = run_sweep(load_space(tmp_path / "s.yaml"), fn=scripted_train_gan)
    assert results.num_errors == 0
    exp = str(tmp_path / "results" / "best")
    df = collect(exp)
    assert df["fid"].tolist() == FIDS
    # Reports at steps 2 and 4 improved (checkpoints), 6 did not, 8 is the last.
    carried = df.loc[df["checkpoint_dir_name"].notna(), "step"].tolist()
    assert carried == [2, 4, 8]
    (trial_dir,) = df["trial_dir"].unique()
    _, paths = kept(exp, trial_dir)
    steps = [read_checkpoint(p, map_location="cpu")[0]["step"] for p in paths]
    assert steps == [4, 8]  # the best by fid (num_to_keep: 1) and the newest
    found = best_checkpoint(exp, df, "fid")
    assert found.best and found.step == 4
    md = (build_report(exp, out=str(tmp_path / "rep")).parent / "report.md").read_text()
    assert f"best_config.yaml is from its best checkpoint by fid ({Path(found.path).name}, " \
           "step 4)" in md
    # 64 samples of 8x8 in an 8 x 8 grid with 1 px gaps: 73 x 73 px, at each evaluation.
    assert image_events(Path(exp) / trial_dir) == [("samples", s, (73, 73)) for s in (2, 4, 6, 8)]
