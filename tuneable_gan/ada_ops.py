"""The ADA augmentation pipe: per-sample geometric and colour transforms at strength ``p``.

Semantics follow ``AugmentPipe`` of NVlabs/stylegan2-ada-pytorch (``training/augment.py``) for
its ``bgc`` ops: the same ops, probability multipliers, strength defaults, per-op draws and
composition order. Geometric ops compose into one inverse 3x3 homogeneous matrix per sample
(output pixel -> input pixel, in pixel units about the image centre) that is applied once;
colour ops compose into one 4x4 colour matrix per sample that is applied once.

Every random number comes from the optional ``torch.Generator`` (which must live on the images'
device), in float32, in this fixed order; an op whose multiplier is 0 draws nothing, and
``hue`` and ``saturation`` draw nothing for 1-channel images (as in the reference):

====================  ============================================  =========================
op                    value draw                                    gate draw (fires if < q)
====================  ============================================  =========================
xflip                 rand(B), flip if floor(2u) = 1                rand(B),   q = m p
rotate90              rand(B), k = floor(4u) quarter turns          rand(B),   q = m p
xint                  rand(B, 2), t = (2u - 1) xint_max             rand(B,1), q = m p
scale                 randn(B), s = 2^(z scale_std)                 rand(B),   q = m p
rotate (pre)          rand(B), theta = (2u - 1) pi rotate_max       rand(B),   q = p_rot
aniso                 randn(B), s = 2^(z aniso_std)                 rand(B),   q = m p
rotate (post)         rand(B), as pre                               rand(B),   q = p_rot
xfrac                 randn(B, 2), t = z xfrac_std                  rand(B,1), q = m p
brightness            randn(B), b = z brightness_std                rand(B),   q = m p
contrast              randn(B), c = 2^(z contrast_std)              rand(B),   q = m p
lumaflip              rand(B), flip if floor(2u) = 1                rand(B),   q = m p
hue (C > 1)           rand(B), theta = (2u - 1) pi hue_max          rand(B),   q = m p
saturation (C > 1)    randn(B), s = 2^(z saturation_std)            rand(B),   q = m p
====================  ============================================  =========================

with ``m`` the op's multiplier and ``p_rot = 1 - sqrt(clamp(1 - m_rotate p, 0, 1))`` so that a
sample is rotated (pre or post) with probability ``m_rotate p``.

Deviations from the reference, all deliberate:

* Resampling: the reference reflect-pads, upsamples 2x with a sym6 wavelet filter, calls
  ``grid_sample`` and downsamples (anti-aliased, custom CUDA ops). Here the transformed
  coordinates are sampled bilinearly from the reflect-extended image (reflection about the
  edge pixels' centres, as ``F.pad(mode='reflect')``, repeated as far as needed) with plain
  ``gather``: no custom ops, twice differentiable (R1 through the pipe), but more aliasing
  under scaling and rotation than the reference. As with ``grid_sample``, the CUDA backward
  (a scatter-add) is not bitwise deterministic; the forward is.
* Exactness: quarter turns use exact 0/+-1 matrices (the reference's ``cos(pi/2)`` is 4e-8),
  and matrices are multiplied elementwise (never ``@``, which TF32 would round), so a sample
  that only had integer ops (flip, quarter turn, integer shift) is an exact pixel permutation,
  and a sample whose composite transform is the identity is returned bitwise unchanged (the
  reference filters every image whenever a geometric op is enabled, even at p = 0).
* Saturation is built as ``I + (s - 1)(I - v v^T)``, equal to the reference's
  ``v v^T + (I - v v^T) s`` but exactly the identity at s = 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

GEOMETRIC_OPS: tuple[str, ...] = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso",
                                  "xfrac")
COLOR_OPS: tuple[str, ...] = ("brightness", "contrast", "lumaflip", "hue", "saturation")
OPS: tuple[str, ...] = GEOMETRIC_OPS + COLOR_OPS

# Reference strength defaults (AugmentPipe's constructor arguments).
STRENGTHS: dict[str, float] = {
    "xint_max": 0.125, "scale_std": 0.2, "rotate_max": 1.0, "aniso_std": 0.2,
    "xfrac_std": 0.125, "brightness_std": 0.2, "contrast_std": 0.5, "hue_max": 1.0,
    "saturation_std": 1.0,
}

_BLIT = ("xflip", "rotate90", "xint")
_GEOM = ("scale", "rotate", "aniso", "xfrac")
# The reference's augpipe_specs that use only the ops above, plus one-letter aliases b/g/c for
# blit/geom/color. The filter, noise and cutout pipes (bgcf, bgcfn, bgcfnc) are not built.
PIPES: dict[str, tuple[str, ...]] = {
    "blit": _BLIT, "geom": _GEOM, "color": COLOR_OPS, "bg": _BLIT + _GEOM, "bgc": OPS,
    "b": _BLIT, "g": _GEOM, "c": COLOR_OPS,
}


def pipe_multipliers(pipe: str | Mapping[str, float]) -> dict[str, float]:
    """Probability multiplier of every op in ``OPS`` for a pipe name (``PIPES``: 1 for the
    pipe's ops, 0 for the rest) or for an explicit ``{op: multiplier}`` mapping (missing ops
    0). Raises ``ValueError`` naming the valid names for an unknown pipe or op, or a negative
    or non-finite multiplier."""
    if isinstance(pipe, str):
        if pipe not in PIPES:
            raise ValueError(f"unknown ADA pipe {pipe!r}; valid pipes: {', '.join(PIPES)}")
        return {op: float(op in PIPES[pipe]) for op in OPS}
    unknown = sorted(set(pipe) - set(OPS))
    if unknown:
        raise ValueError(f"unknown ADA op(s) {unknown!r}; valid ops: {', '.join(OPS)}")
    bad = {k: v for k, v in pipe.items() if not (math.isfinite(float(v)) and float(v) >= 0)}
    if bad:
        raise ValueError(f"ADA multipliers must be finite and >= 0, got {bad!r}")
    return {op: float(pipe.get(op, 0.0)) for op in OPS}


class _Draws:
    """The per-sample random draws of one call, all float32 from one generator."""

    def __init__(self, batch: int, device: torch.device, generator: torch.Generator | None):
        self.batch, self.device, self.generator = batch, device, generator

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand((self.batch, *shape), dtype=torch.float32, device=self.device,
                          generator=self.generator)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn((self.batch, *shape), dtype=torch.float32, device=self.device,
                           generator=self.generator)

    def gate(self, value: torch.Tensor, identity: float, prob: torch.Tensor) -> torch.Tensor:
        """``value`` where this sample's op fires (a fresh U[0,1) draw below ``prob``), else
        ``identity``; one gate draw per sample, whatever ``value``'s shape."""
        fires = (self.rand() < prob).reshape((-1,) + (1,) * (value.dim() - 1))
        return torch.where(fires, value, torch.full_like(value, identity))


