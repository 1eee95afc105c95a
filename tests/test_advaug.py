"""AdvAug (tuneable_gan.advaug) against hand computations on tiny linear heads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import tiny_config
from torch import nn

from tuneable_gan.advaug import (
    AdvAugD,
    AdvAugG,
    d_adv_loss,
    d_objective,
    feature_delta,
    g_adv_loss,
)
from tuneable_gan.augment import diff_augment, parse_policy
from tuneable_gan.config import AugmentConfig, ModelConfig
from tuneable_gan.losses import LOSSES, Loss
from tuneable_gan.models import build_models
from tuneable_gan.models.base import DataSpec, Discriminator, Generator
from tuneable_gan.regularizers.base import input_grad_norms
from tuneable_gan.terms import DAdversarial, DBatch, GAdversarial, GBatch, adversarial_sum
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.training_stats import StepStats

HINGE, NS = LOSSES.get("hinge"), LOSSES.get("ns")
GAMMA = 0.01


def advaug(mode: str, side: str = "gd") -> AugmentConfig:
    return AugmentConfig(advaug=side, advaug_step=GAMMA, advaug_mode=mode)


def step_d_loss(D: nn.Module, x_f: torch.Tensor, x_r: torch.Tensor, y_f: torch.Tensor | None,
                y_r: torch.Tensor | None, loss: Loss, mode: str,
                stats: StepStats | None = None) -> torch.Tensor:
    """The adversarial D loss as the trainer's D step forms it with AdvAug on: one trunk pass
    over ``[fakes; reals]`` (fakes detached), the terms ``DAdversarial`` and ``AdvAugD``
    combined by ``adversarial_sum`` (1/2 clean + 1/2 adversarial)."""
    x = torch.cat([x_f.detach(), x_r])
    y = None if y_f is None or y_r is None else torch.cat([y_f, y_r])
    h = D.trunk(x)
    batch = DBatch(x=x, logits=D.head(h, y), labels=y, n_fake=len(x_f), grad_norms=None,
                   fake_raw=x_f, real_raw=x_r, D=D, augment=lambda t: t,
                   generator=torch.Generator(), step=0, d_step=0, features=h, loss=loss)
    return adversarial_sum([DAdversarial(), AdvAugD(advaug(mode))], batch,
                           stats if stats is not None else StepStats())


def step_g_loss(G: nn.Module, D: nn.Module, z: torch.Tensor, y: torch.Tensor | None,
                loss: Loss, T: Callable[[torch.Tensor], torch.Tensor], mode: str) -> torch.Tensor:
    """The adversarial G loss as the trainer's G step forms it with AdvAug on: ``u = G.stem``,
    fakes ``G.rest(u)``, the terms ``GAdversarial`` and ``AdvAugG`` combined by
    ``adversarial_sum``. T draws in this order: clean branch, PGD step(s), adversarial branch."""
    u = G.stem(z, y)
    batch = GBatch(z=z, labels=y, stem=u, fake=G.rest(u, y), G=G, D=D, augment=T, loss=loss,
                   step=0)
    return adversarial_sum([GAdversarial(), AdvAugG(advaug(mode))], batch, StepStats())


class TinyD(Discriminator):
    """trunk = Linear(3, 4); head(h) = w.h + b (so grad_h head = w)."""

    conditional = False
    num_classes = 0

    def __init__(self, w: list[float] | None = None, b: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 4)
        self.out = nn.Linear(4, 1)
        with torch.no_grad():
            self.out.weight.copy_(torch.tensor([w or [0.3, -0.2, 0.1, -0.4]]))
            self.out.bias.fill_(b)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    def head(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(h).squeeze(1)


class TinyG(Generator):
    """stem = Linear(2, 3); rest(u) = A u + c (linear), output of size 3 for TinyD."""

    z_dim = 2
    conditional = False
    num_classes = 0

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.lin = nn.Linear(2, 3)
        self.A = nn.Linear(3, 3)

    def stem(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.lin(z)

    def rest(self, u: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.A(u)


def sign_w(D: TinyD) -> torch.Tensor:
    return D.out.weight.detach()[0].sign()


# -- D side ---------------------------------------------------------------------------------------

def test_code_mode_delta_is_gamma_sign_w_for_every_branch() -> None:
    D = TinyD()
    h = torch.randn(6, 4)
    for loss in (HINGE, NS):
        delta = feature_delta(lambda f: D.head(f), h, d_objective("code_increase_logit", loss, 3),
                              GAMMA)
        assert torch.equal(delta, (GAMMA * sign_w(D)).expand(6, 4))


def test_worst_case_sign_flips_between_fakes_and_reals_under_hinge() -> None:
    D = TinyD()
    h = 0.1 * torch.randn(4, 4)  # logits well inside (-1, 1): every hinge term is active
    h[3] = 5.0 * sign_w(D)       # a real with logit > 1: its hinge term is flat
    assert D.head(h)[3] > 1 and D.head(h)[:3].abs().max() < 1
    delta = feature_delta(lambda f: D.head(f), h, d_objective("worst_case", HINGE, 2), GAMMA)
    s = GAMMA * sign_w(D)
    assert torch.equal(delta[:2], s.expand(2, 4))        # fakes: up the logit (D loss up)
    assert torch.equal(delta[2], -s)                     # active real: down the logit
    assert torch.equal(delta[3], torch.zeros(4))         # inactive real: zero gradient
    # ns has no flat region: reals always go down, fakes up.
    delta = feature_delta(lambda f: D.head(f), h, d_objective("worst_case", NS, 2), GAMMA)
    assert torch.equal(delta[:2], s.expand(2, 4)) and torch.equal(delta[2:], -s.expand(2, 4))


def test_steps_accumulate() -> None:
    D = TinyD()
    h = torch.randn(2, 4)
    delta = feature_delta(lambda f: D.head(f), h, lambda o: o.mean(), GAMMA, steps=3)
    torch.testing.assert_close(delta, (3 * GAMMA * sign_w(D)).expand(2, 4))
    assert torch.equal(feature_delta(lambda f: D.head(f), h, lambda o: o.mean(), GAMMA, 0),
                       torch.zeros(2, 4))


def hand_d_parts(D: TinyD, x_f: torch.Tensor, x_r: torch.Tensor,
                 mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, perturbed) hinge D losses by hand."""
    h = D.trunk(torch.cat([x_f, x_r]))
    s = GAMMA * sign_w(D)
    n = x_f.shape[0]
    if mode == "code_increase_logit":
        delta = s.expand(2 * n, 4)
    else:  # hinge, all terms active
        delta = torch.cat([s.expand(n, 4), -s.expand(n, 4)])
    clean = HINGE.d_loss(D.head(h[n:]), D.head(h[:n]))
    pert = HINGE.d_loss(D.head(h[n:] + delta[n:]), D.head(h[:n] + delta[:n]))
    return clean, pert


