"""Evaluation: digits FID/IS/KID through torch-fidelity, the offline Inception path, the eval
protocol fingerprint, the toy metrics, determinism and the real-statistics cache."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ReplayG
from torch import Tensor, nn

from tuneable_gan import metrics
from tuneable_gan.config import DataConfig, EvalConfig
from tuneable_gan.data import RealData, load_data
from tuneable_gan.digits_cnn import (
    DigitsFeatureExtractor,
    digits_classifier_path,
    load_digits_classifier,
)
from tuneable_gan.errors import ConfigError, UserError
from tuneable_gan.extractors import INCEPTION_FILE
from tuneable_gan.metrics import Evaluator, eval_protocol
from tuneable_gan.sample_metrics import modes_covered, wasserstein1

DIGITS = DataConfig(name="digits", resolution=16)
TOY = DataConfig(name="toy2pt")


# ---------------------------------------------------------------------------------------------
# stand-in generators (the real ones live in tuneable_gan/models)


class ConvG(nn.Module):
    """A small random DCGAN-like G with BatchNorm, so eval mode matters."""

    def __init__(self, z_dim: int = 16, conditional: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim, self.conditional = z_dim, conditional
        self.num_classes = 10 if conditional else 0
        self.embed = nn.Embedding(10, z_dim)
        self.fc = nn.Linear(z_dim, 32 * 4 * 4)
        self.net = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU(), nn.Upsample(scale_factor=2),
                                 nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Upsample(scale_factor=2), nn.Conv2d(16, 1, 3, padding=1),
                                 nn.Tanh())
        self.labels_seen: list[Tensor] = []

    def sample_z(self, n: int, generator: torch.Generator, device: str) -> Tensor:
        return torch.randn(n, self.z_dim, generator=generator).to(device)

    def forward(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        if self.conditional:
            assert y is not None
            self.labels_seen.append(y)
            z = z + self.embed(y)
        return self.net(self.fc(z).view(-1, 32, 4, 4))


class PointG(nn.Module):
    """1-D toy G that returns fixed points."""

    z_dim, conditional, num_classes = 1, False, 0

    def __init__(self, points: list[float]) -> None:
        super().__init__()
        self.points = torch.tensor(points)

    def sample_z(self, n: int, generator: torch.Generator, device: str) -> Tensor:
        return torch.arange(n, dtype=torch.float32).unsqueeze(1)

    def forward(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self.points[z[:, 0].long() % len(self.points)].unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per session: the digits classifier is trained once (a few seconds)."""
    return tmp_path_factory.mktemp("tgan-cache")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache_dir: Path) -> None:
    # Nothing may read or write the user's torch or project caches.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(cache_dir))


@pytest.fixture(scope="session")
def test_images() -> Tensor:
    return load_data(DIGITS, "test").images


def ev(**kw: object) -> EvalConfig:
    return dataclasses.replace(EvalConfig(), **kw)  # type: ignore[arg-type]


def shifted(x: Tensor, b: float) -> Tensor:
    return (x + b).clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# digits extractor


def test_digits_classifier_is_accurate(cache_dir: Path) -> None:
    eval_protocol(ev(), DIGITS)  # trains it on first use
    _, record = load_digits_classifier(digits_classifier_path(cache_dir))
    print(f"digits classifier test accuracy: {record['test_accuracy']:.4f}")
    assert record["test_accuracy"] > 0.95


def test_fid_self_zero_and_grows_with_shift(test_images: Tensor) -> None:
    e = Evaluator(ev(num_samples=len(test_images), reference="test", is_=False), DIGITS)
    same = e(ReplayG(test_images))
    fids = [e(ReplayG(shifted(test_images, b)))["fid"] for b in (0.05, 0.1, 0.2, 0.4, 0.8)]
    print(f"FID self {same['fid']:.3g}, brightness shifts {[round(f, 3) for f in fids]}")
    # Identical sets: only float error of eigvals on a 128x128 product remains.
    assert abs(same["fid"]) < 1e-6 * fids[0]
    assert all(a < b for a, b in zip(fids, fids[1:])) and fids[0] > 0
    noisy = [e(ReplayG((test_images + s * torch.randn(test_images.shape,
                                                      generator=torch.Generator().manual_seed(0)))
                       .clamp(-1, 1)))["fid"] for s in (0.1, 0.3, 0.9)]
    assert noisy[0] < noisy[1] < noisy[2]


