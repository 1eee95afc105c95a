"""Exact spectral norm for sampling, and the one way G generates for evaluation and pictures.

Why (docs/methods.md 6.1): torch's spectral-norm parametrization divides a weight by
sigma = u^T W v with its stored vectors ``_u``/``_v`` (in train mode after one power iteration
from them). The G EMA averages those vectors with the weights, and an average of unit vectors
is shorter than one and no longer W's singular pair, so G_ema's layers were divided by an
underestimated sigma (0.72-0.92 of the true one after 200 steps at decay 0.99, measured). The
BigGAN reference's own SN renormalises at every use; ``exact_spectral_norm_`` gives G_ema the
sigma its averaged weights actually have.

``generate(G, z, y, mode=..., batch_size=...)`` is what the Evaluator, ``GANTrainer.samples``
and the report's sample grids use: exact SN, G's BatchNorm in ``mode`` (``eval``: running
statistics; ``train``: each batch's own statistics, ``batch_size`` samples at a time, as the
BigGAN-CIFAR reference samples G_ema), no grad, and G's state (every buffer, BN statistics and
SN vectors included), its train/eval flags and the global RNG exactly as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

G_MODES = ("eval", "train")


@torch.no_grad()
def exact_spectral_norm_(module: nn.Module) -> int:
    """Set ``_u``/``_v`` of every torch spectral-norm parametrization inside ``module`` to the top
    left/right singular vectors of that layer's current weight; returns how many were set.

    Afterwards the sigma torch divides by (eval mode: u^T W v with the stored vectors; train
    mode: the same after its one power iteration, of which (u, v) is a fixed point) is the
    largest singular value of the layer's own weight, whatever averaging did to the vectors.
    Only ``_u``/``_v`` change (in place, on their device and dtype); weights are not touched.
    """
    count = 0
    for m in module.modules():
        if not parametrize.is_parametrized(m):
            continue
        for plist in m.parametrizations.values():
            # Each parametrization sees the output of the ones before it (usually SN is alone).
            w = plist.original
            for p in plist:
                if isinstance(p, _SpectralNorm) and w.ndim > 1:
                    _set_top_singular_pair(p, w)
                    count += 1
                was_training = p.training
                p.train(False)  # no power iteration while walking the chain
                try:
                    w = p(w)
                finally:
                    p.train(was_training)
    return count


def _set_top_singular_pair(p: _SpectralNorm, weight: Tensor) -> None:
    # torch's own reshape (dim permuted to the front, then flattened), so the matrix is the one
    # its sigma is computed from. A full SVD, not power iterations: exact to float precision even
    # when the top two singular values nearly coincide (where power iteration stalls), and cheap
    # for these layers (at most a few thousand columns, ~ms each, once per evaluation). float64
    # so the vectors are exact in the buffers' float32.
    mat = p._reshape_weight_to_matrix(weight).detach().to(torch.float64)
    if not torch.isfinite(mat).all():
        return  # a diverged G: its samples are not finite whatever sigma is (and SVD would fail)
    U, _, Vh = torch.linalg.svd(mat, full_matrices=False)
    u, v = U[:, 0], Vh[0].conj()
    # The pair is defined up to a joint sign: keep the stored one's, for continuity.
    if torch.real(torch.vdot(p._u.to(u.dtype), u)) < 0:
        u, v = -u, -v
    p._u.copy_(u.to(p._u.dtype))
    p._v.copy_(v.to(p._v.dtype))


def _device_of(G: nn.Module) -> torch.device:
    t = next(iter(G.parameters()), None)
    if t is None:
        t = next(iter(G.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


@contextlib.contextmanager
def sampling(G: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """G ready to generate inside the block: exact SN, every module in ``mode`` ("eval" or
    "train"), no grad, a forked global RNG; afterwards every buffer of G (BN running statistics
    and counters, SN vectors), every module's train flag and the RNG are as before, bitwise.

    Parameters are not snapshotted: nothing here changes them.
    """
    if mode not in G_MODES:
        raise ValueError(f"g_mode must be one of {', '.join(G_MODES)}, got {mode!r}")
    device = _device_of(G)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    buffers = {k: b.detach().clone() for k, b in G.named_buffers()}
    flags = [(m, m.training) for m in G.modules()]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        try:
            exact_spectral_norm_(G)
            G.train(mode == "train")
            yield G
        finally:
            for m, flag in flags:
                m.training = flag
            for k, b in G.named_buffers():
                b.copy_(buffers[k])


def generate_chunks(G: nn.Module, z: Tensor, y: Optional[Tensor], batch_size: int,
                    device: torch.device | str | None = None) -> Iterator[Tensor]:
    """G's outputs for ``z`` (and ``y``), ``batch_size`` latents per call, in order, on G's
    device. Call it inside ``sampling(G, mode)``: it only chunks and calls G. The last chunk is
    ``len(z) % batch_size`` latents when that is not 0 (in train mode it then normalises with the
    statistics of that smaller batch)."""
    device = _device_of(G) if device is None else torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for a in range(0, len(z), batch_size):
        zb = z[a:a + batch_size].to(device)
        yield G(zb) if y is None else G(zb, y[a:a + batch_size].to(device))


def generate(G: nn.Module, z: Tensor, y: Optional[Tensor] = None, *, mode: str = "eval",
             batch_size: Optional[int] = None) -> Tensor:
    """Samples of G for latents ``z`` (labels ``y`` for a conditional G), on the CPU.

    Exact spectral norm (``exact_spectral_norm_``), BatchNorm in ``mode`` (``eval``: running
    statistics, ``batch_size`` only bounds memory, None: all at once; ``train``: each batch of
    ``batch_size`` latents normalised with its own statistics, so the pictures depend on it and
    it is required), no grad; G's state, train flags and the global RNG are left as they were.
    """
    if mode == "train" and batch_size is None:
        raise ValueError("generate(mode='train') needs batch_size: the samples depend on it")
    with sampling(G, mode):
        bs = batch_size or max(1, len(z))
        return torch.cat([x.cpu() for x in generate_chunks(G, z, y, bs)])
