"""Image GANs conditioned on a float instance prior ``p`` (n, d) (``DataSpec.prior_dim > 0``).

Oracles are written from the formulas: D(x, p) = w_sn . h + b + <W_sn p, h> with each
``W_sn = W / ||W||_2`` computed here from the raw weight by ``torch.linalg.matrix_norm`` (after
``exact_spectral_norm_`` puts torch's stored singular vectors on the true ones, so eval mode
divides by the same sigma); dcgan/sngan BN gains ``W p + 1`` near 1 at init; BigGAN's ccBN
``BN(x) * (1 + W_g e) + W_b e`` with ``e = G_emb(p)``. The class-conditional and unconditional
models are pinned to numbers recorded before the prior was added.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.testing import assert_close

from tuneable_gan.config import ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import DataSpec, build_models, resolve_conditional
from tuneable_gan.models.base import CondBatchNorm2d
from tuneable_gan.models.biggan import SHARED_DIM, ClassCondBN
from tuneable_gan.models.spectral import exact_spectral_norm_

ARCHES = ("dcgan", "sngan", "biggan")
RES = {"dcgan": 16, "sngan": 32, "biggan": 32}
HEAD = {"dcgan": "linear", "sngan": "l5", "biggan": "linear"}  # D's unconditional linear head
SIZES = {"z_dim": 8, "g_ch": 4, "d_ch": 4}
D_PRIOR = 5
N = 4


def _spec(arch: str, num_classes: int = 0, prior_dim: int = D_PRIOR) -> DataSpec:
    return DataSpec((3, RES[arch], RES[arch]), num_classes, prior_dim)


def _build(arch: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return build_models(ModelConfig(arch=arch, **SIZES), _spec(arch))


def _priors(n: int = N, seed: int = 1) -> Tensor:
    """L2-normalised priors, as the stored features are."""
    return F.normalize(torch.randn(n, D_PRIOR, generator=torch.Generator().manual_seed(seed)),
                       dim=1)


def _inputs(arch: str, g: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(N, g.z_dim, generator=gen)
    x = torch.rand(N, 3, RES[arch], RES[arch], generator=gen) * 2 - 1
    return z, x, _priors()


def _w_sn(m: nn.Module) -> Tensor:
    """Oracle: the raw weight divided by its largest singular value."""
    w = m.parametrizations.weight.original.detach().double()
    return w / torch.linalg.matrix_norm(w, 2)


@pytest.mark.parametrize("arch", ARCHES)
def test_attributes_and_shapes(arch: str) -> None:
    g, d = _build(arch)
    for m in (g, d):
        assert m.conditional is True and m.num_classes == 0 and m.prior_dim == D_PRIOR
    z, x, p = _inputs(arch, g)
    out = g(z, p)
    assert out.shape == (N, 3, RES[arch], RES[arch]) and out.dtype == torch.float32
    assert d(x, p).shape == (N,)
    g.eval()
    assert_close(g.rest(g.stem(z, p), p), g(z, p))
    # need_labels still guards a missing prior.
    with pytest.raises(ValueError):
        g(z)
    with pytest.raises(ValueError):
        d(x)


@pytest.mark.parametrize("arch", ARCHES)
def test_projection_term_by_hand(arch: str) -> None:
    _, d = _build(arch)
    exact_spectral_norm_(d)
    d.eval()  # eval: torch divides by u^T W v with the (now exact) stored vectors
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(N, 3, RES[arch], RES[arch], generator=gen) * 2 - 1
    p = _priors()
    h = d.trunk(x).detach().double()
    assert h.shape == (N, d.num_features)
    head = getattr(d, HEAD[arch])
    lin = h @ _w_sn(head).T[:, 0]
    if head.bias is not None:
        lin = lin + head.bias.detach().double()
    assert d.embed.bias is None and d.embed.weight.shape == (d.num_features, D_PRIOR)
    expected = lin + ((p.double() @ _w_sn(d.embed).T) * h).sum(dim=1)
    with torch.no_grad():
        assert_close(d(x, p).double(), expected, rtol=1e-5, atol=1e-5)
        assert_close(d.head(d.trunk(x), p).double(), expected, rtol=1e-5, atol=1e-5)
    # The gradient w.r.t. p exists and is the projection's own: W_sn^T h per sample.
    p_leaf = p.clone().requires_grad_(True)
    d(x, p_leaf).sum().backward()
    assert p_leaf.grad is not None
    assert_close(p_leaf.grad.double(), h @ _w_sn(d.embed), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHES)
def test_outputs_depend_on_the_prior(arch: str) -> None:
    g, d = _build(arch)
    g.eval()
    d.eval()
    z, x, p = _inputs(arch, g)
    q = _priors(seed=7)
    with torch.no_grad():
        assert (d(x, p) - d(x, q)).abs().min() > 0
        assert (g(z, p) - g(z, q)).abs().amax(dim=(1, 2, 3)).min() > 0
        assert_close(d(x, p), d(x, p))  # eval mode: deterministic, so the change is p's


@pytest.mark.parametrize("arch", ARCHES)
def test_d_does_not_mix_samples(arch: str) -> None:
    g, d = _build(arch)
    d.eval()
    _, x, p = _inputs(arch, g)
    with torch.no_grad():
        out = d(x, p)
        for i in range(N):
            assert_close(d(x[i:i + 1], p[i:i + 1]), out[i:i + 1], rtol=1e-5, atol=1e-6)
        # Changing one sample's prior changes that sample's output only.
        q = p.clone()
        q[1] = _priors(1, seed=9)[0]
        changed = d(x, q)
    assert changed[1] != out[1]
    assert_close(changed[[0, 2, 3]], out[[0, 2, 3]], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
def test_bn_gains_start_near_one(arch: str) -> None:
    g, _ = _build(arch)
    bns = [m for m in g.modules() if isinstance(m, CondBatchNorm2d)]
    # dcgan: every BN (the output one too); sngan: the GenBlocks' two each, b5 stays plain.
    assert len(bns) == (3 if arch == "dcgan" else 6)
    if arch == "sngan":
        assert type(g.b5) is nn.BatchNorm2d and g.b5.affine
    p = _priors(64)
    for m in bns:
        assert not m.bn.affine
        for lin in (m.gain, m.bias):
            assert isinstance(lin, nn.Linear) and not parametrize.is_parametrized(lin)
            assert lin.in_features == D_PRIOR
            assert 0.005 < float(lin.weight.detach().std()) < 0.04  # N(0, 0.02)
        assert_close(m.gain.bias, torch.ones_like(m.gain.bias), rtol=0, atol=0)
        assert_close(m.bias.bias, torch.zeros_like(m.bias.bias), rtol=0, atol=0)
        with torch.no_grad():
            gain, bias = m.gain(p), m.bias(p)
        # |W p| <= ||W||_2 ||p|| with ||p|| = 1: a few hundredths at these sizes.
        assert 0 < float((gain - 1).abs().max()) < 0.15
        assert float(bias.abs().max()) < 0.15


def test_biggan_shared_embedding_and_ccbn_form() -> None:
    g, _ = _build("biggan")
    emb = g.prior_embed
    assert isinstance(emb, nn.Linear) and not parametrize.is_parametrized(emb)
    assert (emb.in_features, emb.out_features) == (D_PRIOR, SHARED_DIM)
    ccbns = [m for m in g.modules() if isinstance(m, ClassCondBN)]
    assert len(ccbns) == 6
    assert type(g.out_bn) is nn.BatchNorm2d and g.out_bn.affine  # output BN unconditional
    for m in ccbns:
        for lin in (m.gain, m.bias):
            assert parametrize.is_parametrized(lin, "weight") and lin.bias is None
            assert lin.in_features == SHARED_DIM
    # G_emb runs once per forward, whatever the number of ccBNs.
    calls = []
    handle = emb.register_forward_hook(lambda *_: calls.append(1))
    z, _, p = _inputs("biggan", g)
    g(z, p)
    handle.remove()
    assert len(calls) == 1
    # One ccBN against its formula: BN(x) * (1 + W_g e) + W_b e, eval mode (running stats).
    m = ccbns[0]
    exact_spectral_norm_(m)
    m.eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(N, m.bn.num_features, 4, 4, generator=gen)
    e = torch.randn(N, SHARED_DIM, generator=gen)
    gain = (e.double() @ _w_sn(m.gain).T)[:, :, None, None]
    bias = (e.double() @ _w_sn(m.bias).T)[:, :, None, None]
    mean, var = (t.double()[None, :, None, None] for t in (m.bn.running_mean, m.bn.running_var))
    expected = (x.double() - mean) / (var + m.bn.eps).sqrt() * (1 + gain) + bias
    with torch.no_grad():
        assert_close(m(x, e).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHES)
def test_conditional_true_with_prior_is_config_error(arch: str) -> None:
    for classes in (0, 10):
        with pytest.raises(ConfigError, match="alternative"):
            build_models(ModelConfig(arch=arch, conditional=True, **SIZES), _spec(arch, classes))


def test_toy_takes_no_prior() -> None:
    with pytest.raises(ConfigError, match="model.arch=toy"):
        build_models(ModelConfig(arch="toy"), DataSpec((1,), 0, D_PRIOR))


@pytest.mark.parametrize("arch", ARCHES)
def test_resolve_conditional_is_false_with_a_prior(arch: str) -> None:
    cfg = ModelConfig(arch=arch, **SIZES)
    assert resolve_conditional(cfg, _spec(arch, 10)).conditional is False
    # Without a prior biggan's paper setting (class-conditional) still applies.
    assert resolve_conditional(cfg, _spec(arch, 10, 0)).conditional is (arch == "biggan")
    # Labelled data with a prior: the models take the prior, not the labels.
    torch.manual_seed(0)
    g, d = build_models(cfg, _spec(arch, 10))
    assert g.num_classes == d.num_classes == 0 and g.prior_dim == d.prior_dim == D_PRIOR


# Recorded BEFORE the prior was added (torch.manual_seed(0), z_dim 8, g_ch = d_ch = 4, 3 channels,
# 10 classes): state_dict size, parameter count, sha256 of the comma-joined state_dict keys (first
# 16 hex digits), and the sum of |value| over the float state (pins the init draws and order).
BEFORE = {
    ("dcgan", False): ((23, 3923, "62036e82ffe35806", 113.62331765802992),
                       (16, 2713, "89906f00a2132895", 73.99940949110533)),
    ("dcgan", True): ((23, 4427, "04b4a7d9b861f28c", 365.7428068763729),
                      (19, 2873, "af25220f654a3e6a", 83.48208964421883)),
    ("sngan", False): ((57, 17699, "0d47633474503b52", 1845.212158615317),
                       (43, 4424, "1efa7b80c2779a00", 556.8902234346278)),
    ("biggan", False): ((79, 17699, "8acdbe6cc71b4ef0", 673.2834091123791),
                        (44, 17041, "3e5c083a0ada8b32", 393.308442475643)),
    ("biggan", True): ((79, 19427, "6318442b896bf0cd", 607.0613294174564),
                       (47, 17201, "c4ba7aead627ff34", 399.0969988645538)),
    ("toy", False): ((6, 46, "f79c722c56be1fc4", 12.456461057066917),
                     (6, 141, "09a3fd1e2595ecbd", 29.067683854838833)),
}


def _fingerprint(m: nn.Module) -> tuple[int, int, str, float]:
    sd = m.state_dict()
    names = hashlib.sha256(",".join(sd).encode()).hexdigest()[:16]
    total = sum(float(v.double().abs().sum()) for v in sd.values() if v.is_floating_point())
    return len(sd), sum(p.numel() for p in m.parameters()), names, total


@pytest.mark.parametrize(("arch", "conditional"), list(BEFORE), ids=[f"{a}-{c}" for a, c in BEFORE])
def test_models_without_a_prior_unchanged(arch: str, conditional: bool) -> None:
    torch.manual_seed(0)
    spec = DataSpec((1,), 0) if arch == "toy" else DataSpec((3, RES[arch], RES[arch]), 10)
    g, d = build_models(ModelConfig(arch=arch, conditional=conditional, **SIZES), spec)
    assert g.prior_dim == d.prior_dim == 0
    for m, before in zip((g, d), BEFORE[(arch, conditional)]):
        got = _fingerprint(m)
        assert got[:3] == before[:3]
        # 1e-6: torch's normal_ kernels round the last bits differently on other CPU classes
        # (seen: 3e-9 relative); a different draw or order moves the sum by far more.
        assert_close(got[3], before[3], rtol=1e-6, atol=0)
