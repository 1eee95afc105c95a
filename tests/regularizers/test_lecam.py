"""LeCam (docs/methods.md 4.1) against a hand-written copy of the reference's anchor schedule and
penalty: defaults, anchors over steps, the penalty and its gradient on known logits, which D
steps carry it, warm-up in the trainer and the state round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_config
from reg_helpers import (
    F64,
    TRAIN,
    QuadD,
    Tensor,
    build,
    images,
    make_batch,
    resolved,
)
from torch.testing import assert_close

from tuneable_gan.regularizers import REGULARIZERS
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.training_stats import StepStats

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