def _matrix(rows: list[list[torch.Tensor | float]], ref: torch.Tensor) -> torch.Tensor:
    """A (B, n, m) batch of matrices from rows of per-sample (B,) tensors or constants."""
    elems = [e if isinstance(e, torch.Tensor) else torch.full_like(ref, e)
             for row in rows for e in row]
    return torch.stack(elems, dim=-1).reshape(ref.shape[0], len(rows), len(rows[0]))


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Elementwise products summed, not `@`: with TF32 enabled a float32 matmul keeps 10 mantissa
    # bits, which would blur scale factors and break the exactness of integer transforms.
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(dim=-2)


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], cos)


def geometric_matrix(x: torch.Tensor, p: torch.Tensor, mult: Mapping[str, float],
                     draws: _Draws, strengths: Mapping[str, float] = STRENGTHS) -> torch.Tensor:
    """The (B, 3, 3) inverse transform (output pixel -> input pixel, centred pixel units)."""
    b, _, h, w = x.shape
    one = torch.ones(b, dtype=torch.float32, device=x.device)
    g = torch.eye(3, dtype=torch.float32, device=x.device).expand(b, 3, 3)
    if mult["xflip"] > 0:
        i = draws.gate(torch.floor(draws.rand() * 2), 0.0, mult["xflip"] * p)
        g = _matmul(g, _scale2d(1 - 2 * i, one))
    if mult["rotate90"] > 0:
        k = draws.gate(torch.floor(draws.rand() * 4), 0.0, mult["rotate90"] * p)
        # cos and sin of k quarter turns, exactly (a table lookup would copy from the host).
        cos = (k == 0).float() - (k == 2).float()
        sin = (k == 1).float() - (k == 3).float()
        g = _matmul(g, _rotate2d(cos, sin))
    if mult["xint"] > 0:
        t = draws.gate((draws.rand(2) * 2 - 1) * strengths["xint_max"], 0.0, mult["xint"] * p)
        g = _matmul(g, _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h)))
    if mult["scale"] > 0:
        s = draws.gate(torch.exp2(draws.randn() * strengths["scale_std"]), 1.0,
                       mult["scale"] * p)
        g = _matmul(g, _scale2d(1 / s, 1 / s))
    p_rot = 1 - torch.sqrt((1 - mult["rotate"] * p).clamp(0, 1))
    rotate_range = math.pi * strengths["rotate_max"]
    if mult["rotate"] > 0:
        theta = draws.gate((draws.rand() * 2 - 1) * rotate_range, 0.0, p_rot)
        g = _matmul(g, _rotate2d(torch.cos(theta), torch.sin(theta)))
    if mult["aniso"] > 0:
        s = draws.gate(torch.exp2(draws.randn() * strengths["aniso_std"]), 1.0,
                       mult["aniso"] * p)
        g = _matmul(g, _scale2d(1 / s, s))
    if mult["rotate"] > 0:
        theta = draws.gate((draws.rand() * 2 - 1) * rotate_range, 0.0, p_rot)
        g = _matmul(g, _rotate2d(torch.cos(theta), torch.sin(theta)))
    if mult["xfrac"] > 0:
        t = draws.gate(draws.randn(2) * strengths["xfrac_std"], 0.0, mult["xfrac"] * p)
        g = _matmul(g, _translate2d(-t[:, 0] * w, -t[:, 1] * h))
    return g


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Integer indices folded into [0, n) by reflection about 0 and n - 1 (no edge repeat)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i < n, i, period - i)


