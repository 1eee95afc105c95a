"""The reference evaluation protocol (docs/methods.md 6.1, 6.2): G_ema sampled in train mode
(BatchNorm with each sampling batch's statistics) or eval mode, with the exact spectral norm;
improved precision/recall and density/coverage on FID's features; evaluation changes nothing
of the run; the protocol fingerprint. Each number is checked against an oracle written from the
reference's formula: the reference's sampling loop, torch-fidelity's own PRC, a plain numpy
density/coverage (Naeem et al. 2020), a hand computation.

The digits extractor is a seeded RANDOM DigitsCNN here (training the real one takes a minute
on 2 busy cores), in a private cache: every comparison below is between two computations on
the same features, which any fixed feature map serves.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from conftest import ReplayG, random_digits_cache
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from tuneable_gan import metrics
from tuneable_gan.config import DataConfig, EvalConfig, ModelConfig, from_dict
from tuneable_gan.data import RealData, load_data, to_uint8
from tuneable_gan.digits_cnn import (
    DIGITS_FIDELITY_NAME,
    DigitsFeatureExtractor,
    digits_classifier_path,
)
from tuneable_gan.errors import ConfigError
from tuneable_gan.metrics import Evaluator, eval_protocol
from tuneable_gan.models import DataSpec, build_models
from tuneable_gan.resolve import resolve
from tuneable_gan.sample_metrics import density_coverage
from tuneable_gan.trainer import update_ema

DIGITS32 = DataConfig(name="digits", resolution=32)
SPEC = DataSpec((3, 32, 32), 10)
N = 200  # four sampling batches of 50


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_digits_cache(tmp_path_factory.mktemp("tgan-cache-random-digits"))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(cache))


def ev(**kw: object) -> EvalConfig:
    base = dict(num_samples=N, reference="test", is_=False)
    return dataclasses.replace(EvalConfig(), **(base | kw))  # type: ignore[arg-type]


class Images(Dataset):
    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


def tiny_biggan() -> nn.Module:
    torch.manual_seed(0)
    G, _ = build_models(ModelConfig(arch="biggan", g_ch=4, d_ch=4, z_dim=8), SPEC)
    return G


def trained_ema() -> nn.Module:
    """A tiny conditional BigGAN G_ema after a few Adam steps of G and the trainer's EMA (SN
    vectors and BN statistics averaged too): its stored SN vectors are off."""
    G = tiny_biggan()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        z, y = torch.randn(16, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        loss = G(z, y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_ema(G_ema, G, 0.8)
    return G_ema


def with_true_singular_vectors(G: nn.Module) -> nn.Module:
    """Oracle for the exact spectral norm: a copy whose SN vectors are the top singular pair of
    each raw weight matrix (dim 0 flattened), from its own SVD."""
    G = copy.deepcopy(G)
    with torch.no_grad():
        for m in G.modules():
            if parametrize.is_parametrized(m, "weight"):
                w = m.parametrizations.weight.original.double().flatten(1)
                U, _, Vh = torch.linalg.svd(w, full_matrices=False)
                m.parametrizations.weight[0]._u.copy_(U[:, 0].float())
                m.parametrizations.weight[0]._v.copy_(Vh[0].float())
    return G


def reference_latents(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The documented latents: one seeded CPU generator, z ~ N(0, I) for all n at once, then
    uniform labels."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=gen)
    return z, torch.randint(0, 10, (n,), generator=gen)


# ---------------------------------------------------------------------------------------------
# (1) the reference's train-mode sampling


def reference_loop(G: nn.Module, z: Tensor, y: Tensor, batch: int = 50) -> Tensor:
    """Oracle: the BigGAN-CIFAR reference's sampling, G.train() then G(z_chunk, y_chunk) for
    chunks of G_batch_size, with the true SN vectors."""
    ref = with_true_singular_vectors(G).train()
    with torch.no_grad():
        return torch.cat([ref(z[a:a + batch], y[a:a + batch]) for a in range(0, len(z), batch)])


def test_reference_mode_fid_equals_the_reference_sampling_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    G = trained_ema()
    # The "real" set: the reference-mode samples of this G for other latents, so that FID is
    # sensitive to how G samples (random-feature FID against digits barely is).
    z_ref, y_ref = reference_latents(N, seed=7)
    reference = RealData("digits", reference_loop(G, z_ref, y_ref), y_ref, 10)
    monkeypatch.setattr(metrics, "load_data", lambda cfg, split: reference)
    fid_train = Evaluator(ev(g_mode="train", g_batch_size=50, batch_size=64), DIGITS32)(G)["fid"]
    z, y = reference_latents(N)
    fid_oracle = Evaluator(ev(batch_size=64), DIGITS32)(ReplayG(reference_loop(G, z, y)))["fid"]
    fid_eval = Evaluator(ev(g_mode="eval", batch_size=64), DIGITS32)(G)["fid"]
    fid_other_eval_batch = Evaluator(ev(g_mode="train", g_batch_size=50, batch_size=100),
                                     DIGITS32)(G)["fid"]
    fid_g25 = Evaluator(ev(g_mode="train", g_batch_size=25, batch_size=64), DIGITS32)(G)["fid"]
    print(f"FID train-mode {fid_train:.5f}, reference loop {fid_oracle:.5f}, "
          f"eval-mode {fid_eval:.5f}, g_batch_size 25 {fid_g25:.5f}")
    assert fid_train == pytest.approx(fid_oracle, rel=1e-5)
    assert fid_eval > 2 * fid_train
    # It depends on the sampling batch, not on torch-fidelity's batch.
    assert fid_other_eval_batch == pytest.approx(fid_train, rel=1e-5)
    assert abs(fid_g25 - fid_train) > 1e-3 * fid_train


def test_eval_mode_fid_uses_the_exact_spectral_norm() -> None:
    G = trained_ema()
    e = Evaluator(ev(batch_size=100), DIGITS32)
    fid = e(G)["fid"]
    z, y = reference_latents(N)
    with torch.no_grad():
        exact = with_true_singular_vectors(G).eval()(z, y)
        stored = copy.deepcopy(G).eval()(z, y)  # the stored (averaged) vectors: the bug
    assert fid == pytest.approx(e(ReplayG(exact))["fid"], rel=1e-5)
    assert abs(e(ReplayG(stored))["fid"] - fid) > 1e-3 * fid


# ---------------------------------------------------------------------------------------------
# (3) precision / recall, density / coverage


def naive_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Naeem et al. 2020, eq. for density and coverage, with the authors' open balls:
    r_i = distance of real i to its k-th nearest other real."""
    d_rr = np.sqrt(((real[:, None, :] - real[None, :, :]) ** 2).sum(-1))
    radii = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    d_fr = np.sqrt(((fake[:, None, :] - real[None, :, :]) ** 2).sum(-1))  # (M, N)
    density = (d_fr < radii[None, :]).sum() / (k * len(fake))
    coverage = (d_fr.min(axis=0) < radii).mean()
    return float(density), float(coverage)


