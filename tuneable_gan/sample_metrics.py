"""Metrics computed here rather than by torch-fidelity: the 1-D toy's modes and Wasserstein-1
distance, and density and coverage (Naeem et al. 2020) on extractor features. Pure functions of
samples or features; ``metrics.Evaluator`` calls them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

TOY_TOLERANCE = 0.5  # a sample within this distance of a real point counts towards that mode
TOY_MIN_SHARE = 0.1  # share of all samples a mode needs to count as covered
DC_K = 5  # Naeem et al.'s k for density and coverage


# ---------------------------------------------------------------------------------------------
# toy metrics


def modes_covered(samples: Tensor | np.ndarray, modes: Sequence[float],
                  tol: float = TOY_TOLERANCE, min_share: float = TOY_MIN_SHARE) -> int:
    """How many ``modes`` have at least ``min_share`` of all samples within ``tol`` of them."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    return int(sum(np.mean(np.abs(x - m) <= tol) >= min_share for m in modes))


def wasserstein1(samples: Tensor | np.ndarray, support: Sequence[float]) -> float:
    """Exact 1-D Wasserstein-1 distance between the samples (equal weights) and the uniform
    mixture of the points ``support``: the integral of |F_samples - F_support| over the line."""
    u = np.sort(np.asarray(samples, dtype=np.float64).reshape(-1))
    v = np.sort(np.asarray(support, dtype=np.float64).reshape(-1))
    grid = np.sort(np.concatenate([u, v]))
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * np.diff(grid)))


# ---------------------------------------------------------------------------------------------
# density and coverage


def _blocks(x: Tensor, size: int) -> list[tuple[int, Tensor]]:
    return [(a, x[a:a + size]) for a in range(0, len(x), size)]


def _distances(a: Tensor, b: Tensor) -> Tensor:
    # float64 per block: the k-NN radii and ball tests compare distances that can be close.
    return torch.cdist(a.to(torch.float64), b.to(torch.float64))


@torch.no_grad()
def density_coverage(real: Tensor, fake: Tensor, k: int = DC_K,
                     block: int = 2048) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of ``fake`` (M, F) against ``real`` (N, F).

    With r_i the distance from real X_i to its k-th nearest other real point and
    B_i = {y : |y - X_i| < r_i} (an open ball, as the authors' code compares with ``<``):
    density = 1/(kM) sum_j sum_i 1[Y_j in B_i] (about 1 when fakes are distributed like the
    reals, higher when they crowd dense regions, 0 when no fake is near any real) and
    coverage = 1/N sum_i 1[some Y_j in B_i] (the share of reals with a fake nearby, in [0, 1]).
    Computed in blocks of ``block`` rows, on the tensors' device.
    """
    n = len(real)
    if n <= k:
        raise ValueError(f"density/coverage with k={k} needs more than {k} real points, got {n}")
    # k-th nearest other real: the (k+1)-th smallest distance, the point itself being the first;
    # each block keeps only its k+1 smallest per row, so memory stays at block x block.
    radii = torch.cat([
        torch.cat([_distances(xa, xb).topk(min(k + 1, len(xb)), dim=1, largest=False).values
                   for _, xb in _blocks(real, block)], dim=1).kthvalue(k + 1, dim=1).values
        for _, xa in _blocks(real, block)])
    inside = 0
    nearest = torch.full((n,), math.inf, dtype=torch.float64, device=real.device)
    for _, yb in _blocks(fake, block):
        for a, xb in _blocks(real, block):
            d = _distances(yb, xb)  # (fakes in block, reals in block)
            inside += int((d < radii[a:a + len(xb)]).sum())
            nearest[a:a + len(xb)] = torch.minimum(nearest[a:a + len(xb)], d.min(dim=0).values)
    density = inside / (k * len(fake))
    coverage = float((nearest < radii).double().mean())
    return density, coverage
