"""The G/D contract, checked for every entry of the ``MODELS`` registry.

In the spirit of diffusers' ``tests/models/testing_utils/common.py``: the cases are derived from
``MODELS.names()`` at collection time, so a newly registered arch is covered without editing this
file. For each arch the smallest supported data shape is found by probing ``build_models`` (it
raises ConfigError for a shape the arch does not take), with one and three channels for image
arches, unconditional always and, with three channels (or for non-image data), conditional
where the arch accepts labels.

Spectral norm does one power iteration per training-mode forward, which changes the effective
weights from one call to the next, and G's BatchNorm updates its running statistics. So every
train-mode comparison here restores the module's full state (parameters and buffers: SN's ``_u``
and ``_v``, BN running stats) before each call; eval-mode comparisons need no restore. A G may
draw noise from the global RNG (stylegan2's noise inputs), so G calls that are compared start
from the same global RNG state too.

D may mix samples within groups of ``D.sample_group`` consecutive samples (stylegan2's
minibatch stddev); the independence checks then run on a batch of two groups or more and check
independence across groups.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from tuneable_gan.config import PAPER_CONDITIONAL_ARCHES, ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import MODELS, DataSpec, Discriminator, Generator, build_models

N = 4  # batch size
NUM_CLASSES = 5
# Small widths (arches may ignore them, e.g. toy); fmaps and w_dim are stylegan2's.
SIZES = {"z_dim": 8, "g_ch": 4, "d_ch": 4, "fmaps": 2 ** -8, "w_dim": 8}
# Probed in this order; the first image resolution an arch accepts is the one tested.
CANDIDATE_SHAPES: tuple[tuple[int, ...], ...] = (
    (1,), *((c, r, r) for r in (8, 16, 32, 64) for c in (1, 3)))


@dataclass(frozen=True)
class Case:
    arch: str
    shape: tuple[int, ...] | None  # None: the arch accepted none of CANDIDATE_SHAPES
    conditional: bool

    @property
    def spec(self) -> DataSpec:
        assert self.shape is not None
        return DataSpec(self.shape, NUM_CLASSES if self.conditional else 0)

    @property
    def id(self) -> str:
        shape = "none" if self.shape is None else "x".join(map(str, self.shape))
        return f"{self.arch}-{shape}-{'cond' if self.conditional else 'uncond'}"


def _builds(arch: str, shape: tuple[int, ...], conditional: bool) -> bool:
    """False iff build_models rejects the combination with ConfigError (the documented way).
    Any other exception counts as supported, so the tests build it and fail with that error."""
    try:
        build_models(ModelConfig(arch=arch, conditional=conditional, **SIZES),
                     DataSpec(shape, NUM_CLASSES if conditional else 0))
    except ConfigError:
        return False
    except Exception:
        return True
    return True


def _cases() -> list[Case]:
    cases: list[Case] = []
    rng = torch.get_rng_state()  # probing builds models; do not disturb the global RNG
    for arch in MODELS.names():
        ok = [s for s in CANDIDATE_SHAPES if _builds(arch, s, False)]
        images = [s for s in ok if len(s) == 3]
        shapes = [s for s in ok if len(s) != 3]
        if images:
            side = images[0][1]
            shapes += [s for s in images if s[1] == side]
        if not shapes:
            cases.append(Case(arch, None, False))
        for s in shapes:
            cases.append(Case(arch, s, False))
            if (len(s) != 3 or s[0] == 3) and _builds(arch, s, True):
                cases.append(Case(arch, s, True))
    torch.set_rng_state(rng)
    return cases


CASES = _cases()


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    if c.shape is None:
        pytest.fail(f"model.arch={c.arch} builds for none of {CANDIDATE_SHAPES}; add a shape it "
                    f"supports to CANDIDATE_SHAPES in {__file__}")
    return c


def make(case: Case, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    g, d = build_models(ModelConfig(arch=case.arch, conditional=case.conditional, **SIZES),
                        case.spec)
    assert isinstance(g, Generator) and isinstance(d, Discriminator)
    return g, d


def labels(case: Case, n: int = N) -> Tensor | None:
    return torch.arange(n) % NUM_CLASSES if case.conditional else None


def latents(g: Generator, seed: int = 1, n: int = N) -> Tensor:
    return g.sample_z(n, torch.Generator().manual_seed(seed), "cpu")


def real_like(case: Case, seed: int = 2, n: int = N) -> Tensor:
    """Inputs for D: uniform in [-1, 1] for images (the data range), normal for the 1-D toy."""
    gen = torch.Generator().manual_seed(seed)
    assert case.shape is not None
    if len(case.shape) == 3:
        return torch.rand(n, *case.shape, generator=gen) * 2 - 1
    return torch.randn(n, *case.shape, generator=gen) * 3


def replay(module: nn.Module) -> Callable[..., Any]:
    """``call(fn, *args)`` runs ``fn`` on ``module`` from the same full state (and global RNG
    state) every time."""
    state = copy.deepcopy(module.state_dict())
    rng = torch.get_rng_state()

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        module.load_state_dict(state)
        torch.set_rng_state(rng)
        return fn(*args)

    return call


def seeded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` from a fixed global RNG state (a G's noise draws, if it has any)."""
    torch.manual_seed(1234)
    return fn(*args)


