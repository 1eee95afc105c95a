"""Tests for tuneable_gan.models: shapes, the AdvAug splits, per-sample D gradients, SN, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.testing import assert_close

from tuneable_gan.config import ModelConfig, from_dict
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import MODELS, DataSpec, build_models

TOY_SPEC = DataSpec(shape=(1,), num_classes=0)
N = 6


def _build(arch: str = "dcgan", res: int = 16, channels: int = 3, conditional: bool = False,
           num_classes: int = 10, **kw: int) -> tuple[nn.Module, nn.Module, DataSpec]:
    torch.manual_seed(0)
    spec = TOY_SPEC if arch == "toy" else DataSpec((channels, res, res), num_classes)
    cfg = ModelConfig(arch=arch, conditional=conditional, **kw)
    g, d = build_models(cfg, spec)
    return g, d, spec


def _labels(g: nn.Module, n: int = N) -> torch.Tensor | None:
    return torch.arange(n) % g.num_classes if g.conditional else None


IMAGE_CASES = [(res, c, cond) for res in (8, 16, 32) for c in (1, 3) for cond in (False, True)]
ALL_CASES = [("dcgan", *case) for case in IMAGE_CASES] + [("toy", 0, 1, False)]
CASE_IDS = [f"{a}-r{r}-c{c}-{'cond' if k else 'uncond'}" for a, r, c, k in ALL_CASES]


def test_registry_has_models() -> None:
    assert "toy" in MODELS and "dcgan" in MODELS


@pytest.mark.parametrize(("arch", "res", "channels", "conditional"), ALL_CASES, ids=CASE_IDS)
def test_shapes_and_attributes(arch: str, res: int, channels: int, conditional: bool) -> None:
    g, d, spec = _build(arch, res, channels, conditional, z_dim=16, g_ch=8, d_ch=8)
    assert g.conditional == conditional and d.conditional == conditional
    assert g.num_classes == (10 if conditional else 0)
    assert g.z_dim == (1 if arch == "toy" else 16)
    z = g.sample_z(N, torch.Generator().manual_seed(1), "cpu")
    assert z.shape == (N, g.z_dim)
    y = _labels(g)
    x = g(z, y)
    assert x.shape == (N, *spec.shape)
    if arch == "dcgan":
        assert x.min() >= -1.0 and x.max() <= 1.0
    out = d(x, y)
    assert out.shape == (N,)
    h = d.trunk(x)
    assert h.ndim == 2 and h.shape[0] == N


def test_toy_ignores_cfg_sizes_and_is_the_paper_net() -> None:
    g, d, _ = _build("toy", z_dim=64, g_ch=32, d_ch=32)
    assert g.z_dim == 1
    assert sum(p.numel() for p in g.parameters()) == (1 * 5 + 5) + (5 * 5 + 5) + (5 * 1 + 1)
    assert sum(p.numel() for p in d.parameters()) == (1 * 10 + 10) + (10 * 10 + 10) + (10 + 1)
    assert g.stem(torch.zeros(3, 1)).shape == (3, 5)
    assert d.trunk(torch.zeros(3, 1)).shape == (3, 10)
    # Sigmoid hidden units are in (0, 1); the trunk ends with one.
    h = d.trunk(torch.linspace(-10, 10, 7)[:, None])
    assert h.min() > 0 and h.max() < 1


@pytest.mark.parametrize(("arch", "res", "channels", "conditional"), ALL_CASES, ids=CASE_IDS)
def test_splits_match_forward_exactly(arch: str, res: int, channels: int,
                                      conditional: bool) -> None:
    g, d, _ = _build(arch, res, channels, conditional, z_dim=16, g_ch=8, d_ch=8)
    g.eval()
    d.eval()
    with torch.no_grad():
        z = g.sample_z(N, torch.Generator().manual_seed(2), "cpu")
        y = _labels(g)
        x = g(z, y)
        assert_close(x, g.rest(g.stem(z, y), y), atol=0, rtol=0)
        assert_close(d(x, y), d.head(d.trunk(x), y), atol=0, rtol=0)


def test_dcgan_stem_is_the_4x4_map() -> None:
    g, _, _ = _build(z_dim=16, g_ch=8)
    assert g.stem(torch.zeros(2, 16)).shape == (2, 4 * 8, 4, 4)


@pytest.mark.parametrize(("arch", "conditional"),
                         [("dcgan", False), ("dcgan", True), ("toy", False)])
def test_d_has_no_cross_sample_ops(arch: str, conditional: bool) -> None:
    g, d, _ = _build(arch, 16, 3, conditional, z_dim=16, g_ch=8, d_ch=8)
    d.eval()  # freezes SN's power iteration so every call sees the same weights
    gen = torch.Generator().manual_seed(3)
    shape = (N, 1) if arch == "toy" else (N, 3, 16, 16)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    y = _labels(g)
    (batch_grad,) = torch.autograd.grad(d(x, y).sum(), x)
    for i in range(N):
        xi = x[i:i + 1].detach().requires_grad_(True)
        yi = None if y is None else y[i:i + 1]
        (gi,) = torch.autograd.grad(d(xi, yi).sum(), xi)
        assert_close(batch_grad[i:i + 1], gi)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())


def test_conditional_d_depends_on_y_unconditional_ignores_it() -> None:
    _, d, _ = _build(conditional=True, z_dim=16, g_ch=8, d_ch=8)
    d.eval()
    x = torch.randn(N, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    y0, y1 = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    with torch.no_grad():
        assert not torch.allclose(d(x, y0), d(x, y1))
    _, du, _ = _build(conditional=False, z_dim=16, g_ch=8, d_ch=8)
    du.eval()
    with torch.no_grad():
        assert_close(du(x, y0), du(x, y1), atol=0, rtol=0)
        assert_close(du(x, y0), du(x), atol=0, rtol=0)


def test_conditional_models_need_labels() -> None:
    g, d, _ = _build(conditional=True, z_dim=16, g_ch=8, d_ch=8)
    z = torch.randn(2, 16)
    with pytest.raises(ValueError, match="labels"):
        g(z)
    with pytest.raises(ValueError, match="labels"):
        d(torch.randn(2, 3, 16, 16))


def test_conditional_g_depends_on_y() -> None:
    g, _, _ = _build(conditional=True, z_dim=16, g_ch=8, d_ch=8)
    g.eval()
    z = g.sample_z(N, torch.Generator().manual_seed(5), "cpu")
    y0, y1 = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    with torch.no_grad():
        # Class gains start at 1 and biases at 0: every class starts as the same plain BN.
        assert_close(g(z, y0), g(z, y1), atol=0, rtol=0)
    # One step on a class-0-only loss moves class 0's BN gain/bias and nobody else's.
    g.train()
    opt = torch.optim.SGD(g.parameters(), lr=1.0)
    (g(z, y0) ** 2).mean().backward()
    opt.step()
    g.eval()
    with torch.no_grad():
        assert not torch.allclose(g(z, y0), g(z, y1))


def test_spectral_norm_on_every_d_layer_none_on_g() -> None:
    g, d, _ = _build(conditional=True, z_dim=16, g_ch=8, d_ch=8)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    # res 16: conv3x3 + 2 strided convs + linear + projection embedding
    assert len(layers) == 5
    for m in layers:
        assert parametrize.is_parametrized(m, "weight")
        # torch's parametrization (its fp32 subclass, models.base.FP32SpectralNorm)
        assert isinstance(m.parametrizations.weight[0], _SpectralNorm)
    assert not any(parametrize.is_parametrized(m) for m in g.modules())


def test_dcgan_init() -> None:
    g, d, _ = _build(z_dim=64, g_ch=32, d_ch=32)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in convs:
        assert_close(m.bias, torch.zeros_like(m.bias), atol=0, rtol=0)
    big = g.linear.weight
    assert abs(big.std().item() - 0.02) < 0.002 and abs(big.mean().item()) < 0.002
    orig = d.features[0].parametrizations.weight.original
    assert orig.std().item() < 0.05


def test_param_counts_are_cpu_sized() -> None:
    g, d, _ = _build("dcgan", 16, 3, False)  # default ModelConfig sizes
    assert sum(p.numel() for p in g.parameters()) < 1_500_000
    assert sum(p.numel() for p in d.parameters()) < 1_500_000


@pytest.mark.parametrize("arch", ["dcgan", "toy"])
def test_sample_z_reproducible_and_uses_only_the_generator(arch: str) -> None:
    g, _, _ = _build(arch)
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    a = g.sample_z(500, torch.Generator().manual_seed(7), "cpu")
    gen = torch.Generator().manual_seed(7)
    b1, b2 = g.sample_z(500, gen, "cpu"), g.sample_z(500, gen, "cpu")
    assert_close(a, b1, atol=0, rtol=0)
    assert not torch.equal(b1, b2)
    assert torch.equal(torch.get_rng_state(), global_state)
    if arch == "toy":
        assert a.shape == (500, 1) and a.min() >= -5.0 and a.max() < 5.0
        assert a.min() < -4.0 and a.max() > 4.0
    else:
        assert a.shape == (500, 64)
        assert abs(a.mean().item()) < 0.05 and abs(a.std().item() - 1.0) < 0.05


@pytest.mark.parametrize("res", [4, 24, 64])
def test_bad_resolution_raises(res: int) -> None:
    with pytest.raises(ConfigError, match="data.resolution") as e:
        build_models(ModelConfig(arch="dcgan"), DataSpec((3, res, res), 0))
    assert "8, 16, 32" in str(e.value) and "\n" not in str(e.value)


def test_non_square_and_wrong_rank_raise() -> None:
    with pytest.raises(ConfigError, match="data.resolution"):
        build_models(ModelConfig(arch="dcgan"), DataSpec((3, 16, 8), 0))
    with pytest.raises(ConfigError, match="model.arch"):
        build_models(ModelConfig(arch="dcgan"), TOY_SPEC)
    with pytest.raises(ConfigError, match="model.arch"):
        build_models(ModelConfig(arch="toy"), DataSpec((3, 16, 16), 0))


@pytest.mark.parametrize("arch", ["dcgan", "toy"])
def test_conditional_without_classes_raises(arch: str) -> None:
    spec = TOY_SPEC if arch == "toy" else DataSpec((3, 16, 16), 0)
    with pytest.raises(ConfigError, match="model.conditional") as e:
        build_models(ModelConfig(arch=arch, conditional=True), spec)
    assert "\n" not in str(e.value)


def test_toy_conditional_raises_even_with_classes() -> None:
    with pytest.raises(ConfigError, match="model.conditional"):
        build_models(ModelConfig(arch="toy", conditional=True), DataSpec((1,), 2))


def test_unknown_arch_is_refused_by_the_config_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="model.arch") as e:
        from_dict({"model.arch": "no_such_arch"})
    assert all(name in str(e.value) for name in MODELS.names())
