"""Tests for tuneable_gan.ada_ops (ADA's augmentation pipe, after stylegan2-ada-pytorch's
augment.py): exact geometric ops, colour ops against their drawn values, draw order,
reproducibility and gradients. Oracles replay the documented draws from a cloned generator.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ada_helpers import clone, gen, images, logits
from torch.testing import assert_close

from tuneable_gan.ada import AdaConfig, AdaptiveAugment
from tuneable_gan.ada_ops import OPS, ada_augment

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