def groups(d: Discriminator) -> tuple[int, list[list[int]]]:
    """(batch size, the sample groups D may mix within): N singletons for a D that mixes
    nothing, else at least two whole groups of ``d.sample_group``."""
    g = d.sample_group
    n = N if g == 1 else max(2, -(-N // g)) * g
    return n, [list(range(k, k + g)) for k in range(0, n, g)]


def exact(a: Tensor, b: Tensor) -> None:
    assert_close(a, b, rtol=0, atol=0)


# -- shapes and attributes ------------------------------------------------------------------------


# Arches known to take labels; the probe must find their conditional case (a ConfigError
# there would otherwise quietly drop the conditional coverage).
CONDITIONAL_ARCHES = PAPER_CONDITIONAL_ARCHES | {"dcgan"}


def test_the_probe_covers_every_arch() -> None:
    assert MODELS.names(), "the MODELS registry is empty"
    for arch in MODELS.names():
        mine = [c for c in CASES if c.arch == arch and c.shape is not None]
        assert mine, f"no supported shape found for model.arch={arch}"
        images = {c.shape[0] for c in mine if len(c.shape) == 3}
        assert images in (set(), {1, 3}), f"{arch}: image arches must take 1 and 3 channels"
        if arch in CONDITIONAL_ARCHES:
            assert any(c.conditional for c in mine), f"{arch} lost its conditional case"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_attributes_and_output_shapes(case: Case, mode: str) -> None:
    g, d = make(case)
    g.train(mode == "train")
    d.train(mode == "train")
    k = NUM_CLASSES if case.conditional else 0
    assert (g.conditional, d.conditional) == (case.conditional, case.conditional)
    assert (g.num_classes, d.num_classes) == (k, k)
    assert isinstance(g.z_dim, int) and g.z_dim >= 1
    y = labels(case)
    z = latents(g)
    assert z.shape == (N, g.z_dim) and z.dtype == torch.float32
    x = g(z, y)
    assert x.shape == (N, *case.shape) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    if len(case.shape) == 3 and g.bounded:  # image data lives in [-1, 1]; G can match it
        assert x.min() >= -1 and x.max() <= 1
    for inp in (x, real_like(case)):
        h = d.trunk(inp)
        assert h.ndim == 2 and h.shape[0] == N and h.shape[1] >= 1
        out = d(inp, y)
        assert out.shape == (N,) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_d_head_is_affine_so_d_returns_raw_logits(case: Case) -> None:
    """``head`` is the last linear layer (+ projection): no sigmoid or other squashing."""
    g, d = make(case)
    d.eval()
    y = labels(case)
    with torch.no_grad():
        h1, h2 = d.trunk(real_like(case, 3)), d.trunk(real_like(case, 4))
        o1, o2 = d.head(h1, y), d.head(h2, y)
        assert not torch.equal(o1, o2)
        # Extrapolating (3 h1 - 2 h2): any nonlinearity after the features shows up here.
        scale = 1 + max(o1.abs().max().item(), o2.abs().max().item())
        assert_close(d.head(3 * h1 - 2 * h2, y), 3 * o1 - 2 * o2, rtol=1e-4, atol=1e-4 * scale)


def test_conditional_models_need_labels_unconditional_ignore_them(case: Case) -> None:
    g, d = make(case)
    g.eval()
    d.eval()
    z, x = latents(g), real_like(case)
    y = torch.arange(N) % NUM_CLASSES
    with torch.no_grad():
        if case.conditional:
            with pytest.raises(ValueError, match="labels"):
                g(z)
            with pytest.raises(ValueError, match="labels"):
                d(x)
        else:
            exact(seeded(g, z, y), seeded(g, z))
            exact(d(x, y), d(x))


# -- the AdvAug splits ----------------------------------------------------------------------------


def test_forward_equals_splits_in_eval(case: Case) -> None:
    g, d = make(case)
    g.eval()
    d.eval()
    y = labels(case)
    with torch.no_grad():
        z = latents(g)
        x = seeded(g, z, y)
        exact(x, seeded(lambda: g.rest(g.stem(z, y), y)))
        for inp in (x, real_like(case)):
            exact(d(inp, y), d.head(d.trunk(inp), y))


def test_forward_equals_splits_in_train_mode_from_the_same_state(case: Case) -> None:
    g, d = make(case)
    g.train()
    d.train()
    y = labels(case)
    z = latents(g)
    call_g, call_d = replay(g), replay(d)
    x = call_g(g, z, y)
    exact(x, call_g(lambda: g.rest(g.stem(z, y), y)))
    x = x.detach()
    exact(call_d(d, x, y), call_d(lambda: d.head(d.trunk(x), y)))
    # And the restore is what makes them equal: SN moves on with every training-mode call.
    if any(name.endswith("_u") for name, _ in d.named_buffers()):
        d(x, y)
        assert not torch.equal(d(x, y), call_d(d, x, y))


# -- D never mixes samples across its sample groups (DigGAN's per-sample gradients rely on it) ---


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_d_logit_does_not_depend_on_other_samples(case: Case, mode: str) -> None:
    _, d = make(case)
    d.train(mode == "train")
    call = replay(d)
    n, parts = groups(d)
    y = labels(case, n)
    x = real_like(case, 5, n)
    other = real_like(case, 6, n)
    with torch.no_grad():
        base = call(d, x, y)
        for grp in parts:
            x2 = other.clone()
            x2[grp] = x[grp]
            out = call(d, x2, y)
            exact(out[grp], base[grp])  # grp's logits ignore the other groups' samples
            rest = [j for j in range(n) if j not in grp]
            assert not torch.equal(out[rest], base[rest])  # the other samples did change
            yg = None if y is None else y[grp]
            assert_close(call(d, x[grp], yg), base[grp])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_d_input_gradient_is_each_samples_own(case: Case, mode: str) -> None:
    """Each sample's own gradient, or with sample groups, its group's own."""
    _, d = make(case)
    d.train(mode == "train")
    call = replay(d)
    n, parts = groups(d)
    y = labels(case, n)
    x = real_like(case, 7, n).requires_grad_(True)
    (batch_grad,) = torch.autograd.grad(call(d, x, y).sum(), x)
    for grp in parts:
        xg = x[grp].detach().requires_grad_(True)
        yg = None if y is None else y[grp]
        (gg,) = torch.autograd.grad(call(d, xg, yg).sum(), xg)
        assert gg.abs().sum() > 0
        assert_close(batch_grad[grp], gg)


# -- latents --------------------------------------------------------------------------------------


def test_sample_z_draws_only_from_the_given_generator(case: Case) -> None:
    g, _ = make(case)
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(7)
    a1, a2 = g.sample_z(N, gen, "cpu"), g.sample_z(N, gen, "cpu")
    assert torch.equal(torch.get_rng_state(), global_state), "sample_z used the global RNG"
    assert a1.shape == (N, g.z_dim) and torch.isfinite(a1).all()
    assert not torch.equal(a1, a2), "sample_z did not advance the generator"
    torch.manual_seed(999)  # a different global state must not matter
    exact(g.sample_z(N, torch.Generator().manual_seed(7), "cpu"), a1)
    assert not torch.equal(g.sample_z(N, torch.Generator().manual_seed(8), "cpu"), a1)


# -- state_dict -----------------------------------------------------------------------------------


def _perturb(g: Generator, d: Discriminator, case: Case) -> None:
    """Move every parameter and buffer away from its init: one SGD step on each net (the
    training-mode forwards also advance SN's vectors and BN's running stats)."""
    g.train()
    d.train()
    y = labels(case)
    params = list(g.parameters()) + list(d.parameters())
    opt = torch.optim.SGD(params, lr=1e-2)
    for seed in (10, 11):
        opt.zero_grad()
        x = g(latents(g, seed), y)
        (d(x, y).mean() + x.mean()).backward()
        opt.step()
    for p in params:
        assert torch.isfinite(p).all()


def test_state_dict_round_trip_gives_identical_outputs(case: Case) -> None:
    g, d = make(case, seed=0)
    _perturb(g, d, case)
    g2, d2 = make(case, seed=1)
    y = labels(case)
    z, x = latents(g, 20), real_like(case, 21)
    g.eval()
    d.eval()
    g2.eval()
    d2.eval()
    with torch.no_grad():
        assert not torch.equal(seeded(g2, z, y), seeded(g, z, y))  # a fresh pair is different
        assert not torch.equal(d2(x, y), d(x, y))
    g2.load_state_dict(copy.deepcopy(g.state_dict()))
    d2.load_state_dict(copy.deepcopy(d.state_dict()))
    with torch.no_grad():
        exact(seeded(g2, z, y), seeded(g, z, y))
        exact(d2(x, y), d(x, y))
    # Train mode too: SN's power iteration must continue from the saved vectors.
    for net in (g, d, g2, d2):
        net.train()
    with torch.no_grad():
        for _ in range(2):
            exact(seeded(g2, z, y), seeded(g, z, y))
            exact(d2(x, y), d(x, y))