def test_kid_same_distribution_near_zero() -> None:
    train = load_data(DIGITS, "train").images
    e = Evaluator(ev(num_samples=len(train), reference="test", kid=True, is_=False), DIGITS)
    same = e(ReplayG(train))["kid"]
    other = e(ReplayG(torch.rand(train.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1))
    print(f"KID train vs test {same:.4g}, noise vs test {other['kid']:.4g}")
    assert abs(same) < 0.01 * other["kid"]


def test_is_real_high_noise_near_one(test_images: Tensor) -> None:
    e = Evaluator(ev(num_samples=len(test_images), reference="test"), DIGITS)
    real = e(ReplayG(test_images))["is_mean"]
    g = torch.Generator().manual_seed(0)
    noise = e(ReplayG(torch.rand(test_images.shape, generator=g) * 2 - 1))["is_mean"]
    gauss = e(ReplayG((torch.randn(test_images.shape, generator=g) * 0.5).clamp(-1, 1)))["is_mean"]
    print(f"IS real test split {real:.3f}, uniform noise {noise:.4f}, gaussian noise {gauss:.4f}")
    assert real >= 5.0
    assert 1.0 <= noise < 2.0 and 1.0 <= gauss < 2.0


def test_same_weights_same_number() -> None:
    G = ConvG()
    G.train()
    rng_before = torch.get_rng_state()
    e = Evaluator(ev(num_samples=300, batch_size=64, kid=True), DIGITS)
    a, b = e(G), e(G)
    c = Evaluator(ev(num_samples=300, batch_size=100, kid=True), DIGITS)(G)
    assert a == b
    assert a["fid"] == pytest.approx(c["fid"], rel=1e-6)  # independent of the batch size
    assert G.training  # put back in the mode it came in
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
    other_seed = Evaluator(ev(num_samples=300, batch_size=64, seed=1), DIGITS)(G)
    assert other_seed["fid"] != a["fid"]
    assert set(a) == {"fid", "is_mean", "kid", "eval_protocol"}


def test_conditional_generator_gets_uniform_labels() -> None:
    G = ConvG(conditional=True)
    e = Evaluator(ev(num_samples=1000, is_=False), DIGITS)
    a = e(G)
    labels = torch.cat(G.labels_seen)
    G.labels_seen.clear()
    assert e(G) == a and torch.equal(torch.cat(G.labels_seen), labels)
    counts = torch.bincount(labels, minlength=10)
    assert len(labels) == 1000 and counts.min() > 60 and counts.max() < 140
    assert set(a) == {"fid", "eval_protocol"}


def test_non_finite_samples_give_inf() -> None:
    G = ConvG()
    with torch.no_grad():
        G.fc.weight.fill_(math.nan)
    out = Evaluator(ev(num_samples=100, kid=True), DIGITS)(G)
    assert out["fid"] == math.inf and out["kid"] == math.inf and math.isnan(out["is_mean"])


def test_reference_cache_hit(tmp_path: Path, cache_dir: Path) -> None:
    fresh = tmp_path / "cache"
    shutil.copytree(cache_dir / "extractors", fresh / "extractors")  # keep the classifier
    cfg = ev(num_samples=200, kid=True)
    e = Evaluator(cfg, DIGITS, cache_dir=fresh)
    assert not e.reference_cached()
    seen = DigitsFeatureExtractor.images_seen
    first = e(ConvG())
    assert DigitsFeatureExtractor.images_seen - seen == 200 + e.num_real
    assert e.reference_cached() and e._real is None  # images released once cached
    # Named after the protocol less how G samples: the real statistics do not depend on it.
    reference = e.protocol.removesuffix("-geval")
    assert any(p.name.startswith(f"tgan-{reference}-") for p in (fresh / "fidelity").iterdir())
    assert not (tmp_path / "torch-home").exists()  # never torch-fidelity's default cache
    seen = DigitsFeatureExtractor.images_seen
    again = Evaluator(cfg, DIGITS, cache_dir=fresh)(ConvG())
    assert DigitsFeatureExtractor.images_seen - seen == 200  # only the fakes
    assert again == first


def test_building_an_evaluator_leaves_the_global_rng_alone(tmp_path: Path,
                                                           cache_dir: Path) -> None:
    # A fresh cache path: the digits classifier is loaded (and hashed) anew, not memoised. A
    # trainer builds its Evaluator at its first evaluation, so this must not shift its RNG.
    eval_protocol(ev(), DIGITS)  # the classifier exists in the session cache
    fresh = tmp_path / "cache"
    shutil.copytree(cache_dir / "extractors", fresh / "extractors")
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    Evaluator(ev(num_samples=10), DIGITS, cache_dir=fresh)
    assert torch.equal(torch.get_rng_state(), rng)


def test_reference_train_is_full_split() -> None:
    e = Evaluator(ev(num_samples=10, reference="train"), dataclasses.replace(DIGITS, fraction=0.1))
    assert e.num_real == len(load_data(DIGITS, "train")) > 1000
    assert Evaluator(ev(num_samples=10, reference="test"), DIGITS).num_real == 359


# ---------------------------------------------------------------------------------------------
# configuration errors and the protocol


@pytest.mark.parametrize("extractor,data,valid", [
    ("toy", "digits", "digits, inception"),
    ("digits", "toy2pt", "toy"),
    ("inception", "toy2pt", "toy"),
    ("digits", "cifar10", "inception"),
])
def test_extractor_must_fit_data(extractor: str, data: str, valid: str) -> None:
    with pytest.raises(ConfigError) as info:
        Evaluator(ev(extractor=extractor), DataConfig(name=data))
    msg = str(info.value)
    assert "\n" not in msg and "eval.extractor" in msg and msg.endswith(f"valid: {valid}")


def test_inception_without_weights_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        Evaluator(ev(extractor="inception"), DIGITS)
    msg = str(info.value)
    assert "\n" not in msg
    assert "eval.extractor_weights" in msg and INCEPTION_FILE in msg and "network" in msg
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=re.escape(str(missing))) as info:
        Evaluator(ev(extractor="inception", extractor_weights=str(missing)), DIGITS)
    assert "\n" not in str(info.value)