def warp(x: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` (B, C, H, W) at ``g_inv`` @ (output pixel), bilinearly, from the
    reflect-extended image. Differentiable w.r.t. ``x``; integer coordinates read pixels
    exactly."""
    b, c, h, w = x.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32, device=x.device) - cx
    ys = torch.arange(h, dtype=torch.float32, device=x.device) - cy
    m = g_inv.reshape(b, 9, 1, 1).unbind(1)
    # Source coordinates in pixel-index units: (B, H, W) each.
    sx = m[0] * xs[None, None, :] + m[1] * ys[None, :, None] + m[2] + cx
    sy = m[3] * xs[None, None, :] + m[4] * ys[None, :, None] + m[5] + cy
    x0, y0 = torch.floor(sx), torch.floor(sy)
    wx = (sx - x0).to(x.dtype).reshape(b, 1, h * w)
    wy = (sy - y0).to(x.dtype).reshape(b, 1, h * w)
    x0, y0 = x0.long(), y0.long()
    flat = x.reshape(b, c, h * w)

    def tap(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        index = (_reflect(yi, h) * w + _reflect(xi, w)).reshape(b, 1, h * w)
        return flat.gather(2, index.expand(b, c, h * w))

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return (top * (1 - wy) + bottom * wy).reshape(b, c, h, w)


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t)


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s)


_LUMA = 1 / math.sqrt(3)


def _rotate3d(theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the luma axis (Rodrigues), as (B, 4, 4)."""
    vx = vy = vz = _LUMA
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix([
        [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
        [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
        [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
        [0, 0, 0, 1]], theta)


def color_matrix(x: torch.Tensor, p: torch.Tensor, mult: Mapping[str, float],
                 draws: _Draws, strengths: Mapping[str, float] = STRENGTHS) -> torch.Tensor:
    """The (B, 4, 4) homogeneous colour transform (input RGB1 -> output RGB1)."""
    b, ch = x.shape[:2]
    eye = torch.eye(4, dtype=torch.float32, device=x.device)
    cm = eye.expand(b, 4, 4)
    # The luma axis; its outer product projects a colour onto the grey diagonal.
    v = torch.cat([torch.full((3,), _LUMA, device=x.device), torch.zeros(1, device=x.device)])
    vv = torch.outer(v, v)
    if mult["brightness"] > 0:
        t = draws.gate(draws.randn() * strengths["brightness_std"], 0.0,
                       mult["brightness"] * p)
        cm = _matmul(_translate3d(t), cm)
    if mult["contrast"] > 0:
        s = draws.gate(torch.exp2(draws.randn() * strengths["contrast_std"]), 1.0,
                       mult["contrast"] * p)
        cm = _matmul(_scale3d(s), cm)
    if mult["lumaflip"] > 0:
        i = draws.gate(torch.floor(draws.rand() * 2), 0.0, mult["lumaflip"] * p)
        cm = _matmul(eye - 2 * vv * i[:, None, None], cm)
    if mult["hue"] > 0 and ch > 1:
        theta = draws.gate((draws.rand() * 2 - 1) * math.pi * strengths["hue_max"], 0.0,
                           mult["hue"] * p)
        cm = _matmul(_rotate3d(theta), cm)
    if mult["saturation"] > 0 and ch > 1:
        s = draws.gate(torch.exp2(draws.randn() * strengths["saturation_std"]), 1.0,
                       mult["saturation"] * p)
        cm = _matmul(eye + (s - 1)[:, None, None] * (eye - vv), cm)
    return cm


def apply_color(x: torch.Tensor, cm: torch.Tensor) -> torch.Tensor:
    """Apply (B, 4, 4) colour matrices to RGB (C = 3) or grey (C = 1, the rows averaged, as
    the reference) images. Linear in ``x``."""
    b, ch, h, w = x.shape
    cm = cm.to(x.dtype)
    flat = x.reshape(b, ch, h * w)
    if ch == 3:
        out = cm[:, :3, 3:]
        for k in range(3):
            out = out + cm[:, :3, k:k + 1] * flat[:, k:k + 1]
    elif ch == 1:
        row = cm[:, :3, :].mean(dim=1)
        out = flat * row[:, :3].sum(dim=1)[:, None, None] + row[:, 3][:, None, None]
    else:
        raise ValueError(f"ADA colour ops need RGB (3) or grey (1) images, got {ch} channels")
    return out.reshape(b, ch, h, w)


def ada_augment(
    x: torch.Tensor,
    p: torch.Tensor | float,
    multipliers: str | Mapping[str, float] = "bgc",
    generator: torch.Generator | None = None,
    strengths: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Augment an NCHW batch at strength ``p``: each op fires per sample with probability
    ``p * multiplier``. Differentiable w.r.t. ``x``; samples whose composite geometric (colour)
    transform is the identity pass through bitwise unchanged, so p = 0 is the identity.

    Args:
        x: images (B, C, H, W), floating point; colour ops need C in {1, 3}.
        p: augmentation strength, a Python float or a 0-dim tensor (kept on the device: no
            host sync); values above 1 act as 1.
        multipliers: a pipe name from ``PIPES`` or an ``{op: multiplier}`` mapping.
        generator: source of every random draw (on ``x.device``), in the module's order.
        strengths: overrides for ``STRENGTHS`` entries.

    Returns:
        The augmented batch, same shape, dtype and device as ``x``.
    """
    if x.dim() != 4:
        raise ValueError(f"ada_augment expects an NCHW tensor, got shape {tuple(x.shape)}")
    mult = pipe_multipliers(multipliers)
    st = {**STRENGTHS, **(strengths or {})}
    # A fill, not as_tensor, for a float: a host-to-device copy would synchronise on CUDA.
    p = (p.to(device=x.device, dtype=torch.float32) if isinstance(p, torch.Tensor)
         else torch.full((), float(p), device=x.device))
    draws = _Draws(x.shape[0], x.device, generator)
    if any(mult[op] > 0 for op in GEOMETRIC_OPS):
        g = geometric_matrix(x, p, mult, draws, st)
        eye = torch.eye(3, dtype=torch.float32, device=x.device)
        moved = (g != eye).flatten(1).any(dim=1)
        x = torch.where(moved[:, None, None, None], warp(x, g), x)
    if any(mult[op] > 0 for op in COLOR_OPS):
        cm = color_matrix(x, p, mult, draws, st)
        eye = torch.eye(4, dtype=torch.float32, device=x.device)
        changed = (cm != eye).flatten(1).any(dim=1)
        x = torch.where(changed[:, None, None, None], apply_color(x, cm), x)
    return x