def test_density_coverage_by_hand() -> None:
    # Reals 0, 1, 3, 7 with k = 2: radii 3, 2, 3, 6.
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    # 0.5 lies in the balls of 0, 1, 3; 20 in none. Density 3 / (2 * 2); 7 is not covered.
    assert density_coverage(real, torch.tensor([[0.5], [20.0]]), k=2) == (0.75, 0.75)
    # 6 is exactly on the ball of 3 (open: outside) and inside the ball of 7.
    assert density_coverage(real, torch.tensor([[6.0]]), k=2) == (0.5, 0.25)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = torch.randn(150, 6, generator=g) * 1.3 + 0.2
    got = density_coverage(x, y, k=5)
    assert got == pytest.approx(naive_density_coverage(x.numpy(), y.numpy(), 5), abs=1e-12)
    assert density_coverage(x, y, k=5, block=7) == pytest.approx(got, abs=1e-12)
    same = density_coverage(x, x.clone(), k=5)
    assert same[1] == 1.0 and 0.5 < same[0] < 2.0
    assert density_coverage(x, x + 1000.0, k=5) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than 5"):
        density_coverage(x[:5], y, k=5)


def _features(images: Tensor, path: Path, batch: int) -> np.ndarray:
    fe = DigitsFeatureExtractor(DIGITS_FIDELITY_NAME, ["128"],
                                feature_extractor_weights_path=str(path))
    u8 = to_uint8(images)
    with torch.no_grad():
        return torch.cat([fe(u8[a:a + batch])[0] for a in range(0, len(u8), batch)]).numpy()


