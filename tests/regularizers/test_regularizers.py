"""R1, R2, GP and DRAGAN against independent hand computations (docs/methods.md 4.2; LeCam
has test_lecam.py).

The tiny Ds have closed-form input gradients:
- QuadD:   D_c(x, y) = 0.5 * c * (1 + y) * ||x||^2  ->  grad_x = c * (1 + y) * x   (y = 0 if None)
- LinearD: D_w(x, y) = (1 + y) * <w, x>             ->  grad_x = (1 + y) * w, for every x
so every penalty and its derivative w.r.t. D's parameter is computed by hand in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config
from reg_helpers import (
    F64,
    GAMMA,
    SHAPE,
    TRAIN,
    LinearD,
    QuadD,
    Tensor,
    _factor,
    build,
    clone,
    images,
    make_batch,
    resolved,
)
from torch import nn
from torch.testing import assert_close

from tuneable_gan.augment import diff_augment
from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.errors import ConfigError
from tuneable_gan.regularizers import REGULARIZERS, DBatch, input_grad_norms
from tuneable_gan.trainer import GANTrainer

# -- R1 / R2 ------------------------------------------------------------------------------------

SIDES = [("r1", "real"), ("r2", "fake")]


def raw_batch(D: nn.Module, fake: Tensor, real: Tensor, labels: Tensor | None, augment,
              gen: torch.Generator) -> DBatch:
    """The D step of the trainer's wrt="raw" path: ``raw = [fakes; reals]`` requires grad,
    ``x = T(raw)`` (one draw), one D forward."""
    raw = torch.cat([fake, real]).requires_grad_(True)
    x = augment(raw)
    return DBatch(x=x, logits=D(x, labels), labels=labels, n_fake=len(fake), grad_norms=None,
                  fake_raw=fake, real_raw=real, D=D, augment=augment, generator=gen, step=0,
                  d_step=0, raw=raw)


@pytest.mark.parametrize("name,side", SIDES)
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_r1_r2_value_and_gradient_wrt_raw_image_through_the_loss_forwards_T(
        name, side, conditional, scale):
    """gamma/2 * mean ||d D(T(x))/dx||^2 on one side, through the T draw of the loss forward.

    T(x) = s*x + e with e ~ N(0, 1) drawn from the run generator once, for the loss forward, so
    grad_x = s * c (1+y) * T(x) for that same e. A penalty that drew T afresh (another e, or an
    advanced generator) or read the other side's images (10x larger) gives another value.
    """
    n = 5
    good, other = images(n, 1), 10.0 * images(n, 2)
    fake, real = (other, good) if side == "real" else (good, other)
    y_side = torch.tensor([0, 1, 2, 0, 3]) if conditional else None
    y_other = torch.full((n,), 7) if conditional else None
    labels = None
    if conditional:
        labels = torch.cat([y_other, y_side]) if side == "real" else torch.cat([y_side, y_other])
    c = 0.7
    D = QuadD(c)
    gen = torch.Generator().manual_seed(4)
    ref = clone(gen)

    def T(t: Tensor) -> Tensor:
        return scale * t + torch.randn(t.shape, generator=gen, dtype=t.dtype)

    reg = build(name, regularizer__weight=GAMMA, model__conditional=conditional)
    assert reg.needs_raw_grad and not reg.needs_grad_norms
    batch = raw_batch(D, fake, real, labels, T, gen)
    after_forward = gen.get_state()
    pen = reg.penalty(batch)
    assert torch.equal(gen.get_state(), after_forward)  # no second draw
    pen.backward()

    e = torch.randn((2 * n, *SHAPE), generator=ref, dtype=F64)
    e = e[n:] if side == "real" else e[:n]
    x_aug = scale * good + e  # the side's rows of the loss forward's input
    # ||grad||^2 = s^2 c^2 (1+y)^2 ||T(x)||^2 = c^2 k; d pen / dc = gamma c mean k.
    k = scale ** 2 * _factor(y_side, good).pow(2) * x_aug.flatten(1).pow(2).sum(1)
    assert_close(pen, GAMMA / 2 * c ** 2 * k.mean())
    assert_close(D.c.grad, GAMMA * c * k.mean())


@pytest.mark.parametrize("name,side", SIDES)
def test_trainer_r1_r2_raw_differentiate_the_loss_forward_wrt_its_un_augmented_input(name, side):
    """In the trainer: one T call per D step (on ``raw``, a leaf that requires grad, whose rows
    are [fakes; reals]), and the penalty is gamma/2 mean ||d sum D(T(raw))/d raw||^2 on its
    side, recomputed here by replaying T from the generator state it started from."""
    t = GANTrainer(tiny_config(regularizer__name=name, regularizer__weight=GAMMA))
    calls: list[tuple[Tensor, Tensor, Tensor]] = []
    augment = t.augment

    def augment_spy(x: Tensor) -> Tensor:
        before = t.gen.get_state()
        out = augment(x)
        calls.append((x, before, out))
        return out

    seen: list[tuple[DBatch, Tensor, Tensor]] = []
    penalty = t.reg.penalty

    def penalty_spy(batch: DBatch) -> Tensor:
        # Before D steps: eval mode reuses spectral norm's current u (no power step).
        (raw, before, out), = calls
        assert batch.raw is raw and batch.x is out and raw.is_leaf and raw.requires_grad
        assert torch.equal(raw.detach(), torch.cat([batch.fake_raw, batch.real_raw]))
        again = raw.detach().clone().requires_grad_(True)
        gen = torch.Generator().set_state(before)
        x = diff_augment(again, t.policy, gen)
        assert torch.equal(x.detach(), batch.x.detach())  # the same T draw
        t.D.eval()
        (g,) = torch.autograd.grad(t.D(x, batch.labels).sum(), again)
        t.D.train()
        g = g[batch.n_fake:] if side == "real" else g[:batch.n_fake]
        sn = [b.clone() for b in t.D.buffers()]
        value = penalty(batch)
        # No extra training-mode D forward (it would take a spectral-norm power step).
        assert all(torch.equal(a, b) for a, b in zip(sn, t.D.buffers()))
        seen.append((batch, value.detach(), GAMMA / 2 * g.flatten(1).pow(2).sum(1).mean()))
        return value

    t.augment, t.reg.penalty = augment_spy, penalty_spy
    t.d_step(0)
    (batch, value, want), = seen
    assert len(calls) == 1  # no extra T call for the penalty
    assert_close(value, want)
    assert value.item() > 0
    assert t.stats.collect()["reg_loss"] == value.item()


@pytest.mark.parametrize("name,side", SIDES)
def test_r1_r2_augmented_convention_reads_the_loss_forward_norms(name, side):
    """wrt='augmented': gamma/2 * mean g^2 of the trainer's norms on one half (no extra forward)."""
    default = build(name)
    assert default.wrt == "raw" and not default.needs_grad_norms
    reg = REGULARIZERS.get(name)(resolved(regularizer__name=name, regularizer__weight=GAMMA),
                                 wrt="augmented")
    assert reg.needs_grad_norms and reg.wrt == "augmented"
    assert not type(reg).needs_grad_norms  # the class default is untouched

    n, c = 4, -1.3
    fake, real = images(n, 2), images(n, 3)
    D = QuadD(c)
    x = (2.0 * torch.cat([fake, real])).requires_grad_(True)  # D's augmented input
    logits = D(x)
    batch = make_batch(D, fake, real, logits=logits)
    batch.x, batch.grad_norms = x, input_grad_norms(logits, x, create_graph=True)
    pen = reg.penalty(batch)
    pen.backward()
    part = x.detach()[n:] if side == "real" else x.detach()[:n]
    k = part.flatten(1).pow(2).sum(1).mean()
    assert_close(pen, GAMMA / 2 * c ** 2 * k)
    assert_close(D.c.grad, GAMMA * c * k)
    with pytest.raises(ValueError, match="wrt must be one of"):
        REGULARIZERS.get(name)(resolved(regularizer__name=name), wrt="pixels")


