"""StyleGAN2 (``model.arch: stylegan2``): layers against formulas written here, truncation,
style mixing, noise, conditioning and the minibatch-stddev groups. Tiny widths, CPU. The
parameter counts of the reference's configurations: test_stylegan2_counts.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from tuneable_gan.config import ModelConfig, from_dict
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import PRIOR_ARCHES, DataSpec, build_models
from tuneable_gan.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from tuneable_gan.models.stylegan2_layers import (
    Conv2dLayer,
    FullyConnected,
    SynthesisLayer,
    fir_filter,
    minibatch_stddev,
    modulated_conv2d,
    upsample2d,
)

N = 4
# fmaps 2^-7: int(256) // r channels, so 64 at 4x4 down to 8 at 32x32.
TINY = {"z_dim": 16, "w_dim": 16, "fmaps": 2 ** -7, "mapping_layers": 2}


def _build(res: int = 32, num_classes: int = 0, prior_dim: int = 0, channels: int = 3,
           **kw: object) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="stylegan2", conditional=num_classes > 0, **(TINY | kw))
    g, d = build_models(cfg, DataSpec((channels, res, res), num_classes, prior_dim))
    assert isinstance(g, StyleGAN2Generator) and isinstance(d, StyleGAN2Discriminator)
    return g, d


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- 1. modulated convolution against the formula ----------------------------------------------


def _modconv_oracle(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool) -> Tensor:
    """w'_oik = s_i w_oik; w''_oik = w'_oik / sqrt(sum_ik w'^2 + 1e-8); one conv per sample."""
    outs = []
    for n in range(x.shape[0]):
        w = weight.double().clone()
        for i in range(weight.shape[1]):
            w[:, i] = w[:, i] * styles[n, i].double()
        if demodulate:
            for o in range(weight.shape[0]):
                w[o] = w[o] / torch.sqrt((w[o] ** 2).sum() + 1e-8)
        outs.append(F.conv2d(x[n:n + 1].double(), w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


def _up_oracle(x: Tensor, weight: Tensor) -> Tensor:
    """The generic up path: insert zeros, pad 3/2, filter with 4 * outer([1,3,3,1]) / 64, then a
    valid true convolution (the flipped kernel)."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    up = F.pad(up, [3, 2, 3, 2])
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
    f = 4 * torch.outer(taps, taps) / 64
    up = F.conv2d(up, f.expand(c, 1, 4, 4), groups=c)
    return F.conv2d(up, weight.flip([2, 3]).to(x.dtype))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_the_formula(fused: bool, demodulate: bool) -> None:
    gen = _gen(0)
    x = torch.randn(3, 5, 6, 6, generator=gen)
    weight = torch.randn(4, 5, 3, 3, generator=gen)
    styles = torch.rand(3, 5, generator=gen) * 2 + 0.1
    got = modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=1, fused=fused)
    assert_close(got.double(), _modconv_oracle(x, weight, styles, demodulate),
                 rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_upsampling_modulated_conv_matches_zero_insert_filter_conv(fused: bool) -> None:
    gen = _gen(1)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    weight = torch.randn(5, 3, 3, 3, generator=gen)
    styles = torch.rand(2, 3, generator=gen) + 0.5
    got = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=fir_filter(),
                           fused=fused)
    assert got.shape == (2, 5, 8, 8)
    want = []
    for n in range(2):
        w = weight.double() * styles[n].double()[None, :, None, None]
        w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        want.append(_up_oracle(x[n:n + 1].double(), w))
    assert_close(got.double(), torch.cat(want), rtol=1e-5, atol=1e-5)


def test_fir_resampling_keeps_dc_and_the_downsampling_conv_matches_conv_then_subsample() -> None:
    f = fir_filter()
    assert_close(f.sum(), torch.tensor(1.0))
    up = upsample2d(torch.ones(1, 2, 8, 8), f)
    assert up.shape == (1, 2, 16, 16)
    assert_close(up[:, :, 2:-2, 2:-2], torch.ones(1, 2, 12, 12))  # unit DC gain inside
    torch.manual_seed(0)
    conv = Conv2dLayer(3, 4, 3, down=2)
    x = torch.randn(2, 3, 8, 8, generator=_gen(2))
    # Oracle: pad 2, filter, plain conv, keep every other pixel.
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k) / 64
    xf = F.conv2d(F.pad(x, [2, 2, 2, 2]), k.expand(3, 1, 4, 4), groups=3)
    want = F.conv2d(xf, conv.weight / math.sqrt(27))[:, :, ::2, ::2]
    assert_close(conv(x), want, rtol=1e-5, atol=1e-5)
    skip = Conv2dLayer(3, 4, 1, down=2, bias=False)
    xf = F.conv2d(F.pad(x, [1, 1, 1, 1]), k.expand(3, 1, 4, 4), groups=3)[:, :, ::2, ::2]
    assert_close(skip(x), F.conv2d(xf, skip.weight / math.sqrt(3)), rtol=1e-5, atol=1e-5)


# -- 2. equalised learning rate -----------------------------------------------------------------


@pytest.mark.parametrize("lr", [1.0, 0.01])
def test_equalised_lr_fc_and_conv(lr: float) -> None:
    torch.manual_seed(0)
    fc = FullyConnected(64, 32, lr_multiplier=lr, bias_init=0.5)
    assert abs(float(fc.weight.detach().std()) * lr - 1) < 0.05  # stored ~ N(0, 1) / lr
    assert_close(fc.effective_weight(), fc.weight * lr / math.sqrt(64))
    x = torch.randn(5, 64, generator=_gen(3))
    by_hand = x @ (fc.weight * (lr / 8.0)).T + fc.bias * lr
    assert_close(fc(x), by_hand)
    act = FullyConnected(64, 32, lr_multiplier=lr, activation="lrelu")
    pre = x @ (act.weight * (lr / 8.0)).T + act.bias * lr
    assert_close(act(x), F.leaky_relu(pre, 0.2) * math.sqrt(2))
    conv = Conv2dLayer(6, 8, 3, lr_multiplier=lr)
    assert_close(conv.effective_weight(), conv.weight * lr / math.sqrt(6 * 9))
    xi = torch.randn(2, 6, 5, 5, generator=_gen(4))
    want = F.conv2d(xi, conv.weight * lr / math.sqrt(54), padding=1) + conv.bias[:, None, None]
    assert_close(conv(xi), want, rtol=1e-5, atol=1e-5)


def test_init_follows_the_reference() -> None:
    g, d = _build()
    layer = g.synthesis.blocks[1].conv0
    assert_close(layer.affine.bias, torch.ones_like(layer.affine.bias))  # style bias init 1
    assert float(layer.noise_strength.detach()) == 0.0 and not layer.bias.any()
    torgb = g.synthesis.blocks[-1].torgb
    assert torgb.weight_gain == 1 / math.sqrt(torgb.weight.shape[1])
    assert_close(torgb.affine.bias, torch.ones_like(torgb.affine.bias))
    fc0 = g.mapping.layers[0]
    assert fc0.weight_gain == 0.01 / math.sqrt(16) and fc0.bias_gain == 0.01
    assert 80 < float(fc0.weight.detach().std()) < 120  # N(0, 1) / 0.01
    assert not g.mapping.w_avg.any()
    for m in d.modules():
        if isinstance(m, (Conv2dLayer, FullyConnected)) and m.bias is not None:
            assert not m.bias.any()


# -- 4. truncation and style mixing -------------------------------------------------------------


def test_truncation_psi_zero_gives_w_avg_and_one_is_identity() -> None:
    g, _ = _build()
    g.mapping.w_avg.copy_(torch.randn(16, generator=_gen(5)))
    z = g.sample_z(N, _gen(6), "cpu")
    ws = g.stem(z)
    assert_close(g.truncate(ws, 0.0), g.mapping.w_avg.expand_as(ws))
    assert torch.equal(g.truncate(ws, 1.0), ws)
    assert_close(g.truncate(ws, 0.5), (ws + g.mapping.w_avg) / 2)
    cut = g.truncate(ws, 0.0, cutoff=3)
    assert torch.equal(cut[:, 3:], ws[:, 3:])
    # truncation_psi applies in eval mode only.
    g.truncation_psi = 0.0
    g.eval()
    assert_close(g.stem(z), g.mapping.w_avg.expand_as(ws))
    g.train()
    assert not torch.allclose(g.stem(z)[:, 0], g.mapping.w_avg.expand(N, 16))


def test_w_avg_tracks_the_mean_w_in_training_only() -> None:
    g, _ = _build()
    z = g.sample_z(N, _gen(7), "cpu")
    g.eval()
    g.stem(z)
    assert not g.mapping.w_avg.any()
    g.train()
    w = g.stem(z)[:, 0]
    assert_close(g.mapping.w_avg, 0.005 * w.mean(dim=0))
    # The mixing branch's second mapping leaves w_avg alone.
    g.style_mixing = 1.0
    before = g.mapping.w_avg.clone()
    g.mapping_with_mixing(z, None, _gen(8))
    assert_close(g.mapping.w_avg, before.lerp(w.mean(dim=0), 0.005))


def test_style_mixing_off_broadcasts_one_w_and_draws_nothing() -> None:
    g, _ = _build(style_mixing=0.0)
    z = g.sample_z(N, _gen(9), "cpu")
    gen = _gen(10)
    state = gen.get_state()
    ws = g.mapping_with_mixing(z, None, gen)
    assert torch.equal(gen.get_state(), state)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))
    assert torch.equal(ws, g.stem(z))  # forward never mixes


def test_style_mixing_on_splits_at_the_drawn_cutoff_and_is_reproducible() -> None:
    g, _ = _build(style_mixing=1.0)
    g.eval()  # w_avg fixed, so the two latents' ws are the plain mapping
    z = g.sample_z(N, _gen(11), "cpu")
    ws = g.mapping_with_mixing(z, None, _gen(12))
    assert torch.equal(ws, g.mapping_with_mixing(z, None, _gen(12)))
    oracle = _gen(12)  # the draws in the reference's order: cutoff, coin, second latent
    cutoff = int(torch.randint(1, g.num_ws, (), generator=oracle))
    assert float(torch.rand((), generator=oracle)) < 1.0
    z2 = torch.randn(z.shape, generator=oracle)
    assert_close(ws[:, :cutoff], g.mapping(z, None)[:, :cutoff])
    assert_close(ws[:, cutoff:], g.mapping(z2, None)[:, cutoff:])
    w1 = g.mapping(z[:1], None)[0, 0]
    seen = {int((g.mapping_with_mixing(z[:1], None, _gen(s))[0] != w1).any(1).nonzero()[0])
            for s in range(60)}
    assert seen == set(range(1, g.num_ws))  # cutoffs uniform over [1, num_ws)


def test_style_mixing_probability_keeps_num_ws_otherwise() -> None:
    g, _ = _build(style_mixing=0.5)
    g.eval()
    z = g.sample_z(1, _gen(13), "cpu")
    mixed = [not torch.equal(*g.mapping_with_mixing(z, None, _gen(s))[0, [0, -1]])
             for s in range(200)]
    assert 70 < sum(mixed) < 130


# -- 5. shapes, conditioning, noise, gradients --------------------------------------------------


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shapes_at_each_resolution(res: int) -> None:
    g, d = _build(res, channels=1, fmaps=2 ** -6)
    assert g.num_ws == 2 * int(math.log2(res)) - 2
    z = g.sample_z(N, _gen(14), "cpu")
    ws = g.stem(z)
    assert ws.shape == (N, g.num_ws, 16)
    x = g.rest(ws)
    assert x.shape == (N, 1, res, res) and x.dtype == torch.float32
    h = d.trunk(x)
    assert h.shape == (N, d.num_features) == (N, 128)  # int(512) // 4 channels at 4x4
    assert d(x).shape == (N,)


def test_label_and_prior_conditioning() -> None:
    g, d = _build(num_classes=10)
    assert g.conditional and g.num_classes == 10 and d.mapping is not None
    assert d.mapping.embed.weight.shape == (d.cmap_dim, 10)
    g.eval()
    d.eval()
    z = g.sample_z(N, _gen(15), "cpu")
    y0, y1 = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    with torch.no_grad():
        x = g(z, y0)
        assert not torch.allclose(x, g(z, y1))
        assert not torch.allclose(d(x, y0), d(x, y1))
        # The projection by hand: <out(h), cmap(onehot y)> / sqrt(cmap_dim).
        h = d.trunk(x)
        cmap = d.mapping(None, F.one_hot(y1, 10).float())
        want = (d.out(h) * cmap).sum(dim=1) / math.sqrt(d.cmap_dim)
        assert_close(d.head(h, y1), want)
    assert "stylegan2" in PRIOR_ARCHES
    gp, dp = _build(prior_dim=5)
    assert gp.prior_dim == dp.prior_dim == 5 and gp.num_classes == 0
    assert gp.mapping.embed.weight.shape == (16, 5)
    p = F.normalize(torch.randn(N, 5, generator=_gen(16)), dim=1)
    xp = gp(z, p)
    assert xp.shape == (N, 3, 32, 32) and dp(xp, p).shape == (N,)
    with pytest.raises(ValueError, match="labels"):
        gp(z)


def test_noise_modes() -> None:
    g, _ = _build()
    for m in g.modules():
        if isinstance(m, SynthesisLayer):
            m.noise_strength.data.fill_(0.5)
    g.eval()
    ws = g.stem(g.sample_z(N, _gen(17), "cpu"))
    with torch.no_grad():
        const = g.rest(ws, noise_mode="const")
        assert torch.equal(const, g.rest(ws, noise_mode="const"))
        assert not torch.equal(const, g.rest(ws, noise_mode="none"))
        a = g.rest(ws, generator=_gen(18))
        assert torch.equal(a, g.rest(ws, generator=_gen(18)))  # reproducible from a generator
        assert not torch.equal(a, g.rest(ws, generator=_gen(19)))
        g.noise_generator = _gen(18)  # the attribute form
        assert torch.equal(a, g.rest(ws))
        g.noise_generator = None
        g.noise_mode = "const"
        assert torch.equal(const, g.rest(ws))
    with pytest.raises(ValueError, match="noise_mode"):
        g.rest(ws, noise_mode="fixed")


@pytest.mark.parametrize("kind", ["labels", "prior"])
def test_gradients_reach_every_parameter(kind: str) -> None:
    g, d = _build(num_classes=10) if kind == "labels" else _build(prior_dim=5)
    z = g.sample_z(N, _gen(20), "cpu")
    y = (torch.arange(N) % 10 if kind == "labels"
         else F.normalize(torch.randn(N, 5, generator=_gen(21)), dim=1))
    d(g.rest(g.mapping_with_mixing(z, y, _gen(22)), y, generator=_gen(23)), y).sum().backward()
    for net in (g, d):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# -- 6. minibatch stddev groups -----------------------------------------------------------------


def test_minibatch_stddev_against_the_formula() -> None:
    x = torch.randn(6, 4, 3, 3, generator=_gen(24))
    out = minibatch_stddev(x, 3, num_channels=2)
    assert out.shape == (6, 6, 3, 3) and torch.equal(out[:, :4], x)
    for k in range(2):  # consecutive groups of 3
        grp = x[3 * k:3 * k + 3]
        for f in range(2):
            sd = (grp[:, 2 * f:2 * f + 2].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            assert_close(out[3 * k:3 * k + 3, 4 + f], sd.expand(3, 3, 3))
    # A group of one: the constant sqrt(1e-8), what the reference computes too.
    assert_close(minibatch_stddev(x, 1)[:, 4], torch.full((6, 3, 3), 1e-4))
    assert_close(minibatch_stddev(x[:2], 4)[:, 4], minibatch_stddev(x[:2], 2)[:, 4])  # G <= N
    with pytest.raises(ValueError, match="mbstd_group"):
        minibatch_stddev(x, 4)


def test_d_logit_depends_on_its_group_only() -> None:
    _, d = _build(mbstd_group=2)
    assert d.sample_group == 2
    d.eval()
    x = torch.randn(6, 3, 32, 32, generator=_gen(25))
    with torch.no_grad():
        base = d(x)
        x2 = x.clone()
        x2[1] = torch.randn(3, 32, 32, generator=_gen(26))  # group 0 = samples 0, 1
        out = d(x2)
    assert out[0] != base[0] and out[1] != base[1]
    assert torch.equal(out[2:], base[2:])
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(xg)[2], xg)
    assert grad[2:4].abs().sum() > 0 and grad[3].abs().sum() > 0  # own group, both samples
    assert not grad[[0, 1, 4, 5]].any()
    with pytest.raises(ValueError, match="mbstd_group"):
        d(x[:3])
    _, d1 = _build(mbstd_group=1)
    _, d0 = _build(mbstd_channels=0)
    assert d1.sample_group == d0.sample_group == 1


# -- config and errors --------------------------------------------------------------------------


def test_config_fields_and_errors() -> None:
    cfg = from_dict({"model.arch": "stylegan2", "data.resolution": 32, "model.fmaps": 0.25,
                     "model.d_architecture": "orig", "model.truncation_psi": 0.7})
    assert cfg.model.fmaps == 0.25 and cfg.model.channel_max == 512
    assert (cfg.model.mapping_layers, cfg.model.w_dim, cfg.model.mbstd_group) == (8, 512, 4)
    assert (cfg.model.mbstd_channels, cfg.model.style_mixing) == (1, 0.9)
    with pytest.raises(ConfigError, match="model.style_mixing"):
        from_dict({"model.style_mixing": 1.5})
    with pytest.raises(ConfigError, match="data.resolution must be 32 or 64 or 128 or 256"):
        _build(16)
    with pytest.raises(ConfigError, match="model.fmaps"):
        _build(32, fmaps=2 ** -12)
    with pytest.raises(ConfigError, match="model.mbstd_channels"):
        _build(32, mbstd_channels=3)
    g, d = _build(d_architecture="orig")
    assert all(b.skip is None for b in d.blocks)
    assert not g.bounded
