"""A warning for a G EMA too slow for the run: every evaluation (FID) and sample grid is of
G_ema, and an EMA that cannot forget where it started reports on that start, not on training.

The weight G_ema still gives its starting state after the run (``ema.ema_decay``'s schedule):

* fixed decay ``optim.g_ema`` = b from phase step ``optim.g_ema_start`` = s over
  ``train.steps`` = T G steps (before s each update copies G, so the start is G at step s,
  the random initialisation when s = 0): b^(T - s);
* half-life ``optim.g_ema_kimg`` (StyleGAN2): each update decays by 0.5^(batch / half-life), so
  after T updates 0.5^(T x optim.batch_size / (kimg x 1000)); with ``optim.g_ema_rampup`` the
  first update copies G (a half-life of 0 images) and nothing of the start is left.

Above ``LEFT_LIMIT`` the run warns, naming the keys, the weight left and a value that fits.
``tuneable-gan train`` prints it once at the start, ``validate`` and ``sweep`` once per distinct
warning of a space (``cell_warnings``), never each trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from tuneable_gan.config import Config

LEFT_LIMIT = 0.05  # most weight on the start an evaluated G_ema may keep without a warning


def weight_left(cfg: Config) -> float:
    """The weight G_ema gives its starting state at the end of the run (module docstring)."""
    o, steps = cfg.optim, cfg.train.steps
    if o.g_ema_kimg is not None:
        if o.g_ema_rampup is not None:
            return 0.0
        return 0.5 ** (steps * o.batch_size / (o.g_ema_kimg * 1000))
    n = steps - o.g_ema_start
    return o.g_ema ** n if n > 0 and o.g_ema > 0 else 0.0


def _at_most(x: float) -> str:
    """``x`` (a decay below 1) rounded down where it differs from 1 in the second significant
    digit, so the value shown still fits: 0.98513 -> 0.985, 0.99985022 -> 0.99985."""
    gap = 1.0 - x
    digits = 1 - math.floor(math.log10(gap))  # decimals that keep two digits of the gap
    step = 10.0 ** -digits
    return f"{1.0 - math.ceil(round(gap / step, 6)) * step:.{digits}f}".rstrip("0")


def _down(x: float) -> str:
    """``x`` > 0 to two significant digits, rounded down: 1.4808 -> 1.4, 148.08 -> 140."""
    e = math.floor(math.log10(x)) - 1
    return f"{math.floor(round(x / 10.0 ** e, 6)) * 10.0 ** e:.{max(0, -e)}f}"


def ema_warning(cfg: Config) -> str | None:
    """The warning for ``cfg`` (one line, under ``clip.MAX_LINE``), or None when G_ema keeps
    at most ``LEFT_LIMIT`` of its start."""
    left = weight_left(cfg)
    if left <= LEFT_LIMIT:
        return None
    o, steps = cfg.optim, cfg.train.steps
    start = "model.init_from's G" if cfg.model.init_from else "G's random initialisation"
    if o.g_ema_kimg is not None:
        images, half = steps * o.batch_size, o.g_ema_kimg * 1000
        what = (f"optim.g_ema_kimg={o.g_ema_kimg:g} over train.steps={steps} ({images} images "
                f"at batch {o.batch_size}, half-life {half:g})")
        kept = f"0.5^({images}/{half:g}) = {left:.4f}"
        need = math.ceil(math.log2(1 / LEFT_LIMIT) * half / o.batch_size)
        fit = (f"optim.g_ema_kimg <= {_down(images / math.log2(1 / LEFT_LIMIT) / 1000)}, "
               f"optim.g_ema_rampup, or train.steps >= {need}")
    else:
        n = steps - o.g_ema_start
        if o.g_ema_start:
            start = f"G at step {o.g_ema_start}"
        what = f"optim.g_ema={o.g_ema:g} over train.steps={steps}" + (
            f" from optim.g_ema_start={o.g_ema_start}" if o.g_ema_start else "")
        kept = f"{o.g_ema:g}^{n} = {left:.4f}"
        need = o.g_ema_start + math.ceil(math.log(LEFT_LIMIT) / math.log(o.g_ema))
        fit = (f"optim.g_ema <= {_at_most(LEFT_LIMIT ** (1 / n))} ({LEFT_LIMIT:g}^(1/{n})) "
               f"or train.steps >= {need}")
    return (f"{what} leaves G_ema {kept} of {start} (> {LEFT_LIMIT:g}): the FID and samples, "
            f"all of G_ema, mostly show that, not the trained G; use {fit}")


def cell_warnings(cells: Iterable[tuple[dict[str, Any], Config]]) -> list[str]:
    """``ema_warning`` of a sweep's cells ((params, config) each), once per distinct warning,
    naming the first cell that has it and how many of the cells do."""
    found: dict[str, list[Any]] = {}
    total = 0
    for params, cfg in cells:
        total += 1
        w = ema_warning(cfg)
        if w is not None:
            found.setdefault(w, [params, 0])[1] += 1
    out = []
    for w, (params, n) in found.items():
        first = ", ".join(f"{k}={v!r}" for k, v in params.items())
        # Last: a clipped line loses the cells, not the value that fits.
        where = "every cell" if n == total else f"{n} of {total} cells checked, first {first}"
        out.append(f"{w} [{where}]")
    return out