# -- GP -----------------------------------------------------------------------------------------

def test_gp_linear_d_is_exactly_lambda_norm_w_minus_one_squared():
    w = torch.linspace(-0.4, 0.9, 9, dtype=F64).view(SHAPE)
    D = LinearD(w)
    reg = build("gp", regularizer__weight=GAMMA)
    pen = reg.penalty(make_batch(D, images(4, 1), images(4, 2)))
    pen.backward()
    nw = w.norm()
    assert_close(pen, GAMMA * (nw - 1) ** 2)
    assert_close(D.w.grad, GAMMA * 2 * (nw - 1) * w / nw)


def test_gp_interpolates_with_eps_from_the_run_generator_and_no_augmentation():
    n, c = 6, -0.8
    fake, real = images(n, 4), images(n, 5, scale=0.5)
    D = QuadD(c)
    gen = torch.Generator().manual_seed(11)
    ref = clone(gen)
    reg = build("gp", regularizer__weight=GAMMA)
    # T doubles its input: a GP that ran D on T(x_hat) would be off by a factor of 2 in the norms.
    pen = reg.penalty(make_batch(D, fake, real, gen=gen, augment=lambda t: 2.0 * t))
    pen.backward()

    eps = torch.rand(n, 1, 1, 1, generator=ref, dtype=F64)
    x_hat = eps * real + (1 - eps) * fake
    norm = x_hat.flatten(1).norm(dim=1)
    assert_close(pen, GAMMA * ((abs(c) * norm - 1) ** 2).mean())
    assert_close(D.c.grad, GAMMA * (2 * (abs(c) * norm - 1) * math.copysign(1, c) * norm).mean())
    assert torch.equal(gen.get_state(), ref.get_state())  # exactly these draws, nothing else


