"""The memorisation check (eval.nn): blockwise nearest-neighbour distances against a brute-force
loop, and the Evaluator's nn_fake / nn_real / nn_ratio against distances computed by hand from
the extractor's features of the training subset and the held-out test images.

The digits extractor is a seeded RANDOM DigitsCNN in a private cache (as in
test_eval_protocol.py): the checks compare distances on the same features, which any fixed
feature map serves, and a random one needs no minute of training.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from conftest import ReplayG, random_digits_cache
from torch import Tensor

from tuneable_gan.config import DataConfig, EvalConfig
from tuneable_gan.data import load_data, to_uint8
from tuneable_gan.digits_cnn import (
    DigitsFeatureExtractor,
    digits_classifier_path,
    load_digits_classifier,
    preprocess_digits,
)
from tuneable_gan.errors import ConfigError
from tuneable_gan.memorisation import held_out, nearest_distances
from tuneable_gan.metrics import Evaluator

DIGITS = DataConfig(name="digits", fraction=0.1, resolution=16)
N = 200


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_digits_cache(tmp_path_factory.mktemp("tgan-cache-nn"))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(cache))


def ev(**kw: object) -> EvalConfig:
    base = dict(num_samples=N, is_=False, nn=True, batch_size=64)
    return dataclasses.replace(EvalConfig(), **(base | kw))  # type: ignore[arg-type]


def brute_nearest(q: Tensor, r: Tensor) -> Tensor:
    """min_j |q_i - r_j|, one query at a time, from the definition."""
    q, r = q.double(), r.double()
    return torch.stack([((r - qi) ** 2).sum(dim=1).sqrt().min() for qi in q])


def features(path: Path, images: Tensor) -> Tensor:
    """The classifier's penultimate features of [-1, 1] images, as the evaluator sees them."""
    net, _ = load_digits_classifier(path)
    with torch.no_grad():
        return net.features(preprocess_digits(to_uint8(images))).double()


# ---------------------------------------------------------------------------------------------
# the distances


@pytest.mark.parametrize("block", [1, 7, 16, 17, 53, 2048])
def test_nearest_distances_match_brute_force(block: int) -> None:
    g = torch.Generator().manual_seed(1)
    q, r = torch.randn(37, 5, generator=g), torch.randn(53, 5, generator=g)
    r[11] = q[4]  # an exact copy is at distance 0
    d = nearest_distances(q, r, block=block)
    assert d.dtype == torch.float64 and d.shape == (37,)
    torch.testing.assert_close(d, brute_nearest(q, r), rtol=1e-9, atol=1e-6)
    assert float(d[4]) < 1e-6


def test_nearest_distances_refuse_empty_reference() -> None:
    with pytest.raises(ValueError, match="at least one"):
        nearest_distances(torch.zeros(3, 2), torch.zeros(0, 2))


def test_held_out_drops_exact_copies_of_training_images() -> None:
    train = torch.arange(24, dtype=torch.uint8).reshape(4, 1, 2, 3)
    test = torch.stack([train[2], train[0] + 100, train[3], train[1] + 1])
    assert torch.equal(held_out(train, test), test[[1, 3]])


# ---------------------------------------------------------------------------------------------
# the evaluator


def test_copying_generator_sits_on_its_training_images(cache: Path) -> None:
    train = load_data(DIGITS, "train").images  # the fraction subset G was trained on
    e = Evaluator(ev(), DIGITS)
    out = e(ReplayG(train))  # 200 fakes: the 143 training images, then the first 57 again
    assert set(out) == {"fid", "nn_fake", "nn_real", "nn_ratio", "eval_protocol"}
    assert out["nn_fake"] == pytest.approx(0.0, abs=1e-4)
    # nn_real by hand: test images that are no training image, to their nearest training image.
    path = digits_classifier_path(cache)
    test = load_data(dataclasses.replace(DIGITS, fraction=1.0), "test").images
    keep = [i for i, x in enumerate(to_uint8(test))
            if not any(torch.equal(x, t) for t in to_uint8(train))]
    oracle = float(brute_nearest(features(path, test[keep]), features(path, train)).mean())
    assert out["nn_real"] > 0.1 and out["nn_real"] == pytest.approx(oracle, rel=1e-5)
    assert out["nn_ratio"] == pytest.approx(out["nn_fake"] / out["nn_real"], abs=1e-12)
    # The training-set and held-out features are kept: a second call featurises the fakes only.
    seen = DigitsFeatureExtractor.images_seen
    assert e(ReplayG(train)) == out
    assert DigitsFeatureExtractor.images_seen - seen == N


def test_noise_generator_is_farther_than_held_out_images(cache: Path) -> None:
    noise = torch.rand(N, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = Evaluator(ev(), DIGITS)(ReplayG(noise))
    path = digits_classifier_path(cache)
    train = load_data(DIGITS, "train").images
    oracle = float(brute_nearest(features(path, noise), features(path, train)).mean())
    assert out["nn_fake"] == pytest.approx(oracle, rel=1e-5)
    assert out["nn_ratio"] > 1.0


def test_non_finite_samples_give_nan() -> None:
    out = Evaluator(ev(num_samples=20), DIGITS)(ReplayG(torch.full((4, 1, 16, 16), math.nan)))
    assert out["fid"] == math.inf
    assert all(math.isnan(out[k]) for k in ("nn_fake", "nn_real", "nn_ratio"))


def test_nn_needs_image_features() -> None:
    with pytest.raises(ConfigError, match="eval.nn"):
        Evaluator(ev(extractor="toy"), DataConfig(name="toy2pt"))