def hand_d_loss(D: TinyD, x_f: torch.Tensor, x_r: torch.Tensor, mode: str) -> torch.Tensor:
    clean, pert = hand_d_parts(D, x_f, x_r, mode)
    return 0.5 * clean + 0.5 * pert


@pytest.mark.parametrize("mode", ["code_increase_logit", "worst_case"])
def test_d_loss_is_half_clean_half_perturbed_and_grads_reach_trunk(mode: str) -> None:
    D = TinyD()
    x_f, x_r = 0.1 * torch.randn(3, 3), 0.1 * torch.randn(3, 3)
    stats = StepStats()
    loss = step_d_loss(D, x_f, x_r, None, None, HINGE, mode, stats)
    expect = hand_d_loss(D, x_f, x_r, mode)
    torch.testing.assert_close(loss, expect, rtol=0, atol=1e-7)
    # The logged d_loss_adv is the perturbed half, before its weight 1/2.
    torch.testing.assert_close(torch.tensor(stats.collect()["d_loss_adv"]),
                               hand_d_parts(D, x_f, x_r, mode)[1], rtol=0, atol=1e-7)
    got = torch.autograd.grad(loss, [D.lin.weight, D.lin.bias, D.out.weight])
    # Hand version with delta a constant: equal grads mean no gradient through delta.
    want = torch.autograd.grad(expect, [D.lin.weight, D.lin.bias, D.out.weight])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8)
    # The adversarial branch feeds D's trunk too: the grad is not that of the clean half alone.
    h = D.trunk(torch.cat([x_f, x_r]))
    clean_only = torch.autograd.grad(0.5 * HINGE.d_loss(D.head(h[3:]), D.head(h[:3])),
                                     D.lin.weight)[0]
    assert not torch.allclose(got[0], clean_only)