def test_gp_is_refused_for_a_conditional_d():
    want = ("regularizer.name=gp is not available for a conditional D (model.conditional=true): "
            "GP interpolates between images of different classes; valid: none, diggan, lecam, "
            "r1, r2, dragan")
    with pytest.raises(ConfigError) as err:
        build("gp", model__conditional=True)
    assert err.value.problems == [want]
    with pytest.raises(ConfigError):
        GANTrainer(tiny_config(regularizer__name="gp", model__conditional=True))


# -- DRAGAN -------------------------------------------------------------------------------------

@pytest.mark.parametrize("conditional", [False, True])
def test_dragan_linear_d_uses_the_real_labels(conditional):
    n = 4
    w = torch.linspace(0.3, -0.5, 9, dtype=F64).view(SHAPE)
    D = LinearD(w)
    y_real = torch.tensor([0, 1, 2, 1])
    labels = torch.cat([torch.full((n,), 5), y_real]) if conditional else None
    reg = build("dragan", regularizer__weight=GAMMA, model__conditional=conditional)
    pen = reg.penalty(make_batch(D, images(n, 1), images(n, 2), labels))
    pen.backward()
    k, nw = _factor(y_real if conditional else None, w.new_zeros(n)), w.norm()
    assert_close(pen, GAMMA * ((k * nw - 1) ** 2).mean())
    assert_close(D.w.grad, GAMMA * (2 * (k * nw - 1) * k).mean() * w / nw)


