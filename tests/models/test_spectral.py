"""tuneable_gan.models.spectral: the exact spectral norm G_ema generates with, and ``generate``
(mode, batching, state restore), each checked against an oracle written from the definition:
sigma is torch.linalg.matrix_norm(W, 2) of the layer's own weight matrix, and the reference's
train-mode sampling is ``G.train(); for each chunk: G(z_chunk, y_chunk)`` (docs/methods.md 6.1)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from tuneable_gan.config import ModelConfig
from tuneable_gan.models import DataSpec, build_models
from tuneable_gan.models.spectral import exact_spectral_norm_, generate
from tuneable_gan.trainer import update_ema

SPEC = DataSpec((3, 32, 32), 10)


def tiny_biggan(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    G, _ = build_models(ModelConfig(arch="biggan", g_ch=4, d_ch=4, z_dim=8), SPEC)
    return G


def ema_after_training(steps: int = 6, decay: float = 0.8) -> tuple[nn.Module, nn.Module]:
    """(G, G_ema) after a few large Adam steps of G, with the trainer's EMA of the whole state
    (SN vectors included, as the BigGAN reference averages them)."""
    G = tiny_biggan()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        z, y = torch.randn(16, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        loss = G(z, y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_ema(G_ema, G, decay)
    return G, G_ema


def sn_layers(G: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in G.named_modules() if parametrize.is_parametrized(m, "weight")]


def true_sigma(m: nn.Module) -> float:
    """Oracle: the largest singular value of the raw weight as a (out, -1) matrix (dim 0, the
    layout torch's spectral_norm uses for Linear and Conv2d)."""
    w = m.parametrizations.weight.original.detach().double()
    return float(torch.linalg.matrix_norm(w.flatten(1), 2))


@torch.no_grad()
def used_sigmas(G: nn.Module, train: bool) -> dict[str, float]:
    """The sigma torch divides each layer's weight by, read off the parametrized weight itself:
    weight = original / sigma. In train mode reading it runs torch's power iteration (on a copy,
    so G is untouched)."""
    G = copy.deepcopy(G).train(train)
    out = {}
    for name, m in sn_layers(G):
        w_orig = m.parametrizations.weight.original.double()
        out[name] = float(w_orig.norm() / m.weight.double().norm())
    return out


def relative_errors(G: nn.Module, train: bool) -> dict[str, float]:
    used = used_sigmas(G, train)
    return {n: abs(used[n] / true_sigma(m) - 1.0) for n, m in sn_layers(G)}


def test_biggan_generator_has_spectral_norm() -> None:
    assert len(sn_layers(tiny_biggan())) == 11  # stem linear, 3 x (conv1, conv2, conv_sc), out


def test_ema_sn_vectors_underestimate_sigma_and_exact_norm_fixes_it() -> None:
    _, G_ema = ema_after_training()
    before = {mode: relative_errors(G_ema, mode) for mode in (False, True)}
    print("relative sigma error before, eval mode:", {k: round(v, 4)
                                                      for k, v in before[False].items()})
    # The bug: averaged unit vectors are short, so u^T W v < sigma, in every layer.
    assert min(before[False].values()) > 1e-3
    assert all(used_sigmas(G_ema, False)[n] < true_sigma(m) for n, m in sn_layers(G_ema))
    # Train mode's one power iteration helps but does not converge.
    assert max(before[True].values()) > 1e-3
    weights = {k: v.clone() for k, v in G_ema.state_dict().items() if not k.endswith(("_u", "_v"))}
    assert exact_spectral_norm_(G_ema) == 11
    for mode in (False, True):
        after = relative_errors(G_ema, mode)
        assert max(after.values()) < 1e-3, (mode, after)
    # Only the singular vectors changed; the stored vectors are unit length again.
    assert all(torch.equal(v, G_ema.state_dict()[k]) for k, v in weights.items())
    for _, m in sn_layers(G_ema):
        p = m.parametrizations.weight[0]
        assert abs(float(p._u.norm()) - 1) < 1e-5 and abs(float(p._v.norm()) - 1) < 1e-5


def test_exact_norm_handles_transposed_convs_and_degenerate_spectra() -> None:
    torch.manual_seed(0)
    # ConvTranspose2d: torch normalises along dim 1 (its output channels).
    deconv = nn.utils.parametrizations.spectral_norm(nn.ConvTranspose2d(6, 4, 3))
    # An orthogonal weight: all singular values are 1, so power iteration has no gap at all.
    ortho = nn.utils.parametrizations.spectral_norm(nn.Linear(8, 8, bias=False))
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(8, 8))
        ortho.parametrizations.weight.original.copy_(3.0 * q)
        deconv.parametrizations.weight.original.mul_(5.0)
        for m in (deconv, ortho):
            m.parametrizations.weight[0]._u.copy_(torch.nn.functional.normalize(
                torch.rand_like(m.parametrizations.weight[0]._u), dim=0) * 0.5)
    net = nn.Sequential(deconv, ortho).eval()
    assert exact_spectral_norm_(net) == 2
    w = deconv.parametrizations.weight.original.detach().double()
    sigma = float(torch.linalg.matrix_norm(w.transpose(0, 1).flatten(1), 2))
    with torch.no_grad():
        used = float(w.norm() / deconv.weight.double().norm())
        assert used == pytest.approx(sigma, rel=1e-5)
        assert float(ortho.parametrizations.weight.original.double().norm()
                     / ortho.weight.double().norm()) == pytest.approx(3.0, rel=1e-5)


