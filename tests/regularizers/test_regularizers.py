"""LeCam, R1, R2, GP and DRAGAN against independent hand computations (docs/methods.md 4.1, 4.2).

The tiny Ds have closed-form input gradients:
- QuadD:   D_c(x, y) = 0.5 * c * (1 + y) * ||x||^2  ->  grad_x = c * (1 + y) * x   (y = 0 if None)
- LinearD: D_w(x, y) = (1 + y) * <w, x>             ->  grad_x = (1 + y) * w, for every x
so every penalty and its derivative w.r.t. D's parameter is computed by hand in float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import tiny_config
from torch import nn
from torch.testing import assert_close

from tuneable_gan.augment import diff_augment
from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.config import Config
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import DataSpec
from tuneable_gan.regularizers import REGULARIZERS, DBatch, input_grad_norms
from tuneable_gan.resolve import resolve
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.training_stats import StepStats

Tensor = torch.Tensor
F64 = torch.float64
SHAPE = (1, 3, 3)
GAMMA = 3.0
DIGITS = DataSpec((1, 8, 8), 10)  # the data of tiny_config (digits at resolution 8)
TRAIN = "train"  # the stage of a dense run


def _factor(y: Tensor | None, like: Tensor) -> Tensor:
    return torch.ones(len(like), dtype=like.dtype) if y is None else 1.0 + y.to(like.dtype)


class QuadD(nn.Module):
    """0.5 * c * (1 + y) * ||x||^2 per sample."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=F64))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return 0.5 * self.c * _factor(y, x) * x.flatten(1).pow(2).sum(1)


class LinearD(nn.Module):
    """(1 + y) * <w, x> per sample."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return _factor(y, x) * (x * self.w).flatten(1).sum(1)


def images(n: int, seed: int, scale: float = 1.0) -> Tensor:
    """n float64 images, sample i scaled by (i + 1) so per-sample and batch statistics differ."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, generator=gen, dtype=F64)
    return scale * x * torch.arange(1, n + 1, dtype=F64).view(-1, 1, 1, 1)


def make_batch(D: nn.Module, fake: Tensor, real: Tensor, labels: Tensor | None = None,
               augment=lambda t: t, gen: torch.Generator | None = None, step: int = 0,
               d_step: int = 0, logits: Tensor | None = None) -> DBatch:
    x = torch.cat([fake, real])
    if logits is None:
        logits = D(x, labels)
    return DBatch(x=x, logits=logits, labels=labels, n_fake=len(fake), grad_norms=None,
                  fake_raw=fake, real_raw=real, D=D, augment=augment,
                  generator=gen if gen is not None else torch.Generator().manual_seed(0),
                  step=step, d_step=d_step)


def resolved(**kw: object) -> Config:
    """tiny_config(**kw) with its paper-default nulls filled, as the trainer resolves it."""
    return resolve(tiny_config(**kw), DIGITS)


def build(name: str, **kw: object):
    return REGULARIZERS.get(name)(resolved(regularizer__name=name, **kw))


def clone(gen: torch.Generator) -> torch.Generator:
    return torch.Generator().set_state(gen.get_state())


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


# -- LeCam --------------------------------------------------------------------------------------

class ReferenceAnchors:
    """The reference's EMA wrapper, re-derived from docs/methods.md 4.1: init 1000, decay 0 while
    itr < start, penalty only when itr > start. The reference's itr starts at 0 and grows after
    each G iteration (google/lecam-gan third_party/run_train.py), so this oracle is fed
    itr = the phase step (0-based)."""

    def __init__(self, decay: float, start: int) -> None:
        self.real = self.fake = 1000.0
        self.decay, self.start = decay, start

    def update(self, mean_real: float, mean_fake: float, itr: int) -> None:
        d = 0.0 if itr < self.start else self.decay
        self.real = self.real * d + mean_real * (1 - d)
        self.fake = self.fake * d + mean_fake * (1 - d)

    def penalised(self, itr: int) -> bool:
        return itr > self.start


def lecam_hand(logits: Tensor, n_fake: int, a_real: float, a_fake: float, lam: float):
    """(penalty, d penalty / d logits) with constant anchors."""
    f, r = logits[:n_fake], logits[n_fake:]
    hr, hf = torch.relu(r - a_fake), torch.relu(a_real - f)
    pen = lam * (hr.pow(2).mean() + hf.pow(2).mean())
    grad = torch.cat([-2 * lam * hf / len(f), 2 * lam * hr / len(r)])
    return pen, grad


