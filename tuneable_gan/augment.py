"""DiffAugment: differentiable, per-sample augmentation of real and fake images.

Follows the reference semantics of mit-han-lab/data-efficient-gans (DiffAugment_pytorch.py),
as specified in docs/methods.md section 2. Every random number is drawn from an optional
``torch.Generator`` so that a run is bitwise reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

_TRANSLATION_RATIO = 1 / 8
_CUTOUT_RATIO = 1 / 2


def parse_policy(policy: str) -> tuple[str, ...]:
    """Expand a comma-separated policy string into the ordered tuple of primitive ops.

    ``'color,translation,cutout'`` gives
    ``('brightness', 'saturation', 'contrast', 'translation', 'cutout')``; ``''`` gives ``()``.
    Whitespace is ignored. An unknown op raises ``ValueError`` naming the valid ops.
    """
    names = [p for p in "".join(policy.split()).split(",") if p]
    unknown = [p for p in names if p not in AUGMENT_FNS]
    if unknown:
        raise ValueError(
            f"unknown DiffAugment op(s) {unknown!r} in policy {policy!r}; "
            f"valid ops: {', '.join(OPS)}"
        )
    return tuple(op for p in names for op in _NAMES[p])


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One U[0, 1) draw per sample, shaped (B, 1, 1, 1) to broadcast over C, H, W."""
    return torch.rand(
        x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device, generator=generator
    )


def _randint(
    high: int, x: torch.Tensor, generator: torch.Generator | None, low: int = 0
) -> torch.Tensor:
    """One integer in [low, high) per sample, shape (B,)."""
    return torch.randint(
        low, high, (x.shape[0],), device=x.device, generator=generator
    )


def _brightness(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return x + (_uniform(x, g) - 0.5)


def _saturation(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x, g) * 2) + mean


def _contrast(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, g) + 0.5) + mean


def _translation(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    b, c, h, w = x.shape
    shift_h = int(h * _TRANSLATION_RATIO + 0.5)
    shift_w = int(w * _TRANSLATION_RATIO + 0.5)
    # Integer pixel shifts (not a float fraction of the size), H axis drawn before W.
    t_h = _randint(shift_h + 1, x, g, low=-shift_h)
    t_w = _randint(shift_w + 1, x, g, low=-shift_w)
    # Zero-pad by one pixel and clamp indices into the padded image: every source pixel
    # outside the image then reads a 0 (mid-gray), never a wrapped or reflected pixel.
    padded = F.pad(x, (1, 1, 1, 1))
    rows = torch.arange(h, device=x.device)[None, :] + t_h[:, None] + 1
    cols = torch.arange(w, device=x.device)[None, :] + t_w[:, None] + 1
    rows = rows.clamp(0, h + 1)
    cols = cols.clamp(0, w + 1)
    # Flat index into each padded (H+2)x(W+2) plane; gather keeps the op differentiable.
    index = (rows[:, :, None] * (w + 2) + cols[:, None, :]).reshape(b, 1, h * w)
    out = padded.reshape(b, c, -1).gather(2, index.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def _cutout(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    _, _, h, w = x.shape
    size_h = int(h * _CUTOUT_RATIO + 0.5)
    size_w = int(w * _CUTOUT_RATIO + 0.5)
    # Reference range for the centre: one extra position when the size is even.
    off_h = _randint(h + (1 - size_h % 2), x, g)
    off_w = _randint(w + (1 - size_w % 2), x, g)
    start_h = (off_h - size_h // 2)[:, None]
    start_w = (off_w - size_w // 2)[:, None]
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    # Comparing image indices against the square's bounds equals clamping the square into
    # the image: the part that falls outside is simply dropped.
    in_h = (rows >= start_h) & (rows < start_h + size_h)
    in_w = (cols >= start_w) & (cols < start_w + size_w)
    keep = ~(in_h[:, :, None] & in_w[:, None, :])
    # Multiply (not in-place assign) so gradients stay exact: 0 at masked pixels, 1 elsewhere.
    return x * keep[:, None].to(x.dtype)


# The one op table (as the reference's AUGMENT_FNS): a policy name -> its primitive ops, in
# order. "color" is the three colour ops in the reference's order; config validation, policy
# parsing and the ops all read this dict.
Op = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
AUGMENT_FNS: dict[str, tuple[Op, ...]] = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
    "brightness": (_brightness,),
    "saturation": (_saturation,),
    "contrast": (_contrast,),
}
OPS: tuple[str, ...] = tuple(AUGMENT_FNS)
_NAMES: dict[str, tuple[str, ...]] = {
    name: tuple(f.__name__.lstrip("_") for f in fns) for name, fns in AUGMENT_FNS.items()}
_PRIMITIVE: dict[str, Op] = {f.__name__.lstrip("_"): f for fns in AUGMENT_FNS.values()
                             for f in fns}


def diff_augment(
    x: torch.Tensor,
    policy: str | tuple[str, ...],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply DiffAugment to an NCHW batch of images in [-1, 1].

    Ops run in policy order; every random draw is per sample and comes from ``generator``
    (which must live on ``x.device``; ``None`` uses the global RNG). The result is
    differentiable w.r.t. ``x``. An empty policy returns ``x`` itself.

    Args:
        x: images of shape (B, C, H, W), any C. Channels-last input must be permuted first.
        policy: comma-separated op names (see ``AUGMENT_FNS``) or a tuple of them.
        generator: source of all random numbers, for reproducible and resumable runs.

    Returns:
        The augmented batch, same shape, dtype and device as ``x``.
    """
    ops = parse_policy(policy if isinstance(policy, str) else ",".join(policy))
    if not ops:
        return x
    if x.dim() != 4:
        raise ValueError(f"diff_augment expects an NCHW tensor, got shape {tuple(x.shape)}")
    for op in ops:
        x = _PRIMITIVE[op](x, generator)
    return x.contiguous()