def test_protocol_changes_only_with_what_it_fingerprints(tmp_path: Path) -> None:
    base = ev(num_samples=2000)
    p = eval_protocol(base, DIGITS)
    assert re.fullmatch(r"digits-[0-9a-f]{8}-n2000-train-r16-digits-geval", p), p
    assert Evaluator(base, DIGITS).protocol == p
    for same in (ev(num_samples=2000, seed=5), ev(num_samples=2000, kid=True, is_=False),
                 ev(num_samples=2000, batch_size=17)):
        assert eval_protocol(same, DIGITS) == p
    assert eval_protocol(base, dataclasses.replace(DIGITS, fraction=0.1, subset_seed=3)) == p
    changed = {eval_protocol(ev(num_samples=1000), DIGITS),
               eval_protocol(ev(num_samples=2000, reference="test"), DIGITS),
               eval_protocol(base, dataclasses.replace(DIGITS, resolution=32))}
    assert p not in changed and len(changed) == 3
    wa, wb = tmp_path / "a.pth", tmp_path / "b.pth"
    wa.write_bytes(b"weights A")
    wb.write_bytes(b"weights B")
    pa = eval_protocol(ev(extractor="inception", extractor_weights=str(wa)), DIGITS)
    pb = eval_protocol(ev(extractor="inception", extractor_weights=str(wb)), DIGITS)
    assert pa != pb and pa.startswith("inception-") and pa.endswith("-n2000-train-r16-digits-geval")
    assert pa == eval_protocol(ev(extractor="inception", extractor_weights=str(wa)), DIGITS)
    assert eval_protocol(ev(extractor="toy"), TOY) == "toy-v1-n2000-train-toy2pt-geval"


