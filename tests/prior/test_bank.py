"""The prior bank: normalised features of C, computed once, cached, keyed on every input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneable_gan.config import PriorConfig
from tuneable_gan.data import to_uint8
from tuneable_gan.digits_cnn import DigitsCNN, preprocess_digits
from tuneable_gan.prior import network_tag, prior_bank
from tuneable_gan.prior import networks as nets

CFG = PriorConfig(network="random_digits", seed=3)


class Counting(DigitsCNN):
    """DigitsCNN counting its constructions and forwards (the same init draws)."""

    built = 0
    calls = 0

    def __init__(self) -> None:
        super().__init__()
        Counting.built += 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        Counting.calls += 1
        return super().features(x)


@pytest.fixture
def counting(monkeypatch) -> type[Counting]:
    Counting.built = Counting.calls = 0
    monkeypatch.setattr(nets, "DigitsCNN", Counting)
    return Counting


def images(n: int = 70, seed: int = 0) -> torch.Tensor:
    # 70 images: two batches of the bank's 64.
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def oracle(x: torch.Tensor, seed: int) -> torch.Tensor:
    """C's features by hand: the seeded random DigitsCNN, quantised input, divided by the norm."""
    torch.manual_seed(seed)
    net = DigitsCNN()
    with torch.no_grad():
        f = net.features(preprocess_digits(to_uint8(x)))
    return f / f.norm(dim=1, keepdim=True)


def test_bank_is_the_normalised_features(tmp_path: Path) -> None:
    x = images()
    state = torch.get_rng_state()
    bank = prior_bank(x, "digits-r8", CFG, flip=True, cache_dir=tmp_path)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(bank.features, oracle(x, 3))
    torch.testing.assert_close(bank.flipped, oracle(x.flip(-1), 3))
    assert bank.features.dtype == torch.float32 and bank.features.shape == (70, 128)
    torch.testing.assert_close(bank.features.norm(dim=1), torch.ones(70))
    assert bank.dim == 128 and bank.network == "random_digits"
    assert bank.tag == network_tag(CFG, tmp_path)
    assert len(list((tmp_path / "priors").glob("*.pt"))) == 1


def test_second_call_reads_the_cache(tmp_path: Path, counting, monkeypatch) -> None:
    x = images()
    first = prior_bank(x, "digits-r8", CFG, flip=True, cache_dir=tmp_path)
    assert counting.built == 1 and counting.calls == 4  # 2 batches, plain and flipped
    again = prior_bank(x.clone(), "digits-r8", CFG, flip=True, cache_dir=tmp_path)
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(tmp_path))  # cache_dir=None: the env's
    via_env = prior_bank(x, "digits-r8", CFG, flip=True)
    assert counting.built == 1 and counting.calls == 4
    for b in (again, via_env):
        assert torch.equal(b.features, first.features) and torch.equal(b.flipped, first.flipped)
        assert b.tag == first.tag and b.network == first.network


def test_every_input_is_in_the_key(tmp_path: Path, counting) -> None:
    x = images()
    prior_bank(x, "digits-r8", CFG, flip=True, cache_dir=tmp_path)
    y = x.clone()
    y[5, 0, 3, 3] += 0.5
    no_flip = prior_bank(x, "digits-r8", CFG, flip=False, cache_dir=tmp_path)
    prior_bank(x, "digits-r8-f0.5", CFG, flip=True, cache_dir=tmp_path)
    prior_bank(y, "digits-r8", CFG, flip=True, cache_dir=tmp_path)
    other_seed = PriorConfig(network="random_digits", seed=4)
    prior_bank(x, "digits-r8", other_seed, flip=True, cache_dir=tmp_path)
    assert counting.built == 5 and len(list((tmp_path / "priors").glob("*.pt"))) == 5
    assert no_flip.flipped is None


def test_corrupt_cache_is_recomputed(tmp_path: Path, counting) -> None:
    x = images(10)
    first = prior_bank(x, "k", CFG, flip=False, cache_dir=tmp_path)
    (path,) = (tmp_path / "priors").glob("*.pt")
    good = path.read_bytes()
    for broken in (b"garbage", good[: len(good) // 2]):
        path.write_bytes(broken)
        with pytest.warns(UserWarning, match="recomputing"):
            again = prior_bank(x, "k", CFG, flip=False, cache_dir=tmp_path)
        torch.testing.assert_close(again.features, first.features)
    built = counting.built
    assert built == 3
    prior_bank(x, "k", CFG, flip=False, cache_dir=tmp_path)  # rewritten: read, not rebuilt
    assert counting.built == built
