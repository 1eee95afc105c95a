"""Tests for tuneable_gan.augment (DiffAugment, docs/methods.md section 2)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tuneable_gan.augment import OPS, diff_augment, parse_policy

FULL = "color,translation,cutout"
SINGLE_OPS = ("brightness", "saturation", "contrast", "translation", "cutout")


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def clone(g: torch.Generator) -> torch.Generator:
    """A generator that will produce exactly the draws `g` is about to produce."""
    c = torch.Generator(device=g.device)
    c.set_state(g.get_state())
    return c


def images(b: int = 4, c: int = 3, h: int = 16, w: int | None = None, seed: int = 1):
    w = h if w is None else w
    return torch.rand(b, c, h, w, generator=gen(seed)) * 2 - 1


def same_images(b: int, c: int = 3, h: int = 16) -> torch.Tensor:
    return images(1, c, h).expand(b, -1, -1, -1).clone()


# ----------------------------------------------------------------------------- parse_policy


def test_ops_names() -> None:
    assert set(OPS) == {"color", "translation", "cutout", "brightness", "saturation", "contrast"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (FULL, ("brightness", "saturation", "contrast", "translation", "cutout")),
        ("translation,cutout", ("translation", "cutout")),
        ("cutout", ("cutout",)),
        ("cutout,color", ("cutout", "brightness", "saturation", "contrast")),
        (" color , cutout ", ("brightness", "saturation", "contrast", "cutout")),
        ("contrast,brightness", ("contrast", "brightness")),
        ("", ()),
        ("  ", ()),
    ],
)
def test_parse_policy(policy: str, expected: tuple[str, ...]) -> None:
    assert parse_policy(policy) == expected


@pytest.mark.parametrize("policy", ["colour", "color,flip", "translation,Cutout"])
def test_parse_policy_unknown_op(policy: str) -> None:
    with pytest.raises(ValueError, match="valid ops") as info:
        parse_policy(policy)
    for op in OPS:
        assert op in str(info.value)


def test_unknown_op_in_diff_augment() -> None:
    with pytest.raises(ValueError):
        diff_augment(images(), "rotate", gen())


def test_rejects_non_nchw() -> None:
    with pytest.raises(ValueError, match="NCHW"):
        diff_augment(torch.zeros(3, 16, 16), "cutout", gen())


# ----------------------------------------------------------------------------- basics


@pytest.mark.parametrize("policy", ["", ()])
def test_empty_policy_is_identity(policy: str | tuple[str, ...]) -> None:
    x = images()
    g = gen()
    state = g.get_state()
    assert diff_augment(x, policy, g) is x
    assert torch.equal(g.get_state(), state)  # no draws consumed


@pytest.mark.parametrize("policy", [*OPS, FULL, "translation,cutout"])
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("h", [8, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_preserved(policy: str, c: int, h: int, dtype: torch.dtype) -> None:
    x = images(5, c, h).to(dtype)
    out = diff_augment(x, policy, gen())
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device
    assert torch.isfinite(out).all()


def test_non_square_images() -> None:
    out = diff_augment(images(3, 3, 16, 32), FULL, gen())
    assert out.shape == (3, 3, 16, 32)


def test_tuple_policy_matches_string() -> None:
    x = images()
    a = diff_augment(x, ("color", "translation", "cutout"), gen(3))
    b = diff_augment(x, FULL, gen(3))
    c = diff_augment(x, ("brightness", "saturation", "contrast", "translation", "cutout"), gen(3))
    assert torch.equal(a, b)
    assert torch.equal(a, c)


def test_policy_applies_ops_in_order() -> None:
    x = images()
    g1, g2 = gen(5), gen(5)
    full = diff_augment(x, FULL, g1)
    step = x
    for op in ("brightness", "saturation", "contrast", "translation", "cutout"):
        step = diff_augment(step, op, g2)
    assert torch.equal(full, step)
    assert torch.equal(g1.get_state(), g2.get_state())


# ----------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("policy", [*OPS, FULL])
def test_per_sample_independence(policy: str) -> None:
    out = diff_augment(same_images(16), policy, gen())
    assert not all(torch.equal(out[0], out[i]) for i in range(1, 16))


@pytest.mark.parametrize("policy", [*SINGLE_OPS, FULL])
def test_reals_and_fakes_concatenated_get_independent_draws(policy: str) -> None:
    out = diff_augment(same_images(32), policy, gen())
    assert not torch.equal(out[:16], out[16:])


@pytest.mark.parametrize("policy", [*SINGLE_OPS, FULL])
def test_determinism_and_seed_dependence(policy: str) -> None:
    x = images(8)
    a = diff_augment(x, policy, gen(123))
    b = diff_augment(x, policy, gen(123))
    c = diff_augment(x, policy, gen(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fresh_draws_on_every_call_and_resumable() -> None:
    x = images(8)
    g = gen(7)
    first = diff_augment(x, FULL, g)
    saved = g.get_state()
    second = diff_augment(x, FULL, g)
    assert not torch.equal(first, second)
    resumed = torch.Generator().set_state(saved)
    assert torch.equal(diff_augment(x, FULL, resumed), second)


# ----------------------------------------------------------------------------- fill values


@pytest.mark.parametrize("policy", ["translation", "cutout", "translation,cutout"])
def test_fill_value_is_zero(policy: str) -> None:
    x = torch.full((64, 3, 32, 32), 0.7)
    out = diff_augment(x, policy, gen())
    is_fill = out == 0.0
    assert ((out == 0.7) | is_fill).all()
    assert is_fill.any()
    # the fill is the same on every channel
    assert (is_fill == is_fill[:, :1]).all()


def test_cutout_area_at_32() -> None:
    x = torch.full((512, 3, 32, 32), 0.7)
    out = diff_augment(x, "cutout", gen())
    zero = out[:, 0] == 0
    counts = zero.sum(dim=(1, 2))
    # full 16x16 square at most; a square clamped at a corner keeps at least 8x8
    assert counts.max() <= 16 * 16
    assert counts.min() >= 8 * 8
    assert (counts == 16 * 16).any()
    # the zeroed pixels form an axis-aligned rectangle
    rows = zero.any(dim=2).sum(dim=1)
    cols = zero.any(dim=1).sum(dim=1)
    assert torch.equal(rows * cols, counts)
    assert rows.max() <= 16 and cols.max() <= 16


def test_translation_shift_range_at_32() -> None:
    b = 512
    x = torch.zeros(b, 1, 32, 32)
    x[:, :, 16, 16] = 1.0
    out = diff_augment(x, "translation", gen())
    flat = out.reshape(b, -1)
    assert torch.equal((flat != 0).sum(dim=1), torch.ones(b, dtype=torch.long))
    pos = flat.argmax(dim=1)
    # output(i, j) = input(i + t_h, j + t_w): the pixel moves to (16 - t_h, 16 - t_w)
    t_h = 16 - pos // 32
    t_w = 16 - pos % 32
    assert t_h.abs().max() <= 4 and t_w.abs().max() <= 4
    # integer shifts cover the whole range -4..4, both axes drawn independently
    assert set(t_h.tolist()) == set(range(-4, 5))
    assert set(t_w.tolist()) == set(range(-4, 5))
    assert not torch.equal(t_h, t_w)


# ----------------------------------------------------------------------------- exact values


def test_brightness_exact() -> None:
    x, g = images(6), gen(11)
    u = torch.rand(6, 1, 1, 1, generator=clone(g))
    assert_close(diff_augment(x, "brightness", g), x + (u - 0.5))


def test_saturation_exact() -> None:
    x, g = images(6), gen(12)
    u = torch.rand(6, 1, 1, 1, generator=clone(g))
    m = x.mean(dim=1, keepdim=True)
    assert_close(diff_augment(x, "saturation", g), (x - m) * (2 * u) + m)


def test_contrast_exact() -> None:
    x, g = images(6), gen(13)
    u = torch.rand(6, 1, 1, 1, generator=clone(g))
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    assert_close(diff_augment(x, "contrast", g), (x - m) * (u + 0.5) + m)


def test_color_exact() -> None:
    x, g = images(6), gen(14)
    ref = clone(g)
    ub, us, uc = (torch.rand(6, 1, 1, 1, generator=ref) for _ in range(3))
    y = x + (ub - 0.5)
    m = y.mean(dim=1, keepdim=True)
    y = (y - m) * (2 * us) + m
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - m) * (uc + 0.5) + m
    assert_close(diff_augment(x, "color", g), y)


def hand_shift(img: torch.Tensor, t_h: int, t_w: int) -> torch.Tensor:
    """out(i, j) = img(i + t_h, j + t_w), zero outside: roll, then zero the wrapped lines."""
    out = torch.roll(img, shifts=(-t_h, -t_w), dims=(-2, -1)).clone()
    if t_h > 0:
        out[..., -t_h:, :] = 0
    elif t_h < 0:
        out[..., :-t_h, :] = 0
    if t_w > 0:
        out[..., :, -t_w:] = 0
    elif t_w < 0:
        out[..., :, :-t_w] = 0
    return out


def test_translation_exact_8x8() -> None:
    b = 32
    x, g = images(b, 3, 8, seed=2), gen(15)
    ref = clone(g)
    shift = 1  # int(8 / 8 + 0.5)
    t_h = torch.randint(-shift, shift + 1, (b,), generator=ref)
    t_w = torch.randint(-shift, shift + 1, (b,), generator=ref)
    expected = torch.stack([hand_shift(x[i], int(t_h[i]), int(t_w[i])) for i in range(b)])
    assert_close(diff_augment(x, "translation", g), expected)


def test_translation_exact_16x16_larger_shift() -> None:
    b = 16
    x, g = images(b, 1, 16, seed=3), gen(16)
    ref = clone(g)
    t_h = torch.randint(-2, 3, (b,), generator=ref)  # shift = int(16 / 8 + 0.5) = 2
    t_w = torch.randint(-2, 3, (b,), generator=ref)
    expected = torch.stack([hand_shift(x[i], int(t_h[i]), int(t_w[i])) for i in range(b)])
    assert_close(diff_augment(x, "translation", g), expected)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (32, 32), (16, 8)])
def test_cutout_exact(h: int, w: int) -> None:
    b = 32
    x, g = images(b, 3, h, w, seed=4), gen(17)
    ref = clone(g)
    size_h, size_w = int(h / 2 + 0.5), int(w / 2 + 0.5)
    off_h = torch.randint(0, h + (1 - size_h % 2), (b,), generator=ref)
    off_w = torch.randint(0, w + (1 - size_w % 2), (b,), generator=ref)
    expected = x.clone()
    for i in range(b):
        r0 = int(off_h[i]) - size_h // 2
        c0 = int(off_w[i]) - size_w // 2
        expected[i, :, max(r0, 0) : max(r0 + size_h, 0), max(c0, 0) : max(c0 + size_w, 0)] = 0
    assert_close(diff_augment(x, "cutout", g), expected)


def test_cutout_odd_size_offset_range() -> None:
    # H = 10 -> size 5 (odd): offsets in 0..H-1, i.e. randint(0, 10); the square stays centred
    b = 64
    x, g = torch.ones(b, 1, 10, 10), gen(18)
    off_h = torch.randint(0, 10, (b,), generator=clone(g))
    out = diff_augment(x, "cutout", g)
    zero_rows = (out[:, 0] == 0).any(dim=2)
    for i in range(b):
        lo, hi = max(int(off_h[i]) - 2, 0), min(int(off_h[i]) + 3, 10)
        expected = torch.zeros(10, dtype=torch.bool)
        expected[lo:hi] = True
        assert torch.equal(zero_rows[i], expected)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("policy", [*SINGLE_OPS, FULL])
def test_gradient_flows(policy: str) -> None:
    x = images(4).requires_grad_(True)
    diff_augment(x, policy, gen()).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert (x.grad != 0).any()


@pytest.mark.parametrize("policy", SINGLE_OPS)
def test_gradcheck(policy: str) -> None:
    x = images(2, 3, 8).double().requires_grad_(True)
    # a fresh seeded generator per call, so every evaluation uses the same draws
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, policy, gen(19)), (x,))


def test_cutout_gradient_zero_exactly_at_masked_pixels() -> None:
    x = torch.full((16, 3, 32, 32), 0.5, requires_grad=True)
    out = diff_augment(x, "cutout", gen())
    (out * 3.0).sum().backward()
    assert x.grad is not None
    masked = out.detach() == 0
    assert masked.any()
    assert (x.grad[masked] == 0).all()
    assert (x.grad[~masked] == 3.0).all()


# ----------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_itself_and_stays_on_device() -> None:
    x = images(8).cuda().requires_grad_(True)
    a = diff_augment(x, FULL, gen(1, "cuda"))
    b = diff_augment(x, FULL, gen(1, "cuda"))
    assert a.device == x.device
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None
