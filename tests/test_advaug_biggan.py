"""AdvAug in the BigGAN reference's form (augment.advaug_form=biggan), traced against hand
computations written from the reference's formulas; the SNGAN form is in test_advaug.py."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from test_advaug import GAMMA, HINGE, NS, TinyD, TinyG, advaug, g_direction
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
from tuneable_gan.config import AugmentConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models.base import DataSpec
from tuneable_gan.terms import DAdversarial, DBatch, GAdversarial, GBatch, adversarial_sum
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.training_stats import StepStats

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
