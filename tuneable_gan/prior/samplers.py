"""Where evaluation's priors come from (``prior.sampler``): a density fitted to the stored
training priors, or the stored priors themselves.

* ``gmm``: a diagonal Gaussian mixture of K components (scikit-learn, float64);
* ``kmeans``: K mini-batch k-means centres, each drawn with probability proportional to its
  cluster's size, plus ``prior.noise`` times the cluster's per-dimension spread of Gaussian noise;
* ``train``: a stored prior, uniformly (it measures closeness to the training set, not novelty).

Fitting is deterministic for ``prior.seed``; sampling draws from the caller's generator only
(never the global RNG), on CPU, and every sample is re-normalised to unit L2 norm, like the
stored priors G was trained on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import MiniBatchKMeans
from sklearn.mixture import GaussianMixture
from torch import Tensor

from tuneable_gan.config import PriorConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.registry import Registry

# reg_covar of the GMM as a share of the data's mean per-dimension variance (see GmmSampler).
GMM_REG_SHARE = 1e-3


class FittedSampler(Protocol):
    """A fitted source of priors: ``sample(n, generator)`` is (n, d) float32 on CPU, unit-norm
    rows, drawn from ``generator`` only; ``description`` names it for ``eval_protocol``."""

    description: str

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` priors, (n, d) float32, rows of unit L2 norm."""
        ...


PRIOR_SAMPLERS: Registry[Callable[[Tensor, PriorConfig], FittedSampler]] = Registry(
    "prior sampler")


def fit_sampler(features: Tensor, cfg: PriorConfig) -> FittedSampler:
    """Fit ``cfg.sampler`` to the stored priors ``features`` (N, d)."""
    if cfg.sampler not in PRIOR_SAMPLERS:
        raise ConfigError(f"prior.sampler={cfg.sampler} is not available; valid: "
                          f"{', '.join(PRIOR_SAMPLERS.names())}")
    assert features.dim() == 2 and len(features) > 0, f"features (N, d): {features.shape}"
    return PRIOR_SAMPLERS.get(cfg.sampler)(features.detach().cpu(), cfg)


def check_components(cfg: PriorConfig, n: int) -> None:
    """ConfigError (one line) when K = ``prior.components`` exceeds the ``n`` stored priors."""
    if cfg.components > n:
        raise ConfigError(f"prior.components={cfg.components} is more than the {n} stored "
                          f"priors (N={n}); valid: 1..{n}")


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=1).float()


class GmmSampler:
    """A diagonal Gaussian mixture of the priors.

    ``reg_covar`` (added to every variance) is ``GMM_REG_SHARE`` times the data's mean
    per-dimension variance: scale-free (unit-norm features in d dimensions have per-dimension
    variances near 1/d, so sklearn's absolute 1e-6 means different things at d=128 and d=4096),
    negligible against real spreads, yet it keeps a dimension that is constant inside a component
    (ReLU zeros, few members) from a zero variance and an infinite density.
    """

    def __init__(self, features: Tensor, cfg: PriorConfig) -> None:
        check_components(cfg, len(features))
        x = features.double().numpy()
        n, d = x.shape
        self.reg_covar = float(max(GMM_REG_SHARE * x.var(axis=0).mean(), 1e-12))
        if n <= d:
            warnings.warn(f"prior.sampler=gmm: {n} priors in {d} dimensions (N <= d): the mixture "
                          f"is diagonal and regularised (reg_covar={self.reg_covar:.3g}); a full "
                          "covariance would be singular", stacklevel=3)
        gmm = GaussianMixture(n_components=cfg.components, covariance_type="diag",
                              reg_covar=self.reg_covar, random_state=cfg.seed).fit(x)
        self.weights = torch.from_numpy(np.asarray(gmm.weights_, dtype=np.float64))
        self.means = torch.from_numpy(np.asarray(gmm.means_, dtype=np.float64))
        self.variances = torch.from_numpy(np.asarray(gmm.covariances_, dtype=np.float64))
        self.description = f"gmm(K={cfg.components},diag)"

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """A component per sample (by the mixture weights), then mean + sd * N(0, 1)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return _unit(self.means[comp] + self.variances[comp].sqrt() * eps)


class KMeansSampler:
    """K-means centres plus noise scaled by each cluster's spread.

    ``spread[j]``: the per-dimension root mean square of cluster j's members around its centre;
    a cluster of fewer than two members has none of its own and takes the mean spread of the
    clusters that have (zero when none has).
    """

    def __init__(self, features: Tensor, cfg: PriorConfig) -> None:
        check_components(cfg, len(features))
        x = features.double().numpy()
        km = MiniBatchKMeans(n_clusters=cfg.components, random_state=cfg.seed, n_init=3).fit(x)
        centres = np.asarray(km.cluster_centers_, dtype=np.float64)
        labels = km.predict(x)
        k = cfg.components
        sizes = np.bincount(labels, minlength=k)
        spread = np.zeros_like(centres)
        for j in range(k):
            if sizes[j] >= 2:
                spread[j] = np.sqrt(((x[labels == j] - centres[j]) ** 2).mean(axis=0))
        many = sizes >= 2
        if many.any():
            spread[~many] = spread[many].mean(axis=0)
        self.centres = torch.from_numpy(centres)
        self.sizes = torch.from_numpy(sizes.astype(np.int64))
        self.spread = torch.from_numpy(spread)
        self.noise = float(cfg.noise)
        self.description = f"kmeans(K={k},noise={cfg.noise:g})"

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """A centre per sample (by cluster size), plus noise * spread * N(0, 1)."""
        idx = torch.multinomial(self.sizes.double(), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.centres.shape[1], generator=generator, dtype=torch.float64)
        return _unit(self.centres[idx] + self.noise * self.spread[idx] * eps)


class TrainSampler:
    """The stored priors themselves, each equally likely."""

    description = "train-priors(closeness to training set, not novelty)"

    def __init__(self, features: Tensor, cfg: PriorConfig) -> None:
        self.priors = _unit(features.double())

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` stored priors drawn uniformly with replacement."""
        return self.priors[torch.randint(len(self.priors), (n,), generator=generator)]


PRIOR_SAMPLERS.register("gmm")(GmmSampler)
PRIOR_SAMPLERS.register("kmeans")(KMeansSampler)
PRIOR_SAMPLERS.register("train")(TrainSampler)
