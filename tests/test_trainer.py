"""GANTrainer: bitwise resume on CPU, divergence, EMA, metrics."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_config

from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.errors import CheckpointError, ConfigError, Diverged
from tuneable_gan.trainer import GANTrainer

METRICS = {"d_loss", "g_loss", "reg_loss", "dig", "grad_norm_real", "grad_norm_fake", "step",
           "images_seen", "sparsity"}


def flat_tensors(obj, prefix=""):
    """Every tensor and scalar leaf of a nested state dict, by path."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flat_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flat_tensors(v, f"{prefix}/{i}"))
        return out
    return {prefix: obj}


def assert_bitwise_equal(a, b):
    fa, fb = flat_tensors(a), flat_tensors(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k


@pytest.mark.parametrize("extra", [
    {},
    {"model__conditional": True, "regularizer__pairing": "same_class", "data__flip": True},
    {"regularizer__pairing": "magnitude", "loss__name": "ns", "optim__name": "sgd"},
    {"regularizer__name": "none", "augment__diffaugment": ""},
])
def test_resume_is_bitwise_identical(tmp_path, extra):
    cfg = tiny_config(**extra)
    straight = GANTrainer(cfg)
    logged_straight = [straight.train_step() for _ in range(6)]

    first = GANTrainer(cfg)
    logged = [first.train_step() for _ in range(3)]
    write_checkpoint(tmp_path / "ck", first.state_dict(), cfg)
    del first
    state, cfg2 = read_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg
    second = GANTrainer(cfg2)
    second.load_state_dict(state)
    logged += [second.train_step() for _ in range(3)]

    assert logged == logged_straight  # every logged value, exactly
    assert_bitwise_equal(second.state_dict(), straight.state_dict())
    # reg_loss is the penalty of the D steps that carry one: regularizer none logs none.
    want = METRICS - {"reg_loss"} if extra.get("regularizer__name") == "none" else METRICS
    assert all(set(m) == want for m in logged)


def test_checkpoint_loads_with_weights_only(tmp_path):
    t = GANTrainer(tiny_config())
    t.train_step()
    write_checkpoint(tmp_path / "ck", t.state_dict(), t.cfg)
    state = torch.load(tmp_path / "ck" / "state.pt", weights_only=True)
    assert state["schema"] == 1 and state["step"] == 1
    assert state["terms"]["diggan"]["ema_fake"].shape == (8,)


def test_corrupt_and_missing_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        read_checkpoint(tmp_path / "nothing")
    t = GANTrainer(tiny_config())
    d = write_checkpoint(tmp_path / "ck", t.state_dict(), t.cfg)
    (d / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt checkpoint") as e:
        read_checkpoint(d)
    assert "\n" not in str(e.value)


def test_overwriting_a_checkpoint_leaves_no_temporaries(tmp_path):
    t = GANTrainer(tiny_config())
    write_checkpoint(tmp_path / "ck", t.state_dict(), t.cfg)
    t.train_step()
    write_checkpoint(tmp_path / "ck", t.state_dict(), t.cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert read_checkpoint(tmp_path / "ck")[0]["step"] == 1


def test_nan_loss_raises_diverged():
    t = GANTrainer(tiny_config(optim__d_lr=1e30, optim__g_lr=1e30, regularizer__name="none"))
    with pytest.raises(Diverged) as e:
        for _ in range(50):
            t.train_step()
    assert "diverged at step" in str(e.value)


def test_g_ema_is_a_copy_before_start_and_an_average_after():
    t = GANTrainer(tiny_config(optim__g_ema_start=1, optim__g_ema=0.9))
    t.train_step()  # step 0 < start: copy
    for k, v in t.G.state_dict().items():
        assert torch.equal(v, t.G_ema.state_dict()[k]), k
    before = copy.deepcopy(t.G_ema.state_dict())
    t.train_step()
    after, g = t.G_ema.state_dict(), t.G.state_dict()
    for k, v in after.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * g[k])


def test_unrunnable_combinations_are_refused_with_clear_lines(tmp_path):
    # Both available: the config validates and a trainer builds (the checks are config
    # validation now, in from_dict).
    GANTrainer(tiny_config(sparsity__level=0.5, augment__advaug="gd"), tickets=tmp_path).close()
    with pytest.raises(ConfigError) as e:
        tiny_config(data__name="toy2pt", model__arch="toy", augment__diffaugment="",
                    sparsity__level=0.5)
    msgs = e.value.problems
    assert len(msgs) == 1 and "model.arch=toy has none" in msgs[0] and "\n" not in msgs[0]


def test_toy_run_trains():
    cfg = tiny_config(data__name="toy2pt", model__arch="toy", augment__diffaugment="",
                      optim__name="sgd", optim__g_lr=1e-2, optim__d_lr=1e-2, optim__batch_size=2,
                      loss__name="ns")
    t = GANTrainer(cfg)
    m = [t.train_step() for _ in range(5)][-1]
    assert m["step"] == 5 and m["images_seen"] == 5 * 2 * 2
    assert t.samples(10).shape == (10, 1)
