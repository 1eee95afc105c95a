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
    advaug_terms,
    d_adv_loss,
    d_objective,
    feature_delta,
    g_adv_loss,
)
from tuneable_gan.augment import diff_augment, parse_policy
from tuneable_gan.config import AugmentConfig, ModelConfig
from tuneable_gan.errors import ConfigError
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
    t = GANTrainer(tiny_config(augment__advaug="gd", regularizer__name="none", optim__d_steps=1))
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


# -- the BigGAN reference's form (augment.advaug_form=biggan) -------------------------------------
#
# "BigGAN and DiffAugGAN/train_eval_impg.py": D side, ``PGD`` ascends -loss_real(out) =
# -mean(relu(1 - out)) on the reals' pooled features and, with the same loss_real, on the fakes';
# G side, ``PGD_G`` ascends mean(D(G(u, l1=False))) and the adversarial branch is
# D(G(u + delta, l1=False)), neither through DiffAugment; both losses (clean + adv) / 2.

def biggan_cfg(mode: str = "code_increase_logit", side: str = "gd") -> AugmentConfig:
    return AugmentConfig(advaug=side, advaug_step=GAMMA, advaug_mode=mode, advaug_form="biggan")


class IdTrunkD(TinyD):
    """TinyD whose trunk is Linear(4, 4) at the identity (exact: h == x), so a test picks the
    features, hence the logits, directly; head(h) = w.h + b."""

    def __init__(self, w: list[float], b: float) -> None:
        super().__init__(w, b)
        self.lin = nn.Linear(4, 4)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(4))
            self.lin.bias.zero_()


W_HEAD, B_HEAD = [0.5, -0.25, 0.0, 0.25], 1.0  # |w|_1 = 1; one zero weight: sign 0, delta 0


def biggan_features() -> tuple[torch.Tensor, list[str]]:
    """[fakes; reals] features with logits out = w.h + 1 of -0.5, 3.0, exactly 1.0 (fakes) and
    -0.5, 3.0, 1 - gamma/2 (reals: below 1, but crossing 1 after one step of +gamma)."""
    w = torch.tensor(W_HEAD)
    unit = w / w.dot(w)  # w.unit = 1
    wanted = [-0.5, 3.0, 1.0, -0.5, 3.0, 1.0 - GAMMA / 2]
    h = torch.stack([(o - B_HEAD) * unit for o in wanted])
    h[2] = 0.0  # out = w.0 + 1 = 1.0 exactly
    return h, ["below", "above", "at_one", "below", "above", "crossing"]


def hand_biggan_d_delta(h: torch.Tensor, n_fake: int, steps: int) -> list[list[float]]:
    """The reference's PGD by hand, each half on its own: grad_h of -mean(relu(1 - out)) over a
    half of n rows is w / n where out < 1 and 0 where out >= 1 (relu'(0) = 0, as in torch);
    delta += gamma * sign(grad), ``steps`` times."""
    rows = h.tolist()
    delta = [[0.0] * 4 for _ in rows]
    halves = [range(0, n_fake), range(n_fake, len(rows))]
    for _ in range(steps):
        new = [d[:] for d in delta]
        for half in halves:
            n = len(half)
            for i in half:
                out = sum(wj * (hj + dj) for wj, hj, dj in zip(W_HEAD, rows[i], delta[i])) + B_HEAD
                grad = [wj / n if out < 1 else 0.0 for wj in W_HEAD]
                new[i] = [d + GAMMA * ((g > 0) - (g < 0)) for d, g in zip(delta[i], grad)]
        delta = new
    return delta


def hand_hinge(real: list[float], fake: list[float]) -> float:
    return (sum(max(0.0, 1 - o) for o in real) / len(real)
            + sum(max(0.0, 1 + o) for o in fake) / len(fake))


def head_by_hand(rows: list[list[float]]) -> list[float]:
    return [sum(wj * hj for wj, hj in zip(W_HEAD, r)) + B_HEAD for r in rows]


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_biggan_d_delta_traces_the_reference_step_by_step(steps: int) -> None:
    D = IdTrunkD(W_HEAD, B_HEAD)
    h, kinds = biggan_features()
    out = D.head(h)
    assert out[2].item() == 1.0 and out[1] > 1 and out[4] > 1  # exactly 1, and above 1
    delta = feature_delta(lambda f: D.head(f), h,
                          d_objective("code_increase_logit", HINGE, 3, "biggan"), GAMMA, steps)
    want = torch.tensor(hand_biggan_d_delta(h, 3, steps))
    torch.testing.assert_close(delta, want, rtol=0, atol=1e-7)
    s = GAMMA * torch.tensor(W_HEAD).sign()
    for i, kind in enumerate(kinds):
        if kind in ("above", "at_one"):  # out >= 1: the hinge term is flat, delta exactly 0
            assert torch.equal(delta[i], torch.zeros(4)), (i, kind)
        elif kind == "crossing":  # one step up, then out > 1 and no more steps
            torch.testing.assert_close(delta[i], s, rtol=0, atol=1e-9)
        else:  # fakes and reals alike go up the logit, one step per iteration
            torch.testing.assert_close(delta[i], steps * s, rtol=0, atol=1e-7)
    assert (delta[:, 2] == 0).all()  # the zero head weight: sign 0
    # The SNGAN form moves every row, the flat ones included.
    sngan = feature_delta(lambda f: D.head(f), h,
                          d_objective("code_increase_logit", HINGE, 3, "sngan"), GAMMA, steps)
    torch.testing.assert_close(sngan, (steps * s).expand(6, 4), rtol=0, atol=1e-7)


