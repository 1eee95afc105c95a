"""The G EMA update of every G step (docs/methods.md section 7)."""

from __future__ import annotations

import torch
from torch import nn

from tuneable_gan.config import OptimConfig


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, decay: float, buffers: bool = True) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G over the whole state (``buffers``: BN statistics
    and spectral-norm vectors averaged too, the BigGAN reference) or over the parameters only
    with the buffers copied from G (the SNGAN reference); integer buffers are copied."""
    src = G.state_dict()
    # Parameter names equal their state_dict keys (spectral norm's raw weight included).
    averaged = None if buffers else {k for k, _ in G.named_parameters()}
    for k, t in G_ema.state_dict().items():
        if t.is_floating_point() and (averaged is None or k in averaged):
            t.lerp_(src[k], 1.0 - decay)
        else:
            t.copy_(src[k])


def ema_decay(o: OptimConfig, phase_step: int, nimg: int) -> float:
    """The decay of this G step's EMA update. With ``o.g_ema_kimg`` (StyleGAN2,
    stylegan2-ada-pytorch ``training_loop.py``): a half-life of ``g_ema_kimg * 1000`` real images,
    ``0.5 ** (batch_size / half_life)``, the half-life at most ``nimg * g_ema_rampup`` (``nimg``:
    the real images shown before this iteration), so the first update copies G. Otherwise the
    fixed ``g_ema``, 0 (a copy) before phase step ``g_ema_start``."""
    if o.g_ema_kimg is None:
        return o.g_ema if phase_step >= o.g_ema_start else 0.0
    half_life = o.g_ema_kimg * 1000
    if o.g_ema_rampup is not None:
        half_life = min(half_life, nimg * o.g_ema_rampup)
    return 0.5 ** (o.batch_size / max(half_life, 1e-8))