def test_lecam_defaults_and_penalises_every_d_step_from_start():
    cfg = resolved(regularizer__name="lecam", regularizer__weight=None)
    reg = REGULARIZERS.get("lecam")(cfg)
    assert (reg.weight, reg.decay, reg.start, reg.every) == (0.3, 0.9, 1000, "all")
    r = cfg.regularizer
    assert {"weight": r.weight, "every": r.every, "ema": r.ema, "start": r.start} == {
        "weight": 0.3, "every": "all", "ema": 0.9, "start": 1000}
    assert reg.state_dict() == {"anchor_real": None, "anchor_fake": None}
    first = build("lecam", regularizer__every="first")
    # The anchors advance in every D step (``observe``; see the trainer test below); the
    # penalty is carried when itr > start with itr = the phase step (from 0), so from phase step
    # 1001 (the 1002nd iteration) on, by every D step or only by d_step 0.
    for s in (0, 999, 1000, 1001, 5000):
        for k in range(4):
            assert reg.fires(s, k, TRAIN) is (s >= 1001)
            assert first.fires(s, k, TRAIN) is (s >= 1001 and k == 0)


def test_lecam_anchors_and_penalty_over_steps_match_the_reference_schedule():
    lam, decay, start, n = 0.5, 0.9, 3, 4
    reg = build("lecam", regularizer__weight=lam, regularizer__ema=decay, regularizer__start=start)
    ref = ReferenceAnchors(decay, start)
    gen = torch.Generator().manual_seed(0)
    carried = []
    for step in range(7):
        for d_step in range(2):
            logits = torch.randn(2 * n, generator=gen, dtype=F64).requires_grad_(True)
            ref.update(logits[n:].mean().item(), logits[:n].mean().item(), step)
            batch = make_batch(QuadD(1.0), images(n, 0), images(n, 1), step=step,
                               d_step=d_step, logits=logits)
            reg.observe(batch, StepStats())
            assert isinstance(reg.anchor_real, float) and isinstance(reg.anchor_fake, float)
            assert reg.anchor_real == pytest.approx(ref.real, rel=1e-12, abs=1e-12)
            assert reg.anchor_fake == pytest.approx(ref.fake, rel=1e-12, abs=1e-12)
            if step < start:  # warm-up: the anchors are the last batch means exactly
                assert reg.anchor_real == logits[n:].mean().item()
                assert reg.anchor_fake == logits[:n].mean().item()
            else:  # from step == start the anchors average (checked against ref above)
                assert reg.anchor_real != logits[n:].mean().item()
            assert reg.fires(step, d_step, TRAIN) is ref.penalised(step)
            if not ref.penalised(step):  # no penalty up to and including step == start
                continue
            pen = reg.penalty(batch)
            carried.append(step)
            want, dwant = lecam_hand(logits.detach(), n, ref.real, ref.fake, lam)
            pen.backward()
            assert_close(pen, want)
            # Anchors carry no gradient: d pen / d logits is the constant-anchor formula exactly.
            assert_close(logits.grad, dwant)
    assert carried == [4, 4, 5, 5, 6, 6] and pen.item() > 0


def test_lecam_penalty_on_known_logits_and_its_gradient():
    """start=0: penalised from phase step 1 (itr > start, itr = step); the anchors are seeded by
    the first batch means."""
    lam = 0.3
    reg = build("lecam", regularizer__weight=None, regularizer__start=0)
    assert not reg.fires(0, 0, TRAIN)
    fake = [-1.0, 0.5, 2.0, -3.0]
    real = [1.0, -2.0, 3.0, 0.2]
    logits = torch.tensor(fake + real, dtype=F64, requires_grad=True)
    batch = make_batch(QuadD(1.0), images(4, 0), images(4, 1), step=1, logits=logits)
    reg.observe(batch, StepStats())
    assert reg.fires(1, 0, TRAIN)
    pen = reg.penalty(batch)
    a_real, a_fake = sum(real) / 4, sum(fake) / 4
    assert reg.anchor_real == pytest.approx(a_real) and reg.anchor_fake == pytest.approx(a_fake)
    hand = lam * ((1 - a_fake) ** 2 + (3 - a_fake) ** 2 + (0.2 - a_fake) ** 2) / 4 + lam * (
        (a_real + 1) ** 2 + (a_real - 0.5) ** 2 + (a_real + 3) ** 2) / 4
    assert pen.item() == pytest.approx(hand, rel=1e-12)
    pen.backward()
    assert_close(logits.grad, lecam_hand(logits.detach(), 4, a_real, a_fake, lam)[1])


