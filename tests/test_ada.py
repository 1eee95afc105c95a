"""Tests for tuneable_gan.ada (ADA's p controller, its state and config, after
stylegan2-ada-pytorch); the augmentation ops are tests/test_ada_ops.py.

Oracles come from the reference's formulas: the p update of training_loop.py.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from ada_helpers import gen, images, logits
from torch.testing import assert_close

from tuneable_gan.ada import AdaConfig, AdaptiveAugment
from tuneable_gan.ada_ops import COLOR_OPS, GEOMETRIC_OPS, OPS, PIPES, pipe_multipliers
from tuneable_gan.errors import CheckpointError, ConfigError


def f32_trajectory(p0: float, signs: list[int], rate: float) -> list[float]:
    """The reference update in float32: p = max(p + sign * rate, 0) per adjustment."""
    p, out = np.float32(p0), []
    for s in signs:
        p = max(np.float32(p + np.float32(s * rate)), np.float32(0))
        out.append(float(p))
    return out


def run(ada: AdaptiveAugment, batches: list[torch.Tensor], batch_size: int, first: int = 1):
    """One D step per batch of real logits; p (as a tensor copy) after each step."""
    ps = []
    for step, lg in enumerate(batches, start=first):
        ada.accumulate(lg)
        ada.maybe_adjust(batch_size, step)
        ps.append(ada.p.clone())
    return ps


# ----------------------------------------------------------------------------- p update rule


def test_all_positive_logits_raise_p_by_the_reference_rate() -> None:
    ada = AdaptiveAugment(AdaConfig(target=0.6, interval=4, kimg=500))
    rate = 64 * 4 / (500 * 1000)
    ps = run(ada, [logits(64, 0)] * 12, batch_size=64)
    expected = f32_trajectory(0.0, [1, 1, 1], rate)
    assert_close(torch.stack(ps), torch.tensor([0.0] * 3 + [expected[0]] * 4 + [expected[1]] * 4
                                                + [expected[2]]))
    assert_close(ps[-1], torch.tensor(3 * 5.12e-4))


def test_maybe_adjust_only_every_interval_steps() -> None:
    ada = AdaptiveAugment(AdaConfig(interval=4))
    ada.accumulate(logits(8, 0))
    assert [ada.maybe_adjust(8, s) for s in (1, 2, 3)] == [False] * 3
    assert ada.p.item() == 0.0
    assert ada.maybe_adjust(8, 4) is True
    assert ada.p.item() > 0


def test_all_negative_logits_keep_p_clamped_at_zero() -> None:
    ada = AdaptiveAugment(AdaConfig(interval=2, kimg=0.1, p_init=0.15))
    ps = run(ada, [logits(0, 5)] * 6, batch_size=5)
    assert_close(torch.stack(ps), torch.tensor([0.15, 0.05, 0.05, 0.0, 0.0, 0.0]))
    assert torch.equal(ps[-1], torch.tensor(0.0))


def test_sign_mean_exactly_at_target_leaves_p_unchanged() -> None:
    # 4 positive and 1 negative, or 3 positive and 2 exact zeros (sign 0): mean 0.6 both ways.
    ada = AdaptiveAugment(AdaConfig(target=0.6, interval=2, kimg=0.1, p_init=0.3))
    ps = run(ada, [logits(4, 1), logits(3, 0, zero=2)] * 3, batch_size=5)
    assert all(torch.equal(p, torch.tensor(0.3)) for p in ps)


def test_mixed_scripted_sequence_gives_hand_computed_trajectory() -> None:
    # batch 5, interval 2, kimg 0.1: each adjustment moves p by 5 * 2 / 100 = 0.1.
    ada = AdaptiveAugment(AdaConfig(target=0.6, interval=2, kimg=0.1))
    batches = [
        logits(5, 0), logits(5, 0),            # mean 1.0  -> up:    0.1
        logits(5, 0), logits(3, 2),            # mean 0.6  -> same:  0.1
        logits(2, 3), logits(3, 2),            # mean 0.0  -> down:  0.0
        logits(0, 5), logits(1, 4),            # mean -0.8 -> clamp: 0.0
        logits(5, 0), logits(4, 0, zero=1),    # mean 0.9  -> up:    0.1
        logits(4, 1), logits(5, 0),            # mean 0.8  -> up:    0.2
        logits(3, 1, zero=1), logits(3, 2),    # mean 0.3  -> down:  0.1
    ]
    ps = run(ada, batches, batch_size=5)
    assert_close(torch.stack(ps[1::2]), torch.tensor([0.1, 0.1, 0.0, 0.0, 0.1, 0.2, 0.1]))
    assert_close(torch.stack(ps[1::2]),
                 torch.tensor(f32_trajectory(0.0, [1, 0, -1, -1, 1, 1, -1], 0.1)),
                 rtol=0, atol=0)


def test_p_is_not_clamped_at_one_like_the_reference() -> None:
    ada = AdaptiveAugment(AdaConfig(interval=1, kimg=0.01, p_init=1.0))
    run(ada, [logits(5, 0)], batch_size=5)
    assert_close(ada.p, torch.tensor(1.5))


def test_fixed_p_mode_never_moves() -> None:
    ada = AdaptiveAugment(AdaConfig(target=None, p_init=0.25))
    ps = run(ada, [logits(9, 0)] * 8, batch_size=9)
    assert not ada.adaptive and all(torch.equal(p, torch.tensor(0.25)) for p in ps)
    assert ada.state_dict()["sign_count"].item() == 0


def test_adjustment_without_logits_keeps_p() -> None:
    ada = AdaptiveAugment(AdaConfig(interval=1, p_init=0.5))
    assert ada.maybe_adjust(16, 1) is True
    assert torch.equal(ada.p, torch.tensor(0.5))


# ----------------------------------------------------------------------------- state


def scripted_logits(n: int, seed: int = 25) -> list[torch.Tensor]:
    g = gen(seed)
    return [torch.randn(6, 1, generator=g) + 1.0 for _ in range(n)]


def test_state_dict_round_trip_continues_p_bitwise() -> None:
    cfg = AdaConfig(interval=3, kimg=0.5)
    batches = scripted_logits(40)
    whole = run(AdaptiveAugment(cfg), batches, batch_size=6)
    first = AdaptiveAugment(cfg)
    head = run(first, batches[:20], batch_size=6)     # 20 is mid-interval: accumulators live
    assert first.state_dict()["sign_count"].item() == 12
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = AdaptiveAugment(cfg)
    resumed.load_state_dict(torch.load(buf))
    tail = run(resumed, batches[20:], batch_size=6, first=21)
    assert len({float(p) for p in whole}) > 3
    assert all(torch.equal(a, b) for a, b in zip(whole, head + tail))


def test_load_state_dict_rejects_missing_or_bad_keys() -> None:
    ada = AdaptiveAugment()
    state = ada.state_dict()
    with pytest.raises(CheckpointError, match="sign_count"):
        ada.load_state_dict({k: v for k, v in state.items() if k != "sign_count"})
    with pytest.raises(CheckpointError, match="p must be"):
        ada.load_state_dict({**state, "p": torch.tensor(0.5, dtype=torch.float64)})


def test_no_device_reads_in_call_accumulate_adjust(monkeypatch: pytest.MonkeyPatch) -> None:
    ada = AdaptiveAugment(AdaConfig(interval=1, p_init=0.2))
    x, lg = images(), logits(8, 0)
    reads: list[str] = []
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__",
                 "__index__"):
        orig = getattr(torch.Tensor, name)

        def counted(t, *a, _name=name, _orig=orig, **kw):
            reads.append(_name)
            return _orig(t, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    ada(x, gen())
    ada.accumulate(lg)
    ada.maybe_adjust(8, 1)
    monkeypatch.undo()
    assert reads == []


# ----------------------------------------------------------------------------- config, pipes


def test_pipes_match_the_reference_specs() -> None:
    assert set(PIPES["bgc"]) == set(OPS) and len(OPS) == 12
    assert PIPES["bg"] == GEOMETRIC_OPS == PIPES["blit"] + PIPES["geom"]
    assert PIPES["c"] == PIPES["color"] == COLOR_OPS
    assert pipe_multipliers("bg") == {op: float(op in GEOMETRIC_OPS) for op in OPS}
    with pytest.raises(ValueError, match="valid ops: xflip"):
        pipe_multipliers({"cutout": 1.0})


def test_default_config_is_valid() -> None:
    assert AdaConfig().problems() == []
    meta = {f.name: f.metadata for f in dataclasses.fields(AdaConfig)}
    assert meta["pipe"]["choices"] == tuple(PIPES) and meta["target"]["lo_open"]
    assert AdaConfig(target=None, p_init=0.4).validate() == AdaConfig(target=None, p_init=0.4)


def test_bad_pipe_names_the_valid_pipes() -> None:
    with pytest.raises(ConfigError) as e:
        AdaptiveAugment(AdaConfig(pipe="bgcfnc"))
    (line,) = e.value.problems
    assert line.startswith("ada.pipe must be one of ") and "bgc" in line and "'bgcfnc'" in line


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, -0.1, float("nan"), True])
def test_target_outside_open_unit_interval_is_rejected(target: float) -> None:
    (line,) = AdaConfig(target=target).problems()
    assert line.startswith("ada.target must be in (0, 1)")


def test_every_problem_is_listed_once() -> None:
    cfg = AdaConfig(pipe="x", target=2.0, interval=0, kimg=0, p_init=1.5)
    with pytest.raises(ConfigError) as e:
        cfg.validate(prefix="augment.ada")
    keys = [line.split(" ")[0] for line in e.value.problems]
    assert keys == [f"augment.ada.{k}" for k in ("pipe", "target", "interval", "kimg",
                                                 "p_init")]
    assert all("\n" not in line for line in e.value.problems)