def test_dragan_perturbation_reproduced_from_a_cloned_generator():
    """alpha (n,1,1,1) then u (n,C,H,W) from the run generator; ONE unbiased std of the batch."""
    n, c = 5, 1.1
    fake, real = torch.full((n, *SHAPE), float("nan"), dtype=F64), images(n, 6)
    D = QuadD(c)
    gen = torch.Generator().manual_seed(3)
    ref = clone(gen)
    reg = build("dragan", regularizer__weight=GAMMA)
    pen = reg.penalty(make_batch(D, fake, real, gen=gen, augment=lambda t: 2.0 * t))
    pen.backward()

    alpha = torch.rand(n, 1, 1, 1, generator=ref, dtype=F64)
    u = torch.rand(real.shape, generator=ref, dtype=F64)
    x_t = real + alpha * 0.5 * real.std(unbiased=True) * u
    norm = c * x_t.flatten(1).norm(dim=1)
    assert_close(pen, GAMMA * ((norm - 1) ** 2).mean())
    assert_close(D.c.grad, GAMMA * (2 * (norm - 1) * norm / c).mean())
    assert torch.equal(gen.get_state(), ref.get_state())


# -- all ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["r1", "r2", "gp", "dragan"])
def test_gradient_penalties_are_stateless_with_paper_defaults(name):
    reg = build(name, regularizer__weight=None)
    assert (reg.weight, reg.every) == (10.0, "all")
    assert reg.state_dict() == {}
    reg.load_state_dict({})
    assert all(reg.fires(s, k, TRAIN) for s in (0, 7) for k in range(3))
    assert build(name, regularizer__every="first").fires(0, 1, TRAIN) is False


RUNS = [("lecam", False), ("lecam", True), ("r1", False), ("r1", True), ("r2", False),
        ("r2", True), ("gp", False), ("dragan", False), ("dragan", True)]


@pytest.mark.parametrize("name,conditional", RUNS)
def test_trainer_step_reports_a_positive_finite_reg_loss(name, conditional):
    cfg = tiny_config(regularizer__name=name, regularizer__weight=None, regularizer__start=0,
                      model__conditional=conditional)
    t = GANTrainer(cfg)
    # LeCam is 0 while the untrained D ranks every real below the fake mean (and every fake above
    # the real mean), as it does at init here; a few D updates fix the ordering. With start 0 it
    # penalises from phase step 1 (itr > start): step 0 logs no reg_loss at all.
    for step in range(3 if name == "lecam" else 1):
        m = t.train_step()
        if name == "lecam" and step == 0:
            assert "reg_loss" not in m
            continue
        assert math.isfinite(m["reg_loss"]) and m["reg_loss"] >= 0
    assert m["reg_loss"] > 0
    assert math.isfinite(m["d_loss"]) and math.isfinite(m["g_loss"])


def test_trainer_r1_augmented_convention_runs():
    cfg = tiny_config(regularizer__name="r1", regularizer__weight=None)
    t = GANTrainer(cfg)
    i = t.d_terms.index(t.reg)
    t.reg = t.d_terms[i] = REGULARIZERS.get("r1")(t.cfg, wrt="augmented")
    seen = []
    penalty = t.reg.penalty

    def spy(batch):
        seen.append(batch.grad_norms is not None and batch.grad_norms.requires_grad)
        return penalty(batch)

    t.reg.penalty = spy
    m = t.train_step()
    # The trainer computed the norms with a graph for it, on each D step.
    assert seen == [True] * t.cfg.optim.d_steps
    assert math.isfinite(m["reg_loss"]) and m["reg_loss"] > 0


@pytest.mark.parametrize("name", ["lecam", "dragan"])
def test_resume_is_bitwise_identical(tmp_path, name):
    cfg = tiny_config(regularizer__name=name, regularizer__weight=None, regularizer__start=1,
                      train__steps=4)
    straight = GANTrainer(cfg)
    logged_straight = [straight.train_step() for _ in range(4)]
    first = GANTrainer(cfg)
    logged = [first.train_step() for _ in range(2)]
    write_checkpoint(tmp_path / "ck", first.state_dict(), cfg)
    state, cfg2 = read_checkpoint(tmp_path / "ck")
    second = GANTrainer(cfg2)
    second.load_state_dict(state)
    logged += [second.train_step() for _ in range(2)]
    assert logged == logged_straight