def test_lecam_anchors_are_not_swapped():
    """Reals far above fakes: reals are pulled toward the FAKE anchor (large penalty); a swapped
    implementation (reals vs the real anchor) would give 0.125 here."""
    reg = build("lecam", regularizer__weight=1.0, regularizer__start=0)
    logits = torch.tensor([-2.0, -3.0, 2.0, 3.0], dtype=F64)
    batch = make_batch(QuadD(1.0), images(2, 0), images(2, 1), logits=logits)
    reg.observe(batch, StepStats())
    pen = reg.penalty(batch)
    assert (reg.anchor_real, reg.anchor_fake) == (2.5, -2.5)
    assert pen.item() == pytest.approx((4.5 ** 2 + 5.5 ** 2) / 2 * 2)


def test_lecam_every_first_penalises_d_step_0_only_but_tracks_every_d_step():
    # start 0: phase step 1 is the first penalised one (itr > start).
    reg = build("lecam", regularizer__start=0, regularizer__every="first")
    fired, pens, anchors = [], [], []
    for d_step, logits in enumerate([[-1.0, 1.0], [-4.0, 4.0]]):
        batch = make_batch(QuadD(1.0), images(1, 0), images(1, 1), step=1, d_step=d_step,
                           logits=torch.tensor(logits, dtype=F64))
        reg.observe(batch, StepStats())
        fired.append(reg.fires(1, d_step, TRAIN))
        if fired[-1]:
            pens.append(reg.penalty(batch).item())
        anchors.append((reg.anchor_real, reg.anchor_fake))
    assert fired == [True, False] and pens[0] > 0
    assert anchors[1] == pytest.approx((0.9 * 1.0 + 0.1 * 4.0, 0.9 * -1.0 + 0.1 * -4.0))


def test_lecam_state_round_trips_bitwise():
    reg = build("lecam", regularizer__start=1, regularizer__ema=0.7)
    gen = torch.Generator().manual_seed(5)
    for step in range(3):
        batch = make_batch(QuadD(1.0), images(3, 0), images(3, 1), step=step,
                           logits=torch.randn(6, generator=gen))
        reg.observe(batch, StepStats())
        if reg.fires(step, 0, TRAIN):
            reg.penalty(batch)
    other = build("lecam", regularizer__start=1, regularizer__ema=0.7)
    other.load_state_dict(copy.deepcopy(reg.state_dict()))
    assert other.state_dict() == reg.state_dict()
    logits = torch.randn(6, generator=gen)
    pens = []
    for r in (reg, other):
        batch = make_batch(QuadD(1.0), images(3, 0), images(3, 1), step=3, logits=logits)
        r.observe(batch, StepStats())
        assert r.fires(3, 0, TRAIN)
        pens.append(r.penalty(batch))
    a, b = pens
    assert torch.equal(a, b) and a.item() > 0 and other.state_dict() == reg.state_dict()


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


def test_trainer_lecam_warm_up_reports_no_reg_loss_but_moves_the_anchors():
    t = GANTrainer(tiny_config(regularizer__name="lecam", regularizer__weight=None))
    assert t.cfg.regularizer.start == 1000
    observed, penalised = [], []
    observe, penalty = t.reg.observe, t.reg.penalty

    def observe_spy(batch, stats):
        observed.append((batch.d_step, batch.logits.detach().clone(), batch.n_fake))
        observe(batch, stats)

    def penalty_spy(batch):
        penalised.append(batch.d_step)
        return penalty(batch)

    t.reg.observe, t.reg.penalty = observe_spy, penalty_spy
    m = t.train_step()
    # No D step carried a penalty, so nothing is logged for it (not a diluting 0).
    assert "reg_loss" not in m and {"d_loss", "g_loss"} <= m.keys()
    # The anchors advanced on every D step of the warm-up; no penalty was computed.
    assert [k for k, _, _ in observed] == list(range(t.cfg.optim.d_steps)) and penalised == []
    # Warm-up decay 0 (itr < start): the anchors are the last D step's batch means exactly.
    _, logits, n_fake = observed[-1]
    assert t.reg.anchor_real == logits[n_fake:].mean().item()
    assert t.reg.anchor_fake == logits[:n_fake].mean().item()
    assert t.reg.anchor_real != t.reg.anchor_fake


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