def test_biggan_d_step_loss_is_half_clean_half_adversarial_by_hand() -> None:
    D = IdTrunkD(W_HEAD, B_HEAD)
    h, _ = biggan_features()
    x_f, x_r = h[:3], h[3:]  # the identity trunk: the features are the inputs
    x = torch.cat([x_f, x_r])
    feats = D.trunk(x)
    batch = DBatch(x=x, logits=D.head(feats), labels=None, n_fake=3, grad_norms=None,
                   fake_raw=x_f, real_raw=x_r, D=D, augment=lambda t: t,
                   generator=torch.Generator(), step=0, d_step=0, features=feats, loss=HINGE)
    stats = StepStats()
    term = AdvAugD(biggan_cfg())
    assert term.form == "biggan"
    loss = adversarial_sum([DAdversarial(), term], batch, stats)
    # By hand: D_loss(clean) and D_loss on h + delta (one step), averaged.
    rows = h.tolist()
    delta = hand_biggan_d_delta(h, 3, 1)
    clean = head_by_hand(rows)
    adv = head_by_hand([[a + d for a, d in zip(r, dr)] for r, dr in zip(rows, delta)])
    want_adv = hand_hinge(adv[3:], adv[:3])
    want = (hand_hinge(clean[3:], clean[:3]) + want_adv) / 2
    assert abs(loss.item() - want) < 1e-6
    assert abs(stats.collect()["d_loss_adv"] - want_adv) < 1e-6
    # Gradients reach D's trunk through both branches, delta a constant.
    grads = torch.autograd.grad(loss, [D.lin.weight, D.out.weight], retain_graph=True)
    d = torch.tensor(delta)
    ref = (HINGE.d_loss(D.head(feats[3:]), D.head(feats[:3]))
           + HINGE.d_loss(D.head(feats[3:] + d[3:]), D.head(feats[:3] + d[:3]))) / 2
    for g, r in zip(grads, torch.autograd.grad(ref, [D.lin.weight, D.out.weight])):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-8)


def test_biggan_d_worst_case_is_the_loss_ascent_of_either_form() -> None:
    D = IdTrunkD(W_HEAD, B_HEAD)
    h, _ = biggan_features()
    for loss in (HINGE, NS):
        by_form = [feature_delta(lambda f: D.head(f), h, d_objective("worst_case", loss, 3, form),
                                 GAMMA) for form in ("sngan", "biggan")]
        assert torch.equal(*by_form)
    # hinge: fakes above -1 go up, reals below 1 go down, reals at or above 1 stay.
    s = GAMMA * torch.tensor(W_HEAD).sign()
    got = feature_delta(lambda f: D.head(f), h, d_objective("worst_case", HINGE, 3, "biggan"),
                        GAMMA)
    assert torch.equal(got[:3], s.expand(3, 4)) and torch.equal(got[3], -s)
    assert torch.equal(got[4], torch.zeros(4)) and torch.equal(got[5], -s)