def test_prc_and_dc_on_fid_features_match_their_oracles(cache: Path) -> None:
    n = 40  # KID's 100 subsets cost n^2 each
    reals = load_data(DIGITS32, "test").images
    fakes = load_data(DIGITS32, "train").images[:n].clone()
    fakes[n // 2:] = (fakes[n // 2:] * 0.8 + 0.3).clamp(-1, 1)  # half of them off the manifold
    G = ReplayG(fakes)
    plain = Evaluator(ev(num_samples=n, is_=True, kid=True), DIGITS32)(G)
    both = Evaluator(ev(num_samples=n, is_=True, kid=True, prc=True, dc=True), DIGITS32)(G)
    print({k: v for k, v in both.items() if k != "eval_protocol"})
    # Switching them on changes nothing else; switching them off leaves no key behind.
    assert {k: both[k] for k in plain} == plain
    assert set(both) - set(plain) == {"precision", "recall", "density", "coverage"}
    assert set(plain) == {"fid", "is_mean", "kid", "eval_protocol"}
    for k in ("precision", "recall", "coverage"):
        assert 0.0 < both[k] < 1.0, k  # not a trivial 0 == 0 below
    assert both["density"] > 0.0
    # torch-fidelity's own precision/recall on the same images and features.
    path = digits_classifier_path(cache)
    tf = torch_fidelity.calculate_metrics(
        input1=Images(to_uint8(fakes)), input2=Images(to_uint8(reals)), prc=True,
        feature_extractor=DIGITS_FIDELITY_NAME, feature_extractor_weights_path=str(path),
        batch_size=250, cuda=False, save_cpu_ram=True, cache=False, verbose=False)
    assert both["precision"] == pytest.approx(tf["precision"], abs=1e-9)
    assert both["recall"] == pytest.approx(tf["recall"], abs=1e-9)
    density, coverage = naive_density_coverage(_features(reals, path, 250).astype(np.float64),
                                               _features(fakes, path, 250).astype(np.float64), 5)
    assert both["density"] == pytest.approx(density, abs=1e-9)
    assert both["coverage"] == pytest.approx(coverage, abs=1e-9)
    # prc alone goes through calculate_metrics itself (dc through its pieces): same numbers.
    alone = Evaluator(ev(num_samples=n, prc=True), DIGITS32)(G)
    assert alone["precision"] == both["precision"] and alone["fid"] == plain["fid"]


def test_diverged_generator_with_spectral_norm_gives_inf_and_nan() -> None:
    G = trained_ema()
    with torch.no_grad():
        G.linear.parametrizations.weight.original.fill_(math.nan)
    out = Evaluator(ev(g_mode="train", g_batch_size=50, prc=True, dc=True), DIGITS32)(G)
    assert out["fid"] == math.inf
    assert all(math.isnan(out[k]) for k in ("precision", "recall", "density", "coverage"))


def test_prc_dc_need_image_features_and_enough_points() -> None:
    toy = DataConfig(name="toy2pt")
    with pytest.raises(ConfigError, match="eval.prc and eval.dc"):
        Evaluator(ev(extractor="toy", dc=True), toy)
    with pytest.raises(ConfigError, match="eval.prc=true"):
        Evaluator(ev(prc=True, num_samples=3), DIGITS32)


# ---------------------------------------------------------------------------------------------
# (4) evaluation changes nothing of the run


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_evaluation_leaves_g_ema_and_rng_bitwise_unchanged(mode: str) -> None:
    G = trained_ema()
    state = {k: v.clone() for k, v in G.state_dict().items()}
    flags = [m.training for m in G.modules()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    e = Evaluator(ev(g_mode=mode, g_batch_size=50, num_samples=100, batch_size=64), DIGITS32)
    first = e(G)
    assert torch.equal(torch.get_rng_state(), rng)
    now = G.state_dict()
    assert [k for k, v in state.items() if not torch.equal(v, now[k])] == []
    assert [m.training for m in G.modules()] == flags
    assert e(G) == first  # and so the next evaluation sees the same G


# ---------------------------------------------------------------------------------------------
# (5) the protocol fingerprint


def test_protocol_names_the_g_mode() -> None:
    base = eval_protocol(ev(num_samples=2000), DIGITS32)
    assert re.fullmatch(r"digits-[0-9a-f]{8}-n2000-test-r32-digits-geval", base), base
    train = eval_protocol(ev(num_samples=2000, g_mode="train", g_batch_size=50), DIGITS32)
    assert train == base.removesuffix("geval") + "gtrain50"
    assert Evaluator(ev(g_mode="train", g_batch_size=50, num_samples=2000),
                     DIGITS32).protocol == train
    assert eval_protocol(ev(num_samples=2000, g_mode="eval", g_batch_size=50), DIGITS32) == base
    assert eval_protocol(ev(num_samples=2000, g_mode="train", g_batch_size=50, batch_size=17,
                            prc=True, dc=True), DIGITS32) == train
    assert eval_protocol(ev(num_samples=2000, g_mode="train", g_batch_size=25),
                         DIGITS32).endswith("-gtrain25")
    with pytest.raises(ConfigError, match="eval.g_batch_size") as info:
        eval_protocol(ev(g_mode="train"), DIGITS32)
    assert "\n" not in str(info.value)
    assert eval_protocol(ev(extractor="toy"), DataConfig(name="toy2pt")).endswith("-geval")


def test_resolved_biggan_config_samples_like_the_reference() -> None:
    cfg = resolve(from_dict({"model.arch": "biggan", "data.name": "digits",
                             "data.resolution": 32, "optim.batch_size": 50}), SPEC)
    assert eval_protocol(cfg.eval, cfg.data).endswith("-digits-gtrain50")
    cfg = resolve(from_dict({"model.arch": "dcgan", "data.name": "digits"}), SPEC)
    assert eval_protocol(cfg.eval, cfg.data).endswith("-digits-geval")


# ---------------------------------------------------------------------------------------------
# the report's sample grids generate as the evaluation does


def test_report_samples_use_the_run_g_mode_and_exact_sigma() -> None:
    from analysis.plots import _from_ema

    dotted = {"model.arch": "biggan", "model.g_ch": 4, "model.d_ch": 4, "model.z_dim": 8,
              "data.name": "digits", "data.resolution": 32, "optim.batch_size": 50}
    spec = DataSpec((1, 32, 32), 10)  # what digits at 32 is
    torch.manual_seed(0)
    G, _ = build_models(ModelConfig(arch="biggan", g_ch=4, d_ch=4, z_dim=8), spec)
    with torch.no_grad():
        for m in G.modules():  # an EMA-like state: short SN vectors, drifted BN statistics
            if parametrize.is_parametrized(m, "weight"):
                m.parametrizations.weight[0]._u.mul_(0.7)
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(3.0)
    state = {"G_ema": G.state_dict()}
    # Oracle: the reference loop (chunks of 50: 50 + 14) on the documented picture latents.
    gen = torch.Generator().manual_seed(0)
    z, y = torch.randn(64, 8, generator=gen), torch.arange(64) % 10
    want = reference_loop(G, z, y, 50)
    resolved = resolve(from_dict(dotted), spec)
    assert (resolved.eval.g_mode, resolved.eval.g_batch_size) == ("train", 50)
    torch.testing.assert_close(_from_ema(state, resolved, 64), want, rtol=1e-4, atol=1e-5)
    # A config saved before eval.g_mode existed (null) gets the arch's reference mode.
    torch.testing.assert_close(_from_ema(state, from_dict(dotted), 64), want, rtol=1e-4,
                               atol=1e-5)
    eval_mode = _from_ema(state, resolve(from_dict(dotted | {"eval.g_mode": "eval"}), spec), 64)
    with torch.no_grad():
        torch.testing.assert_close(eval_mode, with_true_singular_vectors(G).eval()(z, y),
                                   rtol=1e-4, atol=1e-5)
