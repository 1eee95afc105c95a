"""DigGAN against an independent hand computation (docs/methods.md 1.1, 1.2).

The tiny D is D_c(x) = 0.5 * c * ||x||^2 per sample, so d D/dx_i = c * x_i and the per-sample
gradient norm is |c| * ||x_i|| in closed form, as is its derivative with respect to c.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from torch.testing import assert_close

from tuneable_gan.config import Config
from tuneable_gan.models import DataSpec
from tuneable_gan.regularizers import REGULARIZERS, DBatch, input_grad_norms
from tuneable_gan.regularizers.diggan import DigGAN, paper_weight
from tuneable_gan.resolve import resolve
from tuneable_gan.trainer import GANTrainer

LAM = 3.0
DIGITS = DataSpec((1, 8, 8), 10)  # the data of tiny_config (digits at resolution 8)


def resolved(**kw: object) -> Config:
    """tiny_config(**kw) (regularizer diggan) with its paper-default nulls filled."""
    return resolve(tiny_config(**kw), DIGITS)


def quad_batch(c: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> DBatch:
    x = torch.cat([fake, real]).requires_grad_(True)
    logits = 0.5 * c * x.flatten(1).pow(2).sum(1)
    norms = input_grad_norms(logits, x, create_graph=True)
    return DBatch(x=x, logits=logits, labels=None, n_fake=len(fake), grad_norms=norms,
                  fake_raw=fake, real_raw=real, D=torch.nn.Identity(), augment=lambda t: t,
                  generator=torch.Generator(), step=0, d_step=0)


def hand(c: float, fake: torch.Tensor, real: torch.Tensor, beta: float, pairing: str,
         hist: tuple[torch.Tensor, torch.Tensor] | None):
    """(penalty, d penalty / d c, new history) by hand, in float64."""
    nf = fake.flatten(1).double().norm(dim=1)
    nr = real.flatten(1).double().norm(dim=1)
    if pairing == "magnitude":
        nf, nr = nf.sort().values, nr.sort().values
    gf, gr = abs(c) * nf, abs(c) * nr
    dgf, dgr = torch.sign(torch.tensor(c)) * nf, torch.sign(torch.tensor(c)) * nr
    if hist is not None:
        gf, gr = (1 - beta) * gf + beta * hist[0], (1 - beta) * gr + beta * hist[1]
        dgf, dgr = (1 - beta) * dgf, (1 - beta) * dgr
    gap = gf - gr
    pen = LAM * gap.pow(2).mean()
    dpen = LAM * (2 * gap * (dgf - dgr)).mean()
    return pen, dpen, (gf, gr)


@pytest.mark.parametrize("pairing", ["random", "same_class", "magnitude"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_penalty_and_its_gradient_match_hand_computation_over_two_steps(pairing, beta):
    cfg = resolved(regularizer__weight=LAM, regularizer__ema=beta,
                   regularizer__pairing=pairing, model__conditional=True)
    reg = REGULARIZERS.get("diggan")(cfg)
    gen = torch.Generator().manual_seed(1)
    hist = None
    for c_val in [0.7, -1.3]:
        fake, real = torch.randn(5, 1, 2, 2, generator=gen), torch.randn(5, 1, 2, 2, generator=gen)
        c = torch.tensor(c_val, requires_grad=True)
        pen = reg.penalty(quad_batch(c, fake, real))
        pen.backward()
        want, dwant, hist = hand(c_val, fake, real, beta, pairing, hist)
        assert_close(pen.double(), want, rtol=1e-5, atol=1e-7)
        assert_close(c.grad.double(), dwant, rtol=1e-5, atol=1e-7)
        # The stored history is the smoothed norms, detached: no graph kept alive.
        for e, h in zip((reg.ema_fake, reg.ema_real), hist):
            assert e.grad_fn is None and not e.requires_grad
            assert_close(e.double(), h, rtol=1e-5, atol=1e-7)


def test_pairing_same_class_pins_fake_labels_and_random_does_not():
    y_real, y_fake = torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0])
    same = REGULARIZERS.get("diggan")(resolved(regularizer__pairing="same_class",
                                               model__conditional=True))
    rand = REGULARIZERS.get("diggan")(resolved())
    assert torch.equal(same.fake_labels(y_real, y_fake), y_real)
    assert torch.equal(rand.fake_labels(y_real, y_fake), y_fake)


def test_history_round_trips_through_state_dict():
    reg = REGULARIZERS.get("diggan")(resolved(regularizer__ema=0.5))
    gen = torch.Generator().manual_seed(0)
    reg.penalty(quad_batch(torch.tensor(1.0), torch.randn(4, 3, generator=gen),
                           torch.randn(4, 3, generator=gen)))
    other = REGULARIZERS.get("diggan")(resolved(regularizer__ema=0.5))
    other.load_state_dict(reg.state_dict())
    batch = dict(c=torch.tensor(2.0), fake=torch.ones(4, 3), real=torch.zeros(4, 3))
    assert torch.equal(reg.penalty(quad_batch(**batch)), other.penalty(quad_batch(**batch)))


def test_paper_weight_rule():
    assert paper_weight(tiny_config(data__fraction=0.1, augment__diffaugment="")) == 1e4
    assert paper_weight(tiny_config(data__fraction=0.2, augment__diffaugment="")) == 5e3
    assert paper_weight(tiny_config(data__fraction=0.1)) == pytest.approx(1e3)
    assert paper_weight(tiny_config(data__fraction=1.0)) == pytest.approx(10.0)
    cfg = resolved(regularizer__weight=None)
    reg = REGULARIZERS.get("diggan")(cfg)
    assert reg.weight == pytest.approx(1e3) and reg.beta == 0.5 and reg.every == "first"
    # The resolved config carries the values the run uses.
    assert (cfg.regularizer.weight, cfg.regularizer.ema, cfg.regularizer.every) == (
        reg.weight, 0.5, "first")
    assert DigGAN.default_weight(cfg) == paper_weight(cfg)


def test_trainer_applies_it_on_the_first_d_step_to_the_augmented_input():
    t = GANTrainer(tiny_config(optim__d_steps=3))
    seen = []
    penalty = t.reg.penalty

    def spy(batch):
        # Recompute the norms from D's input before D steps; eval mode reuses SN's current u.
        t.D.eval()
        recomputed = input_grad_norms(t.D(batch.x, None), batch.x, create_graph=False)
        t.D.train()
        seen.append((batch, recomputed))
        return penalty(batch)

    t.reg.penalty = spy
    m = []
    for k in range(3):
        t.d_step(k)
        m.append(t.stats.collect())
    assert len(seen) == 1 and seen[0][0].d_step == 0
    # Only the D step that carries the penalty logs it (not a 0 that dilutes the mean).
    assert m[0]["reg_loss"] > 0 and "reg_loss" not in m[1] and "reg_loss" not in m[2]
    b, recomputed = seen[0]
    # D's input is the augmented batch (fakes first), not the raw images.
    assert not torch.equal(b.x.detach(), torch.cat([b.fake_raw, b.real_raw]))
    assert_close(b.grad_norms.detach(), recomputed)
    assert b.grad_norms.requires_grad  # differentiated through: double backprop


def test_every_all_applies_on_each_d_step():
    t = GANTrainer(tiny_config(optim__d_steps=2, regularizer__every="all"))
    for k in range(2):
        t.d_step(k)
        assert t.stats.collect()["reg_loss"] > 0


def test_dig_is_logged_with_the_regularizer_off():
    t = GANTrainer(tiny_config(regularizer__name="none"))
    m = t.train_step()
    assert "reg_loss" not in m  # no D step carries a penalty, so none is logged (not a 0)
    assert {"dig", "grad_norm_real", "grad_norm_fake"} <= m.keys() and m["grad_norm_real"] > 0