def test_train_mode_generate_equals_the_reference_sampling_loop() -> None:
    _, G = ema_after_training()
    gen = torch.Generator().manual_seed(0)
    z, y = torch.randn(120, 8, generator=gen), torch.randint(0, 10, (120,), generator=gen)
    got = generate(G, z, y, mode="train", batch_size=50)
    # Oracle: a copy with the true singular vectors (from its own SVD), then the reference loop.
    ref = copy.deepcopy(G)
    with torch.no_grad():
        for _, m in sn_layers(ref):
            U, _, Vh = torch.linalg.svd(m.parametrizations.weight.original.double().flatten(1))
            m.parametrizations.weight[0]._u.copy_(U[:, 0].float())
            m.parametrizations.weight[0]._v.copy_(Vh[0].float())
        ref.train()
        want = torch.cat([ref(z[a:a + 50], y[a:a + 50]) for a in range(0, 120, 50)])
    assert got.shape == (120, 3, 32, 32)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # Batch statistics: another batch size gives other pictures; eval mode does not care.
    assert not torch.allclose(got, generate(G, z, y, mode="train", batch_size=40), atol=1e-3)
    ev = generate(G, z, y, mode="eval")
    torch.testing.assert_close(generate(G, z, y, mode="eval", batch_size=7), ev)
    assert not torch.allclose(ev, got, atol=1e-3)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_generate_leaves_state_flags_and_rng_bitwise_unchanged(mode: str) -> None:
    _, G = ema_after_training()
    G.train()
    G.blocks[1].eval()  # mixed flags must come back as they were
    flags = [m.training for m in G.modules()]
    state = {k: v.clone() for k, v in G.state_dict().items()}
    z, y = torch.randn(30, 8), torch.randint(0, 10, (30,))
    rng = torch.get_rng_state()
    generate(G, z, y, mode=mode, batch_size=10)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in G.modules()] == flags
    now = G.state_dict()
    assert state.keys() == now.keys()
    assert all(torch.equal(v, now[k]) for k, v in state.items()), \
        [k for k, v in state.items() if not torch.equal(v, now[k])]


def test_generate_checks_its_arguments() -> None:
    G = tiny_biggan()
    z, y = torch.randn(4, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="batch_size"):
        generate(G, z, y, mode="train")
    with pytest.raises(ValueError, match="eval, train"):
        generate(G, z, y, mode="sample")