class SpyT:
    """T = -x (so a path through T flips the ascent direction), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return -x


@pytest.mark.parametrize(("mode", "loss", "sign"), [
    ("code_increase_logit", HINGE, 1.0), ("code_increase_logit", NS, 1.0),
    ("worst_case", HINGE, -1.0), ("worst_case", NS, -1.0)])
def test_biggan_g_side_skips_t_and_matches_by_hand(mode: str, loss, sign: float) -> None:
    G, D = TinyG(), TinyD()
    z = torch.randn(5, 2)
    u = G.stem(z)
    T = SpyT()
    # mean D(G_rest(u)) is linear in u: grad = A^T W1^T w / n, without T in the path.
    delta_u = sign * GAMMA * g_direction(G, D).sign()
    batch = GBatch(z=z, labels=None, stem=u, fake=G.rest(u), G=G, D=D, augment=T, loss=loss,
                   step=0)
    term = AdvAugG(biggan_cfg(mode))
    adv = term.loss(batch, StepStats())
    assert T.calls == 0  # neither the PGD step nor the adversarial branch runs T
    torch.testing.assert_close(adv, loss.g_loss(D(G.rest(u + delta_u))), rtol=0, atol=1e-7)
    got = adversarial_sum([GAdversarial(), term], batch, StepStats())
    assert T.calls == 1  # the clean branch only
    expect = 0.5 * loss.g_loss(D(-G.rest(u))) + 0.5 * loss.g_loss(D(G.rest(u + delta_u)))
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-7)
    params = [G.lin.weight, G.lin.bias, G.A.weight]
    for g, w in zip(torch.autograd.grad(got, params, retain_graph=True),
                    torch.autograd.grad(expect, params)):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8)
    # The SNGAN form runs T (here -x) in its PGD step and branch: the opposite delta.
    T.calls = 0
    sngan = AdvAugG(advaug(mode)).loss(batch, StepStats())
    assert T.calls == 2
    torch.testing.assert_close(sngan, loss.g_loss(D(-G.rest(u - delta_u))), rtol=0, atol=1e-7)


def test_biggan_g_steps_accumulate_without_t() -> None:
    G, D = TinyG(), TinyD()
    u = G.stem(torch.randn(4, 2))
    delta_u = GAMMA * g_direction(G, D).sign()
    got = g_adv_loss(G, D, u, None, HINGE, None, GAMMA, "code_increase_logit", steps=3)
    torch.testing.assert_close(got, HINGE.g_loss(D(G.rest(u + 3 * delta_u))), rtol=0, atol=1e-7)


def test_trainer_builds_the_resolved_form() -> None:
    from tuneable_gan.resolve import resolve

    spec = DataSpec((1, 32, 32), 10)
    for arch, form in (("biggan", "biggan"), ("sngan", "sngan"), ("dcgan", "sngan")):
        cfg = resolve(tiny_config(model__arch=arch, augment__advaug="gd"), spec)
        assert cfg.augment.advaug_form == form
        assert {t.form for t in (*advaug_terms(cfg.augment)[0], *advaug_terms(cfg.augment)[1])} \
            == {form}
    cfg = resolve(tiny_config(model__arch="biggan", augment__advaug="gd",
                              augment__advaug_form="sngan"), spec)
    assert cfg.augment.advaug_form == "sngan"
    assert [t.form for t in advaug_terms(cfg.augment)[1]] == ["sngan"]


@pytest.mark.parametrize(("form", "t_calls"), [("biggan", 1), ("sngan", 3)])
def test_trainer_g_step_runs_t_per_form(form: str, t_calls: int) -> None:
    t = GANTrainer(tiny_config(augment__advaug="g", augment__advaug_form=form,
                               regularizer__name="none"))
    assert t.cfg.augment.advaug_form == form
    calls = []
    real_t = t.augment

    def spy(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return real_t(x)

    t.augment = spy  # the G step hands self.augment to its terms
    t.g_step()
    assert len(calls) == t_calls  # clean (+ PGD step + adversarial branch in the SNGAN form)
    assert torch.isfinite(torch.tensor(t.stats.collect()["g_loss"]))


def test_bad_form_is_one_config_error_line() -> None:
    with pytest.raises(ConfigError) as e:
        advaug_terms(AugmentConfig(advaug="gd", advaug_form="stylegan"))
    assert str(e.value) == "augment.advaug_form must be one of sngan, biggan; got 'stylegan'"
    with pytest.raises(ConfigError, match=r"^augment.advaug_mode must be one of "
                                          r"code_increase_logit, worst_case; got 'pixels'$"):
        AdvAugG(AugmentConfig(advaug="g", advaug_mode="pixels", advaug_form="biggan"))
    assert advaug_terms(AugmentConfig(advaug="off", advaug_form="stylegan")) == ([], [])
    with pytest.raises(ValueError, match="form"):
        d_adv_loss(TinyD(), torch.randn(2, 4), None, 1, HINGE, GAMMA, "worst_case", form="x")


def test_biggan_trainer_step_with_advaug_gd_uses_the_biggan_form() -> None:
    t = GANTrainer(tiny_config(model__arch="biggan", model__conditional=True,
                               data__resolution=32, model__g_ch=4, model__d_ch=4,
                               model__z_dim=8, augment__advaug="gd", optim__d_steps=1))
    assert t.cfg.augment.advaug_form == "biggan"
    assert [t_.form for t_ in (*t.d_terms[1:2], *t.g_terms[1:])] == ["biggan", "biggan"]
    m = t.train_step()
    assert {"d_loss", "d_loss_adv", "g_loss"} <= set(m)
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
