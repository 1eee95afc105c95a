"""Checkpoint integrity (issue 17): checksums beside every checkpoint, verified on load;
checkpoints of another run refused; a state with a missing key or a tensor of the wrong shape,
or a binary LATEST, is one line; old checkpoints without a checksum still load."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import TINY, tiny_config

from tuneable_gan import run_dir
from tuneable_gan.checkpoint import CHECKSUM_FILE, read_checkpoint, write_checkpoint
from tuneable_gan.cli import main
from tuneable_gan.config import from_dict
from tuneable_gan.errors import CheckpointError
from tuneable_gan.trainer import GANTrainer


def flip(path: Path, n: int = 64, seed: int = 0) -> None:
    """Invert ``n`` bytes of ``path`` at seeded offsets past its first quarter (the tensors)."""
    data = bytearray(path.read_bytes())
    for i in random.Random(seed).sample(range(len(data) // 4, len(data)), n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def trained() -> GANTrainer:
    t = GANTrainer(tiny_config())
    t.train_step()
    return t


def test_checksum_file_holds_the_sha256_of_both_files(trained, tmp_path):
    d = write_checkpoint(tmp_path / "ck", trained.state_dict(), trained.cfg)
    sums = json.loads((d / CHECKSUM_FILE).read_text())
    assert sums == {"algorithm": "sha256",
                    **{n: hashlib.sha256((d / n).read_bytes()).hexdigest()
                       for n in ("state.pt", "config.yaml")}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary left


@pytest.mark.parametrize("name", ["state.pt", "config.yaml"])
def test_flipped_bytes_are_refused_naming_the_file(trained, tmp_path, name):
    d = write_checkpoint(tmp_path / "ck", trained.state_dict(), trained.cfg)
    flip(d / name, n=64 if name == "state.pt" else 4)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(d)
    (line,) = e.value.problems
    assert line.startswith(f"corrupt checkpoint {d / name}: checksum mismatch (sha256 "), line


def test_old_checkpoint_without_checksum_loads_silently(trained, tmp_path, capsys):
    d = write_checkpoint(tmp_path / "ck", trained.state_dict(), trained.cfg)
    (d / CHECKSUM_FILE).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state, cfg = read_checkpoint(d, expect=trained.cfg)
    assert cfg == trained.cfg and state["step"] == 1
    mine = trained.state_dict()["G"]
    assert state["G"].keys() == mine.keys()
    assert all(torch.equal(v, mine[k]) for k, v in state["G"].items())
    assert capsys.readouterr().err == ""


def test_checkpoint_of_another_run_is_refused(trained, tmp_path):
    d = write_checkpoint(tmp_path / "ck", trained.state_dict(), trained.cfg)
    other = trained.cfg.replace(**{"regularizer.weight": 5.0, "optim.d_lr": 0.1})
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(d, expect=other)
    assert e.value.problems == [f"checkpoint {d} is of another run: optim.d_lr, "
                                "regularizer.weight differ from this run's config"]
    longer = trained.cfg.replace(**{"train.steps": 60, "train.eval_every": 7})
    assert read_checkpoint(d, expect=longer)[0]["step"] == 1  # a resume may change these


def _first_conv(state: dict) -> str:
    return next(k for k, v in state["G"].items() if v.dim() == 4)


def test_state_with_a_missing_key_or_a_wrong_shape_is_one_line(trained):
    fresh = GANTrainer(tiny_config())
    before = {k: v.clone() for k, v in fresh.G.state_dict().items()}
    good = trained.state_dict()
    key = _first_conv(good)
    w = good["G"][key]
    cases = [
        ({**good, "G": {**good["G"], key: torch.zeros(w.shape[0] + 1, *w.shape[1:])}},
         f"G/{key}: expected shape ({', '.join(map(str, w.shape))}), found "
         f"({', '.join(map(str, (w.shape[0] + 1, *w.shape[1:])))})"),
        ({**good, "D": {k: v for k, v in good["D"].items() if k != next(iter(good["D"]))}},
         f"missing key D/{next(iter(good['D']))}"),
        ({k: v for k, v in good.items() if k != "sampler"}, "missing key sampler"),
    ]
    opt = good["opt_g"]
    idx = next(iter(opt["state"]))
    moved = {**opt["state"][idx], "exp_avg": torch.zeros(3)}
    cases.append(({**good, "opt_g": {**opt, "state": {**opt["state"], idx: moved}}},
                  f"opt_g/state/{idx}/exp_avg: expected shape "))
    for state, why in cases:
        with pytest.raises(CheckpointError) as e:
            fresh.load_state_dict(state)
        (line,) = e.value.problems
        assert line.startswith(f"state does not fit this run: {why}"), line
    assert all(torch.equal(v, before[k]) for k, v in fresh.G.state_dict().items())  # untouched
    fresh.load_state_dict(good)  # and the good state still loads


@pytest.fixture(scope="module")
def run3(tmp_path_factory) -> tuple[Path, Path]:
    """(config file, run dir) of a finished 3-step run with its checkpoint at step 3."""
    d = tmp_path_factory.mktemp("run3")
    cfg = d / "run.yaml"
    cfg.write_text(from_dict(TINY | {"train.steps": 3, "eval.num_samples": 256}).to_yaml())
    torch.set_num_threads(1)
    assert run_dir.train(str(cfg), [], d / "run", quiet=True) == 0
    return cfg, d / "run"


def _resume(capsys, cfg: Path, out: Path) -> tuple[int, list[str], str]:
    code = main(["train", str(cfg), "--out", str(out), "--quiet", "--resume"])
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.startswith("tuneable-gan: error:")], err


def test_binary_latest_and_bad_checkpoints_in_a_run_are_one_line(run3, tmp_path, capsys):
    cfg, src = run3
    out = tmp_path / "run"
    shutil.copytree(src, out)
    ckpt = out / "checkpoints/step_0000003"
    latest = out / "checkpoints/LATEST"
    latest.write_bytes(b"\x00\xffPK\x03\x04")
    code, lines, err = _resume(capsys, cfg, out)
    assert code == 2 and "Traceback" not in err
    assert lines == [f"tuneable-gan: error: {latest} does not name a checkpoint (holds 6 bytes: "
                     "b'\\x00\\xffPK\\x03\\x04'); write the name of one of its step directories "
                     "into it (found: step_0000003)"]
    latest.write_text("step_0000003\n")

    trainer = GANTrainer(from_dict(TINY | {"train.steps": 3, "eval.num_samples": 256}))
    good = trainer.state_dict()
    key = _first_conv(good)
    w = good["G"][key]
    bad = {**good, "G": {**good["G"], key: w[:, :1]}}
    write_checkpoint(ckpt, bad, trainer.cfg)  # checksums fine: the shapes are wrong
    code, lines, err = _resume(capsys, cfg, out)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    shape = ", ".join(map(str, w.shape))
    found = ", ".join(map(str, w[:, :1].shape))
    assert lines[0] == (f"tuneable-gan: error: --resume: checkpoint {ckpt / 'state.pt'}: state "
                        f"does not fit this run: G/{key}: expected shape ({shape}), found "
                        f"({found})")

    other = trainer.cfg.replace(**{"regularizer.weight": 5.0})
    write_checkpoint(ckpt, good, other)  # another run's checkpoint in this run's directory
    code, lines, err = _resume(capsys, cfg, out)
    assert code == 2 and lines == [f"tuneable-gan: error: --resume: checkpoint {ckpt} is of "
                                   "another run: regularizer.weight differ from this run's config"]

    flip(ckpt / "state.pt")
    code, lines, err = _resume(capsys, cfg, out)
    assert code == 2 and len(lines) == 1
    assert f"corrupt checkpoint {ckpt / 'state.pt'}: checksum mismatch" in lines[0]