# ---------------------------------------------------------------------------------------------
# toy metrics


def test_toy_metric_functions() -> None:
    assert modes_covered(np.zeros(100), [0.0, 4.0]) == 1
    assert modes_covered(np.r_[np.zeros(50), np.full(50, 4.0)], [0.0, 4.0]) == 2
    assert modes_covered(np.r_[np.zeros(95), np.full(5, 4.0)], [0.0, 4.0]) == 1  # 5% < 10%
    assert modes_covered(np.full(10, 2.0), [0.0, 4.0]) == 0
    assert modes_covered(np.r_[np.full(50, 0.5), np.full(50, 3.6)], [0.0, 4.0]) == 2  # tol 0.5
    assert wasserstein1(np.r_[np.zeros(50), np.full(50, 4.0)], [0.0, 4.0]) == 0.0
    assert wasserstein1(np.zeros(10), [0.0, 4.0]) == pytest.approx(2.0)  # half the mass moves 4
    assert wasserstein1(np.full(7, 2.0), [0.0, 4.0]) == pytest.approx(2.0)
    assert wasserstein1(np.array([1.0, 5.0]), [0.0, 4.0]) == pytest.approx(1.0)
    assert wasserstein1(np.array([-1.0, 0.0, 4.0, 4.0]), [0.0, 4.0]) == pytest.approx(0.25)
    assert wasserstein1(np.array([0.0, 0.0, 0.0, 4.0]), [0.0, 4.0]) == pytest.approx(1.0)
    x = np.random.default_rng(0).normal(2.0, 1.5, 301)
    from scipy.stats import wasserstein_distance

    assert wasserstein1(x, [0.0, 4.0]) == pytest.approx(wasserstein_distance(x, [0.0, 4.0]))


def test_toy_evaluator() -> None:
    e = Evaluator(ev(extractor="toy", num_samples=1000), TOY)
    collapsed = e(PointG([0.0]))
    assert collapsed == {"modes_covered": 1, "w1": pytest.approx(2.0),
                         "eval_protocol": "toy-v1-n1000-train-toy2pt-geval"}
    both = e(PointG([0.0, 4.0]))
    assert both["modes_covered"] == 2 and both["w1"] == pytest.approx(0.0, abs=1e-12)
    assert e(PointG([math.nan]))["w1"] == math.inf


# ---------------------------------------------------------------------------------------------
# Inception, offline, with honest random weights


def _faces(n: int, resolution: int) -> Tensor:
    from skimage.data import lfw_subset

    x = torch.tensor(lfw_subset()[:n], dtype=torch.float32).unsqueeze(1)
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True,
                         align_corners=False) * 2 - 1


@pytest.mark.slow
def test_inception_offline_ranks_distributions(random_inception: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    digits = load_data(DIGITS, "train")
    n = 64
    reference = RealData("digits", digits.images[:n], digits.labels[:n], 10)
    monkeypatch.setattr(metrics, "load_data", lambda cfg, split: reference)
    cfg = ev(extractor="inception", extractor_weights=str(random_inception), num_samples=n,
             is_=False, batch_size=64)
    e = Evaluator(cfg, DIGITS)
    same = e(ReplayG(digits.images[n:2 * n]))["fid"]
    other = e(ReplayG(_faces(n, 16)))["fid"]
    print(f"random Inception FID: digits halves {same:.3f}, digits vs faces {other:.3f}")
    assert 0 < same < other
    # The default route: the same file under torch's hub cache, no extractor_weights.
    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / INCEPTION_FILE).symlink_to(random_inception)
    default_route = Evaluator(dataclasses.replace(cfg, extractor_weights=None), DIGITS)
    assert default_route.protocol == e.protocol