def test_delta_is_a_constant_and_touches_no_parameter_grad() -> None:
    D = TinyD()
    h = D.trunk(torch.randn(4, 3))
    delta = feature_delta(lambda f: D.head(f), h, lambda o: o.mean(), GAMMA)
    assert not delta.requires_grad and delta.grad_fn is None
    assert all(p.grad is None for p in D.parameters())
    adv = d_adv_loss(D, h, None, 2, HINGE, GAMMA, "code_increase_logit")
    adv.backward()
    assert D.lin.weight.grad is not None and D.lin.weight.grad.abs().sum() > 0


def test_bad_arguments() -> None:
    D = TinyD()
    h = torch.randn(2, 4)
    with pytest.raises(ValueError, match="mode"):
        d_adv_loss(D, h, None, 1, HINGE, GAMMA, "pixels")
    with pytest.raises(ValueError, match="gamma"):
        d_adv_loss(D, h, None, 1, HINGE, 0.0, "worst_case")


# -- G side ---------------------------------------------------------------------------------------

def g_direction(G: TinyG, D: TinyD) -> torch.Tensor:
    """d D(rest(u)) / d u for the linear tiny nets: A^T W1^T w."""
    w = D.out.weight.detach()[0]
    return G.A.weight.detach().T @ D.lin.weight.detach().T @ w


@pytest.mark.parametrize(("mode", "loss", "sign"), [
    ("code_increase_logit", HINGE, 1.0), ("code_increase_logit", NS, 1.0),
    ("worst_case", HINGE, -1.0), ("worst_case", NS, -1.0)])
def test_g_side_perturbation_matches_by_hand(mode: str, loss, sign: float) -> None:
    G, D = TinyG(), TinyD()
    z = torch.randn(5, 2)
    u = G.stem(z)
    delta_u = sign * GAMMA * g_direction(G, D).sign()

    calls = []

    def T(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x

    got = step_g_loss(G, D, z, None, loss, T, mode)
    assert len(calls) == 3  # clean, one PGD step, adversarial branch
    clean = loss.g_loss(D(G.rest(u)))
    adv = loss.g_loss(D(G.rest(u + delta_u)))
    expect = 0.5 * clean + 0.5 * adv
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-7)
    params = [G.lin.weight, G.lin.bias, G.A.weight]
    got_g = torch.autograd.grad(got, params)
    for g, w in zip(got_g, torch.autograd.grad(expect, params, retain_graph=True)):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8)
    # Both branches reach G's stem.
    assert not torch.allclose(got_g[0], torch.autograd.grad(0.5 * clean, G.lin.weight)[0])


def test_g_adv_loss_uses_the_given_stem_output() -> None:
    G, D = TinyG(), TinyD()
    u = G.stem(torch.randn(4, 2))
    delta_u = GAMMA * g_direction(G, D).sign()
    got = g_adv_loss(G, D, u, None, HINGE, None, GAMMA, "code_increase_logit", steps=2)
    torch.testing.assert_close(got, HINGE.g_loss(D(G.rest(u + 2 * delta_u))), rtol=0,
                               atol=1e-7)


# -- real models, as the trainer will call them ---------------------------------------------------

