"""Tests for the paper architectures (sngan, biggan): shapes, AdvAug splits, per-sample D
gradients, spectral norm placement, exact parameter counts, the init against the references
(BigGAN's ccBN embeddings at N(0, 0.02)), errors, a trainer step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.testing import assert_close

from tuneable_gan.config import ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import MODELS, DataSpec, build_models
from tuneable_gan.models.biggan import ClassCondBN
from tuneable_gan.trainer import GANTrainer

N = 4
SMALL = {"z_dim": 16, "g_ch": 8, "d_ch": 8}
# (arch, channels, conditional): both archs, 1- and 3-channel data, biggan both ways.
CASES = [("sngan", 3, False), ("sngan", 1, False), ("biggan", 3, False), ("biggan", 3, True),
         ("biggan", 1, True)]
IDS = [f"{a}-c{c}-{'cond' if k else 'uncond'}" for a, c, k in CASES]


def _build(arch: str, channels: int = 3, conditional: bool = False, num_classes: int = 10,
           **kw: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    sizes = SMALL | kw
    return build_models(ModelConfig(arch=arch, conditional=conditional, **sizes),
                        DataSpec((channels, 32, 32), num_classes))


def _labels(g: nn.Module, n: int = N) -> torch.Tensor | None:
    return torch.arange(n) % g.num_classes if g.conditional else None


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _is_sn(m: nn.Module) -> bool:
    return parametrize.is_parametrized(m, "weight") and isinstance(
        m.parametrizations.weight[0], _SpectralNorm)


def test_registered() -> None:
    assert "sngan" in MODELS and "biggan" in MODELS


@pytest.mark.parametrize(("arch", "channels", "conditional"), CASES, ids=IDS)
def test_shapes_range_and_splits(arch: str, channels: int, conditional: bool) -> None:
    g, d = _build(arch, channels, conditional)
    assert g.conditional == d.conditional == conditional
    assert g.z_dim == 16
    z = g.sample_z(N, torch.Generator().manual_seed(1), "cpu")
    y = _labels(g)
    x = g(z, y)  # train mode: batch statistics
    assert x.shape == (N, channels, 32, 32)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert d(x, y).shape == (N,)
    g.eval()
    d.eval()
    with torch.no_grad():
        x = g(z, y)
        u = g.stem(z, y)
        assert u.shape == (N, 4 * 8, 4, 4)  # both archs: 4 g_ch channels on the 4x4 stem map
        assert_close(x, g.rest(u, y), atol=0, rtol=0)
        h = d.trunk(x)
        assert h.shape == (N, d.num_features)
        assert h.min() >= 0  # pooled after a ReLU
        assert_close(d(x, y), d.head(h, y), atol=0, rtol=0)


@pytest.mark.parametrize(("arch", "channels", "conditional"), CASES, ids=IDS)
def test_d_has_no_cross_sample_ops(arch: str, channels: int, conditional: bool) -> None:
    g, d = _build(arch, channels, conditional)
    d.eval()  # freezes SN's power iteration so every call sees the same weights
    x = torch.randn(N, channels, 32, 32, generator=torch.Generator().manual_seed(3),
                    requires_grad=True)
    y = _labels(g)
    (batch_grad,) = torch.autograd.grad(d(x, y).sum(), x)
    for i in range(N):
        xi = x[i:i + 1].detach().requires_grad_(True)
        yi = None if y is None else y[i:i + 1]
        (gi,) = torch.autograd.grad(d(xi, yi).sum(), xi)
        assert_close(batch_grad[i:i + 1], gi)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())


def test_biggan_conditional_d_depends_on_y_unconditional_ignores_it() -> None:
    x = torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y0, y1 = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    _, d = _build("biggan", conditional=True)
    d.eval()
    with torch.no_grad():
        assert not torch.allclose(d(x, y0), d(x, y1))
    with pytest.raises(ValueError, match="labels"):
        d(x)
    _, du = _build("biggan", conditional=False)
    du.eval()
    with torch.no_grad():
        assert_close(du(x, y0), du(x), atol=0, rtol=0)


def test_biggan_ccbn_embeddings_start_at_n02_like_the_reference() -> None:
    # BigGAN.py Generator.init_weights with --G_init N02: nn.Embedding weights ~ N(0, 0.02),
    # and ccbn's gain/bias are nn.Embedding when G_shared is False.
    g, _ = _build("biggan", conditional=True, z_dim=128, g_ch=64, d_ch=64)
    ccbns = [m for m in g.modules() if isinstance(m, ClassCondBN)]
    assert len(ccbns) == 6  # two per GBlock
    for m in ccbns:
        assert not m.bn.affine and m.bn.eps == 1e-5 and m.bn.momentum == 0.1
        for e in (m.gain.weight, m.bias.weight):
            assert e.shape == (10, 256)
            assert abs(e.std().item() - 0.02) < 0.002 and abs(e.mean().item()) < 0.002
    pooled = torch.cat([e.flatten() for m in ccbns for e in (m.gain.weight, m.bias.weight)])
    assert abs(pooled.std().item() - 0.02) < 5e-4 and abs(pooled.mean().item()) < 5e-4
    # Standalone, too (BigGAN's init, not nn.Embedding's N(0, 1)).
    torch.manual_seed(0)
    m = ClassCondBN(256, 100)
    assert abs(m.gain.weight.std().item() - 0.02) < 0.001
    assert abs(m.bias.weight.std().item() - 0.02) < 0.001


def test_biggan_ccbn_output_is_bn_times_one_plus_gain_plus_bias() -> None:
    torch.manual_seed(0)
    m = ClassCondBN(5, 3)
    x = torch.randn(6, 5, 4, 4)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    mean0, var0 = m.bn.running_mean.clone(), m.bn.running_var.clone()
    out = m(x, y)
    # layers.ccbn: F.batch_norm(x, stored_mean, stored_var, None, None, training, 0.1, eps),
    # then * (1 + gain(y)) + bias(y).
    rm, rv = mean0.clone(), mean0.clone() * 0 + var0
    bn = F.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5)
    e_g, e_b = m.gain.weight.detach(), m.bias.weight.detach()
    want = bn * (1 + e_g[y])[:, :, None, None] + e_b[y][:, :, None, None]
    assert_close(out, want, rtol=1e-6, atol=1e-7)
    assert_close(m.bn.running_mean, rm) and assert_close(m.bn.running_var, rv)
    m.eval()
    with torch.no_grad():
        bn = F.batch_norm(x, rm, rv, None, None, False, 0.1, 1e-5)
        assert_close(m(x, y), bn * (1 + e_g[y])[:, :, None, None] + e_b[y][:, :, None, None],
                     rtol=1e-6, atol=1e-7)


def test_biggan_ccbn_classes_differ_from_init_and_learn_per_class() -> None:
    g, _ = _build("biggan", conditional=True)
    z = g.sample_z(N, torch.Generator().manual_seed(5), "cpu")
    y0, y1 = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    g.eval()
    with torch.no_grad():  # N(0, 0.02) embeddings: classes are not the same map at init
        assert not torch.allclose(g(z, y0), g(z, y1))
    g.train()
    (g(z, y0) ** 2).mean().backward()
    for m in (m for m in g.modules() if isinstance(m, ClassCondBN)):
        for e in (m.gain.weight, m.bias.weight):
            assert e.grad[0].abs().sum() > 0 and torch.count_nonzero(e.grad[1:]) == 0
    # Unconditional: plain affine BN (gain 1, bias 0, as layers.bn), no embeddings.
    gu, _ = _build("biggan", conditional=False)
    assert not any(isinstance(m, nn.Embedding) for m in gu.modules())
    bns = [m for m in gu.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 7 and all(b.affine for b in bns)
    assert all(torch.equal(b.weight, torch.ones_like(b.weight)) for b in bns)
    assert all(torch.count_nonzero(b.bias) == 0 for b in bns)


@pytest.mark.parametrize("arch", ["sngan", "biggan"])
def test_spectral_norm_placement(arch: str) -> None:
    g, d = _build(arch, conditional=arch == "biggan")
    d_layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    # 4 blocks x 2 convs + 2 learnable shortcuts + linear (+ projection embedding for biggan)
    assert len(d_layers) == (11 if arch == "sngan" else 12)
    assert all(_is_sn(m) for m in d_layers)
    g_layers = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(g_layers) == 1 + 3 * 3 + 1  # stem, 3 blocks x (2 convs + shortcut), output conv
    if arch == "sngan":
        assert not any(parametrize.is_parametrized(m) for m in g.modules())
    else:
        assert all(_is_sn(m) for m in g_layers)
        # The ccBN embeddings are not normalised (as in the reference).
        assert not any(parametrize.is_parametrized(m) for m in g.modules()
                       if isinstance(m, nn.Embedding))
        eps = {m.parametrizations.weight[0].eps for m in [*g_layers, *d_layers]}
        assert eps == {1e-8}
    # G's convs stay Conv2d (what pruning looks for), SN'd ones keep the raw weight at .original.
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 * 3 + 1
    for m in convs:
        raw = m.parametrizations.weight.original if arch == "biggan" else m.weight
        assert isinstance(raw, nn.Parameter) and raw.shape == m.weight.shape


@pytest.mark.parametrize("arch", ["sngan", "biggan"])
def test_g_state_has_only_float_or_integer_tensors_and_sn_buffers(arch: str) -> None:
    g, _ = _build(arch, conditional=arch == "biggan")
    state = g.state_dict()
    for k, t in state.items():
        assert t.is_floating_point() or t.dtype == torch.int64, k
    sn_keys = [k for k in state if k.endswith("._u") or k.endswith("._v")]
    assert len(sn_keys) == (0 if arch == "sngan" else 2 * 11)
    assert any(k.endswith("running_var") for k in state)


# Hand-computed from the reference layer lists (conv3x3 W->W: 9 W^2 + W, etc.):
#   sngan G = l1 528384 + 3 x 1246976 + b5 512 + c5 6915;  D = 151680 + 311680 + 2 x 295168 + 128
#   biggan G (10 classes) = 528384 + 3 x (2 x 590080 + 65792 + 4 x 10 x 256) + 512 + 6915
#   biggan D (10 classes) = 598272 + 1245952 + 2 x 1180160 + 257 + 10 x 256
PAPER_COUNTS = [
    ("sngan", False, 10, 4_276_739, 1_053_824),
    ("biggan", True, 10, 4_304_387, 4_207_361),
    ("biggan", True, 100, 4_580_867, 4_230_401),
    ("biggan", False, 10, 4_276_739, 4_204_801),
]


@pytest.mark.parametrize(("arch", "conditional", "classes", "g_count", "d_count"), PAPER_COUNTS)
def test_paper_parameter_counts(arch: str, conditional: bool, classes: int, g_count: int,
                                d_count: int) -> None:
    g, d = _build(arch, 3, conditional, classes, z_dim=128, g_ch=64, d_ch=64)
    assert (_count(g), _count(d)) == (g_count, d_count)


def _raw_weight(m: nn.Module) -> torch.Tensor:
    return m.parametrizations.weight.original if parametrize.is_parametrized(m) else m.weight


def test_init_follows_the_references() -> None:
    g, d = _build("biggan", conditional=True, z_dim=128, g_ch=64, d_ch=64)
    w = g.blocks[0].conv1.parametrizations.weight.original
    assert abs(w.std().item() - 0.02) < 0.001
    w = d.embed.parametrizations.weight.original
    assert abs(w.std().item() - 0.02) < 0.002
    # BigGAN.py init_weights (G and D, N02): every Conv2d / Linear / Embedding weight, the ccBN
    # embeddings included, N(0, 0.02); biases keep torch's default U(-1/sqrt(fan_in), ...);
    # G's output BN (layers.bn) starts at gain 1, bias 0.
    for net, count in ((g, 1 + 3 * 3 + 1 + 3 * 4), (d, 4 * 2 + 2 + 1 + 1)):
        layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
        assert len(layers) == count
        for m in layers:
            w = _raw_weight(m)
            if w.numel() >= 2000:  # the std is only meaningful on enough entries
                assert abs(w.std().item() - 0.02) < 0.002, m
            assert w.abs().max() < 0.02 * 7, m
            if getattr(m, "bias", None) is not None:
                fan_in = w[0].numel()
                assert m.bias.abs().max() <= fan_in ** -0.5 and m.bias.abs().max() > 0, m
    assert torch.equal(g.out_bn.weight, torch.ones(256)) and torch.count_nonzero(g.out_bn.bias) == 0
    g, d = _build("sngan", z_dim=128, g_ch=64, d_ch=64)
    w = g.blocks[0].c1.weight  # xavier_uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    bound = (6 / (2 * 256 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert abs(g.b5.weight.mean().item() - 1.0) < 0.01 and g.b5.bias.abs().max() == 0


@pytest.mark.parametrize("arch", ["sngan", "biggan"])
@pytest.mark.parametrize("res", [16, 64])
def test_bad_resolution_raises(arch: str, res: int) -> None:
    with pytest.raises(ConfigError) as e:
        build_models(ModelConfig(arch=arch), DataSpec((3, res, res), 0))
    assert str(e.value) == f"data.resolution must be 32 for model.arch={arch}; got {res}"


@pytest.mark.parametrize("arch", ["sngan", "biggan"])
def test_non_image_and_non_square_raise(arch: str) -> None:
    with pytest.raises(ConfigError, match="data.resolution"):
        build_models(ModelConfig(arch=arch), DataSpec((3, 32, 16), 0))
    with pytest.raises(ConfigError, match="model.arch"):
        build_models(ModelConfig(arch=arch), DataSpec((1,), 0))


def test_sngan_conditional_raises() -> None:
    with pytest.raises(ConfigError, match="model.conditional") as e:
        build_models(ModelConfig(arch="sngan", conditional=True), DataSpec((3, 32, 32), 10))
    assert "model.arch=sngan" in str(e.value) and "\n" not in str(e.value)


def test_biggan_conditional_without_classes_raises() -> None:
    with pytest.raises(ConfigError, match="model.conditional"):
        build_models(ModelConfig(arch="biggan", conditional=True), DataSpec((3, 32, 32), 0))


@pytest.mark.parametrize(("arch", "conditional"), [("sngan", False), ("biggan", True),
                                                   ("biggan", False)])
def test_trainer_step_on_digits(arch: str, conditional: bool) -> None:
    cfg = tiny_config(model__arch=arch, model__conditional=conditional, data__resolution=32,
                      model__g_ch=8, model__d_ch=8, model__z_dim=16)
    trainer = GANTrainer(cfg)
    m = trainer.train_step()
    assert m["step"] == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
    assert trainer.samples(3).shape == (3, 1, 32, 32)
