"""The G EMA update of every G step (docs/methods.md section 7)."""

from __future__ import annotations

import torch
from torch import nn


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