def test_dcgan_conditional_with_diffaugment_and_diggan_norms() -> None:
    torch.manual_seed(0)
    G, D = build_models(ModelConfig(arch="dcgan", z_dim=8, g_ch=8, d_ch=8, conditional=True),
                        DataSpec((1, 16, 16), 10))
    gen = torch.Generator().manual_seed(0)
    policy = parse_policy("color,translation,cutout")

    def T(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, policy, gen)

    B = 4
    z, y_f, y_r = torch.randn(B, 8), torch.randint(0, 10, (B,)), torch.randint(0, 10, (B,))
    with torch.no_grad():
        x_f = G(z, y_f)
    x_r = torch.rand(B, 1, 16, 16) * 2 - 1
    # The trainer's D step: trunk once on X, DigGAN norms from the clean logits, AdvAug's
    # head-only branch on the same h.
    x = T(torch.cat([x_f, x_r])).detach().requires_grad_(True)
    y = torch.cat([y_f, y_r])
    h = D.trunk(x)
    logits = D.head(h, y)
    clean = HINGE.d_loss(logits[B:], logits[:B])
    norms = input_grad_norms(logits, x, create_graph=True)
    adv = d_adv_loss(D, h, y, B, HINGE, GAMMA, "worst_case")
    total = 0.5 * clean + 0.5 * adv + (norms[:B] - norms[B:]).pow(2).mean()
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    # The step's terms give the same loss on the same (already augmented) inputs.
    D.eval()  # freeze SN's power iteration so two evaluations see the same weights
    a = step_d_loss(D, x[:B].detach(), x[B:].detach(), y_f, y_r, HINGE, "worst_case")
    h2 = D.trunk(x.detach())
    b = 0.5 * HINGE.d_loss(D.head(h2[B:], y_r), D.head(h2[:B], y_f)) + 0.5 * d_adv_loss(
        D, h2, y, B, HINGE, GAMMA, "worst_case")
    torch.testing.assert_close(a, b)
    D.train()
    # G step: D frozen as in the trainer.
    D.requires_grad_(False)
    g_loss = step_g_loss(G, D, z, y_f, HINGE, T, "code_increase_logit")
    g_loss.backward()
    D.requires_grad_(True)
    assert G.linear.weight.grad is not None and G.linear.weight.grad.abs().sum() > 0


# -- the trainer ----------------------------------------------------------------------------------

def spy_losses(terms: list, seen: dict[str, list[torch.Tensor]]) -> None:
    """Record each term's loss value under its name (the term still returns it)."""
    for term in terms:
        loss = term.loss

        def spy(batch, stats, loss=loss, name=term.name):
            value = loss(batch, stats)
            seen.setdefault(name, []).append(value.detach())
            return value

        term.loss = spy


def test_trainer_combines_half_clean_half_adversarial_on_both_sides() -> None:
    # A step large enough that the perturbed losses differ from the clean ones beyond rounding
    # on every CPU (at 0.01 the D loss of this tiny net can round to the clean value).
    t = GANTrainer(tiny_config(augment__advaug="gd", augment__advaug_step=0.5,
                               regularizer__name="none", optim__d_steps=1))
    assert [type(x) for x in t.d_terms[:2]] == [DAdversarial, AdvAugD]
    assert [type(x) for x in t.g_terms] == [GAdversarial, AdvAugG]
    # Lottery stage II (and a dense run) only: tickets are found without AdvAug.
    for term in (t.d_terms[1], t.g_terms[1]):
        assert term.share == 0.5 and term.fires(0, 0, "train") and not term.fires(0, 0, "ticket")
    seen: dict[str, list[torch.Tensor]] = {}
    spy_losses(t.d_terms[:2] + t.g_terms, seen)
    t.d_step(0)
    d = t.stats.collect()
    t.g_step()
    g = t.stats.collect()
    assert {k: len(v) for k, v in seen.items()} == {
        "d_adversarial": 1, "advaug_d": 1, "g_adversarial": 1, "advaug_g": 1}
    # Bitwise: the logged losses are 0.5 * clean + 0.5 * adversarial of the step's own values.
    assert d["d_loss"] == float(0.5 * seen["d_adversarial"][0] + 0.5 * seen["advaug_d"][0])
    assert d["d_loss_adv"] == float(seen["advaug_d"][0])
    assert g["g_loss"] == float(0.5 * seen["g_adversarial"][0] + 0.5 * seen["advaug_g"][0])
    assert seen["d_adversarial"][0] != seen["advaug_d"][0]
    assert seen["g_adversarial"][0] != seen["advaug_g"][0]
