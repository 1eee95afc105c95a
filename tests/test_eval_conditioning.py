"""The Evaluator's ``conditions``: the fakes' conditioning is drawn by ``eval_fakes`` once, right
after z, from the evaluation generator; it reaches G; its ``protocol`` joins the fingerprint; and
a class conditioning that draws what the Evaluator drew without it changes no number.

A seeded RANDOM digits classifier in a private cache (see test_eval_protocol.py): every check
compares two evaluations on the same features.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import pytest
import torch
from conftest import random_digits_cache
from torch import Tensor, nn

from tuneable_gan.config import DataConfig, EvalConfig
from tuneable_gan.metrics import Evaluator, eval_protocol

DIGITS = DataConfig(name="digits", resolution=16)
N, SEED, PRIOR_DIM = 120, 3, 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_digits_cache(tmp_path_factory.mktemp("tgan-cache-cond"))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(cache))


def ev(**kw: object) -> EvalConfig:
    base = dict(num_samples=N, seed=SEED, is_=False, batch_size=50)
    return dataclasses.replace(EvalConfig(), **(base | kw))  # type: ignore[arg-type]


class Stub:
    """Conditions that record each call (n and the generator's state on entry)."""

    def __init__(self, protocol: str, draw: Callable[[int, torch.Generator], Tensor]) -> None:
        self.protocol, self.draw = protocol, draw
        self.calls: list[tuple[int, Tensor]] = []

    def eval_fakes(self, n: int, generator: torch.Generator) -> Tensor:
        self.calls.append((n, generator.get_state().clone()))
        return self.draw(n, generator)


def draw_prior(n: int, gen: torch.Generator) -> Tensor:
    return torch.randn(n, PRIOR_DIM, generator=gen)


def draw_class(n: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, 10, (n,), generator=gen)  # what the Evaluator draws without one


class RecordingG(nn.Module):
    """A small G conditioned on a class (embedding) or a float prior (linear map); records y."""

    z_dim = 8

    def __init__(self, prior: bool) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.cond = nn.Linear(PRIOR_DIM, 8) if prior else nn.Embedding(10, 8)
            self.fc = nn.Linear(8, 16 * 16)
        self.conditional, self.num_classes = True, 10
        self.seen: list[Tensor] = []

    def sample_z(self, n: int, generator: torch.Generator, device: str) -> Tensor:
        return torch.randn(n, self.z_dim, generator=generator).to(device)

    def forward(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        assert y is not None
        self.seen.append(y.clone())
        return torch.tanh(self.fc(z + self.cond(y))).view(-1, 1, 16, 16)


def test_eval_fakes_drawn_once_right_after_z_and_fed_to_G() -> None:
    G, stub = RecordingG(prior=True), Stub("prior=digits,sampler=gmm(K=10,diag)", draw_prior)
    e = Evaluator(ev(), DIGITS, conditions=stub)
    out = e(G)
    assert len(stub.calls) == 1 and stub.calls[0][0] == N
    # Re-draw: the generator seeded with eval.seed, after G's z, is where eval_fakes started.
    gen = torch.Generator().manual_seed(SEED)
    G.sample_z(N, gen, "cpu")
    assert torch.equal(stub.calls[0][1], gen.get_state())
    expected = draw_prior(N, gen)
    seen = torch.cat(G.seen)
    assert seen.dtype == torch.float32 and torch.equal(seen, expected)  # chunks of 50, 50, 20
    assert [len(y) for y in G.seen] == [50, 50, 20]
    plain = eval_protocol(ev(), DIGITS)
    assert e.protocol == out["eval_protocol"] == f"{plain} + prior=digits,sampler=gmm(K=10,diag)"
    assert math.isfinite(out["fid"])


def test_empty_protocol_leaves_the_fingerprint_alone() -> None:
    e = Evaluator(ev(), DIGITS, conditions=Stub("", draw_class))
    assert e.protocol == eval_protocol(ev(), DIGITS)


def test_class_conditions_give_bitwise_the_numbers_of_no_conditions() -> None:
    G = RecordingG(prior=False)
    plain = Evaluator(ev(kid=True), DIGITS)(G)
    labels = torch.cat(G.seen)
    G.seen.clear()
    stub = Stub("", draw_class)
    with_stub = Evaluator(ev(kid=True), DIGITS, conditions=stub)(G)
    assert with_stub == plain and len(stub.calls) == 1
    assert torch.equal(torch.cat(G.seen), labels)
    assert labels.dtype == torch.int64 and len(labels.unique()) == 10
