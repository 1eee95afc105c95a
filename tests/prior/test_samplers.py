"""Evaluation's prior samplers: fitted parameters, determinism, unit-norm draws, errors."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F

from tuneable_gan.config import PriorConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.prior import PRIOR_SAMPLERS, fit_sampler

SIZES = (40, 80, 120)


def clusters(sizes: tuple[int, ...] = SIZES, d: int = 6, sd: float = 0.05,
             seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Unit-norm points around the first len(sizes) axes of R^d; (all points, each group)."""
    gen = torch.Generator().manual_seed(seed)
    groups = [F.normalize(torch.eye(d)[j] + sd * torch.randn(n, d, generator=gen), dim=1)
              for j, n in enumerate(sizes)]
    return torch.cat(groups), groups


def cfg(sampler: str, **kw: object) -> PriorConfig:
    return PriorConfig(network="random_digits", sampler=sampler, **kw)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def nearest(rows: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    return torch.cdist(rows.double(), centres.double()).argmin(dim=1)


def test_names_are_the_configs() -> None:
    field = next(f for f in dataclasses.fields(PriorConfig) if f.name == "sampler")
    assert set(PRIOR_SAMPLERS.names()) == set(field.metadata["choices"])


def test_gmm_fits_the_clusters() -> None:
    x, groups = clusters()
    s = fit_sampler(x, cfg("gmm", components=3))
    x64 = x.double()
    assert s.reg_covar == pytest.approx(1e-3 * x64.var(dim=0, unbiased=False).mean().item())
    order = nearest(torch.stack([g.mean(0) for g in groups]), s.means)
    assert sorted(order.tolist()) == [0, 1, 2]
    for j, g in enumerate(groups):
        g = g.double()
        torch.testing.assert_close(s.means[order[j]], g.mean(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(s.variances[order[j]],
                                   g.var(0, unbiased=False) + s.reg_covar, atol=1e-6, rtol=0)
        assert s.weights[order[j]].item() == pytest.approx(SIZES[j] / sum(SIZES), abs=1e-6)
    assert s.description == "gmm(K=3,diag)"


def test_gmm_sample_is_the_mixture_formula() -> None:
    s = fit_sampler(clusters()[0], cfg("gmm", components=3))
    g = gen(11)
    comp = torch.multinomial(s.weights, 50, replacement=True, generator=g)
    eps = torch.randn(50, 6, generator=g, dtype=torch.float64)
    raw = s.means[comp] + s.variances[comp].sqrt() * eps
    expected = (raw / raw.norm(dim=1, keepdim=True)).float()
    torch.testing.assert_close(s.sample(50, gen(11)), expected)


@pytest.mark.parametrize("name", ["gmm", "kmeans", "train"])
def test_fits_are_deterministic_and_draws_come_from_the_generator(name: str) -> None:
    x = clusters()[0]
    a, b = fit_sampler(x, cfg(name, components=3)), fit_sampler(x, cfg(name, components=3))
    for attr in ("means", "variances", "weights", "centres", "spread", "sizes", "priors"):
        if hasattr(a, attr):
            assert torch.equal(getattr(a, attr), getattr(b, attr)), attr
    state = torch.get_rng_state()
    draw = a.sample(300, gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(draw, b.sample(300, gen(1)))
    assert not torch.equal(draw, a.sample(300, gen(2)))
    assert draw.shape == (300, 6) and draw.dtype == torch.float32 and draw.device.type == "cpu"
    torch.testing.assert_close(draw.norm(dim=1), torch.ones(300))


def test_kmeans_noise_zero_draws_the_normalised_centres() -> None:
    x, groups = clusters()
    s = fit_sampler(x, cfg("kmeans", components=3, noise=0.0))
    assert sorted(s.sizes.tolist()) == sorted(SIZES)
    order = nearest(torch.stack([g.mean(0) for g in groups]), s.centres)
    for j, g in enumerate(groups):
        torch.testing.assert_close(s.centres[order[j]], g.double().mean(0), atol=0.02, rtol=0)
    unit = (s.centres / s.centres.norm(dim=1, keepdim=True)).float()
    draw = s.sample(6000, gen(0))
    which = nearest(draw, unit)
    assert torch.equal(draw, unit[which])  # exactly a centre, no noise
    share = torch.bincount(which, minlength=3).double() / 6000
    torch.testing.assert_close(share, s.sizes.double() / 240, atol=0.03, rtol=0)
    assert s.description == "kmeans(K=3,noise=0)"


def test_kmeans_spread_and_noise() -> None:
    x, _ = clusters(sizes=(30, 50), sd=0.02)  # tight: mini-batch k-means finds the lone point
    lone = F.normalize(torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]]), dim=1)
    s = fit_sampler(torch.cat([x, lone]), cfg("kmeans", components=3, noise=0.5))
    x64 = torch.cat([x, lone]).double()
    labels = nearest(x64, s.centres)
    solo = int((s.sizes == 1).nonzero())
    own = []
    for j in range(3):
        if j != solo:
            members = x64[labels == j]
            own.append(((members - s.centres[j]) ** 2).mean(0).sqrt())
            torch.testing.assert_close(s.spread[j], own[-1])
    torch.testing.assert_close(s.spread[solo], (own[0] + own[1]) / 2)
    draw = s.sample(500, gen(3))
    cos = draw.double() @ F.normalize(s.centres, dim=1).T
    assert (cos.max(dim=1).values > 0.9).all() and (cos.max(dim=1).values < 1 - 1e-6).all()
    assert s.description == "kmeans(K=3,noise=0.5)"


def test_train_draws_stored_priors_uniformly() -> None:
    x = F.normalize(torch.randn(5, 4, generator=gen(0)), dim=1)
    s = fit_sampler(x, cfg("train", components=50))  # K is not used: no error
    draw = s.sample(2000, gen(4))
    which = nearest(draw, x)
    torch.testing.assert_close(draw, x[which])
    share = torch.bincount(which, minlength=5).double() / 2000
    torch.testing.assert_close(share, torch.full((5,), 0.2, dtype=torch.float64), atol=0.04,
                               rtol=0)
    assert s.description == "train-priors(closeness to training set, not novelty)"


@pytest.mark.parametrize("name", ["gmm", "kmeans"])
def test_more_components_than_priors(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        fit_sampler(clusters(sizes=(3, 4))[0], cfg(name, components=8))
    msg = str(err.value)
    assert "\n" not in msg and "prior.components=8" in msg and "N=7" in msg


def test_unknown_sampler() -> None:
    with pytest.raises(ConfigError, match="prior.sampler=bogus"):
        fit_sampler(clusters()[0], dataclasses.replace(cfg("gmm"), sampler="bogus"))


def test_gmm_warns_once_when_n_is_at_most_d() -> None:
    x = clusters(sizes=(3, 3), d=8)[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        s = fit_sampler(x, cfg("gmm", components=2))
    ours = [w for w in seen if "N <= d" in str(w.message)]
    assert len(ours) == 1 and "\n" not in str(ours[0].message)
    assert "diagonal" in str(ours[0].message) and "regularised" in str(ours[0].message)
    torch.testing.assert_close(s.sample(10, gen(0)).norm(dim=1), torch.ones(10))
