"""Tests for tuneable_gan.ada and tuneable_gan.ada_ops (ADA, after stylegan2-ada-pytorch).

Oracles come from the reference's formulas: the p update of training_loop.py, and for the
augmentations the documented draws replayed from a cloned generator.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tuneable_gan.ada import AdaConfig, AdaptiveAugment
from tuneable_gan.ada_ops import COLOR_OPS, GEOMETRIC_OPS, OPS, PIPES, ada_augment, pipe_multipliers
from tuneable_gan.errors import CheckpointError, ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clone(g: torch.Generator) -> torch.Generator:
    """A generator that will produce exactly the draws `g` is about to produce."""
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


def images(b: int = 8, c: int = 3, h: int = 32, w: int | None = None, seed: int = 1):
    return torch.rand(b, c, h, h if w is None else w, generator=gen(seed)) * 2 - 1


def logits(pos: int, neg: int, zero: int = 0) -> torch.Tensor:
    return torch.cat([torch.full((pos, 1), 2.5), torch.full((neg, 1), -0.7),
                      torch.zeros(zero, 1)])


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


# ----------------------------------------------------------------------------- pipe: exact ops


@pytest.mark.parametrize("c", [1, 3])
def test_p_zero_is_the_identity_bitwise(c: int) -> None:
    x = images(c=c)
    assert torch.equal(ada_augment(x, 0.0, "bgc", gen()), x)
    ada = AdaptiveAugment(AdaConfig(p_init=0.0))
    assert torch.equal(ada(x, gen()), x)


def test_fixed_zero_p_returns_input_without_drawing() -> None:
    x, g = images(), gen()
    state = g.get_state()
    assert AdaptiveAugment(AdaConfig(target=None, p_init=0.0))(x, g) is x
    assert torch.equal(g.get_state(), state)


def test_xflip_flips_about_half_the_samples_exactly() -> None:
    n = 4000
    x = images(b=n, h=4)
    g = gen(3)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"xflip": 1}, g)
    flip = torch.floor(torch.rand(n, generator=ref) * 2).bool()   # value draw
    assert (torch.rand(n, generator=ref) < 1.0).all()             # gate draw: fires at p=1
    assert torch.equal(out, torch.where(flip[:, None, None, None], x.flip(-1), x))
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert abs(flip.sum().item() - n / 2) < 4 * math.sqrt(n / 4)


def test_xflip_is_its_own_inverse() -> None:
    x = images()
    twice = ada_augment(ada_augment(x, 1.0, {"xflip": 1}, gen(5)), 1.0, {"xflip": 1}, gen(5))
    assert torch.equal(twice, x)


def test_rotate90_is_an_exact_quarter_turn_permutation() -> None:
    x = images(b=16)
    g = gen(4)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"rotate90": 1}, g)
    k = torch.floor(torch.rand(16, generator=ref) * 4).long()
    # G_inv = R(k pi/2) maps output (x, y) to input (-y, x) for k = 1: np.rot90's direction.
    expected = torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k)])
    assert torch.equal(out, expected)
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_xint_is_an_exact_integer_shift_with_reflected_border() -> None:
    b, h = 16, 32
    x = images(b=b, h=h)
    g = gen(6)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"xint": 1}, g)
    t = (torch.rand(b, 2, generator=ref) * 2 - 1) * 0.125
    shift = torch.round(t * h).long()          # content moves by +shift (x, y)
    m = 4
    padded = F.pad(x, (m, m, m, m), mode="reflect")
    for i in range(b):
        tx, ty = int(shift[i, 0]), int(shift[i, 1])
        assert torch.equal(out[i], padded[i, :, m - ty:m - ty + h, m - tx:m - tx + h])


def test_scale_zooms_about_the_centre() -> None:
    # A ramp f = column index; bilinear sampling reproduces it exactly where in range.
    b, w = 8, 33
    x = torch.arange(w, dtype=torch.float32).expand(b, 3, w, w).clone()
    g = gen(7)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"scale": 1}, g)
    s = torch.exp2(torch.randn(b, generator=ref) * 0.2)
    c = (w - 1) / 2
    src = (torch.arange(w) - c)[None, :] / s[:, None] + c          # (b, w)
    valid = (src >= 0) & (src <= w - 1)
    got = out[:, 0, 0, :]
    assert_close(got[valid], src[valid])


def test_xfrac_translates_content_by_t_times_size() -> None:
    b, h, w = 8, 24, 32
    ramp_x = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)
    ramp_y = torch.arange(h, dtype=torch.float32)[:, None].expand(b, 1, h, w)
    x = torch.cat([ramp_x, ramp_y, ramp_x], 1).clone()
    g = gen(8)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"xfrac": 1}, g)
    t = torch.randn(b, 2, generator=ref) * 0.125
    src_x = torch.arange(w)[None, :] - t[:, :1] * w
    src_y = torch.arange(h)[None, :] - t[:, 1:] * h
    vx, vy = (src_x >= 0) & (src_x <= w - 1), (src_y >= 0) & (src_y <= h - 1)
    assert_close(out[:, 0, 0, :][vx], src_x[vx], atol=1e-4, rtol=0)
    assert_close(out[:, 1, :, 0][vy], src_y[vy], atol=1e-4, rtol=0)


def test_scale_rotate_aniso_fix_the_centre_pixel_of_an_odd_image() -> None:
    x = images(b=8, h=33)
    out = ada_augment(x, 1.0, {"scale": 1, "rotate": 1, "aniso": 1}, gen(9))
    assert torch.equal(out[:, :, 16, 16], x[:, :, 16, 16])
    assert not torch.equal(out, x)


def test_geometric_pipe_keeps_a_constant_image_constant() -> None:
    x = torch.full((8, 3, 16, 16), 0.37)
    assert_close(ada_augment(x, 1.0, "bg", gen(10)), x)


def test_rotate_fires_with_probability_p_over_pre_and_post() -> None:
    n, p = 4000, 0.5
    x = images(b=n, h=4)
    out = ada_augment(x, p, {"rotate": 1}, gen(11))
    changed = (out != x).flatten(1).any(1).float().sum().item()
    assert abs(changed - n * p) < 4 * math.sqrt(n * p * (1 - p))


# ----------------------------------------------------------------------------- pipe: colour


@pytest.mark.parametrize("c", [1, 3])
def test_brightness_shifts_each_sample_by_its_drawn_amount(c: int) -> None:
    b = 16
    x = images(b=b, c=c)
    g = gen(12)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"brightness": 1}, g)
    shift = torch.randn(b, generator=ref) * 0.2
    assert_close(out.mean((1, 2, 3)) - x.mean((1, 2, 3)), shift)
    assert_close(out, x + shift[:, None, None, None])


def test_contrast_scales_by_its_drawn_factor() -> None:
    b = 16
    x = images(b=b)
    g = gen(13)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"contrast": 1}, g)
    scale = torch.exp2(torch.randn(b, generator=ref) * 0.5)
    assert_close(out, x * scale[:, None, None, None])


def test_lumaflip_negates_the_luma_of_flipped_samples() -> None:
    b = 64
    x = images(b=b)
    g = gen(14)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"lumaflip": 1}, g)
    flip = torch.floor(torch.rand(b, generator=ref) * 2).bool()
    # Householder reflection about the plane normal to (1,1,1): luma negated, chroma kept.
    luma, luma_out = x.mean(1), out.mean(1)
    assert_close(luma_out[flip], -luma[flip])
    assert torch.equal(out[~flip], x[~flip])
    assert_close(out - luma_out[:, None], x - luma[:, None])


@pytest.mark.parametrize("op", ["hue", "saturation"])
def test_hue_and_saturation_preserve_luma(op: str) -> None:
    x = images(b=16)
    out = ada_augment(x, 1.0, {op: 1}, gen(15))
    assert_close(out.mean(1), x.mean(1))
    assert not torch.equal(out, x)


def test_hue_rotation_keeps_the_chroma_norm() -> None:
    x = images(b=16)
    out = ada_augment(x, 1.0, {"hue": 1}, gen(16))
    chroma = (x - x.mean(1, keepdim=True)).norm(dim=1)
    assert_close((out - out.mean(1, keepdim=True)).norm(dim=1), chroma)


def test_saturation_scales_chroma_by_its_drawn_factor() -> None:
    b = 16
    x = images(b=b)
    g = gen(17)
    ref = clone(g)
    out = ada_augment(x, 1.0, {"saturation": 1}, g)
    s = torch.exp2(torch.randn(b, generator=ref) * 1.0)[:, None, None, None]
    luma = x.mean(1, keepdim=True)
    assert_close(out, luma + s * (x - luma))


# ----------------------------------------------------------------------------- draws, grads


def test_draw_order_and_count_for_bgc() -> None:
    b = 5
    g = gen(17)
    ref = clone(g)
    ada_augment(images(b=b), 0.5, "bgc", g)
    for op in OPS:
        value = torch.randn if op in {"scale", "aniso", "xfrac", "brightness", "contrast",
                                      "saturation"} else torch.rand
        for _ in range(2 if op == "rotate" else 1):
            value((b, 2) if op in {"xint", "xfrac"} else (b,), generator=ref)
            torch.rand(b, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())


def test_grey_images_skip_hue_and_saturation_draws() -> None:
    b = 5
    g = gen(18)
    ref = clone(g)
    ada_augment(images(b=b, c=1), 0.5, "c", g)
    for value in (torch.randn, torch.randn, torch.rand):  # brightness, contrast, lumaflip
        value(b, generator=ref)
        torch.rand(b, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())


def test_same_seed_same_output_bitwise() -> None:
    x = images()
    a = ada_augment(x, 0.5, "bgc", gen(19))
    assert torch.equal(a, ada_augment(x, 0.5, "bgc", gen(19)))
    assert not torch.equal(a, ada_augment(x, 0.5, "bgc", gen(20)))


def test_gradient_through_full_pipe_is_finite() -> None:
    x = images(b=8, h=16).requires_grad_(True)
    out = ada_augment(x, 0.5, "bgc", gen(21))
    (out.square().sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_r1_style_double_backward_through_the_pipe() -> None:
    x = images(b=4, h=16).requires_grad_(True)
    score = ada_augment(x, 0.7, "bgc", gen(26)).pow(3).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    grad.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("pipe", ["c", "bg"])
def test_gradcheck_float64(pipe: str) -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen(22), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ada_augment(t, 1.0, pipe, gen(23)), (x,))


def test_adaptive_augment_moves_with_its_p() -> None:
    ada = AdaptiveAugment(AdaConfig(p_init=0.0, interval=1, kimg=0.004))
    x = images()
    assert torch.equal(ada(x, gen(24)), x)
    ada.accumulate(logits(8, 0))
    ada.maybe_adjust(8, 1)            # p: 0 -> 8 / 4 = 2, augments as p = 1
    assert torch.equal(ada(x, gen(24)), ada_augment(x, 1.0, "bgc", gen(24)))


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
