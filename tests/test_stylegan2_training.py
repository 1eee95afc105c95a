"""StyleGAN2 in the training loop (GANTrainer with model.arch=stylegan2).

1. Resume is bitwise: with adaptive ADA (p moving every D step), lazy R1 every 4 and path length
   every 2 iterations and DigGAN, 6 + checkpoint (torch.save/torch.load) + 6 steps equal 12
   straight ones: every logged value, G, D, G_ema, ADA's p, the path-length mean, images_seen.
2. ADA's p follows the reference rule (stylegan2-ada-pytorch training_loop.py): after each
   ``ada_interval``-th iteration p <- max(p + sign(E[sign(D(real))] - target) * B * interval /
   (ada_kimg * 1000), 0), the signs those of D's real logits of the iteration (recomputed here
   from a hook on D, not taken from the ADA term), including lazy R1's pass.
3. Evaluation is deterministic and leaves the training streams and G_ema alone.
4. DigGAN and DiffAugment (and DiffAugment under ADA) combine with stylegan2.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from test_lazy import sg2
from test_trainer import assert_bitwise_equal

from tuneable_gan.trainer import GANTrainer

# ADA moving fast: rate 8 * 1 / (0.1 * 1000) = 0.08 per D step.
FAST_ADA = {"augment__ada_interval": 1, "augment__ada_kimg": 0.1}
RATE = 8 * 1 / (0.1 * 1000)
DIGGAN = {"regularizer__name": "diggan", "regularizer__weight": 100.0}


def round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# -- 1. resume ----------------------------------------------------------------------------------


def test_resume_is_bitwise_with_ada_lazy_regularisation_and_diggan() -> None:
    cfg = sg2(train__steps=12, **FAST_ADA, **DIGGAN)
    straight = GANTrainer(cfg)
    logged_straight = [straight.train_step() for _ in range(12)]

    first = GANTrainer(cfg)
    logged = [first.train_step() for _ in range(6)]
    state = round_trip(first.state_dict())
    del first
    second = GANTrainer(cfg)
    second.load_state_dict(state)
    logged += [second.train_step() for _ in range(6)]

    assert logged == logged_straight  # every logged value, exactly
    for name in ("G", "D", "G_ema"):
        a, b = getattr(second, name).state_dict(), getattr(straight, name).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    p = second.ada[0].ada.p
    assert torch.equal(p, straight.ada[0].ada.p) and p.item() > 0
    pl_second, pl_straight = second.lazy_g[0], straight.lazy_g[0]
    assert torch.equal(pl_second.mean, pl_straight.mean) and pl_second.mean.item() > 0
    assert second.images_seen == straight.images_seen == 12 * 8
    assert_bitwise_equal(second.state_dict(), straight.state_dict())
    # What the run logged: the lazy metrics on their iterations, ADA's p and DigGAN's penalty.
    assert [m["step"] for m in logged if "r1_penalty" in m] == [1, 5, 9]
    assert [m["step"] for m in logged if "pl_length" in m] == [1, 3, 5, 7, 9, 11]
    assert all({"ada_p", "dig", "reg_loss", "d_loss", "g_loss"} <= set(m) for m in logged)
    assert len({m["ada_p"] for m in logged}) > 1  # p moved


# -- 2. ADA's p in the loop ---------------------------------------------------------------------


def real_logits_per_iteration(t: GANTrainer, steps: int) -> tuple[list[torch.Tensor], list[float]]:
    """Run ``steps`` iterations; per iteration the signs of D's logits on reals (the real half
    of each D step's [fakes; reals] call, and lazy R1's call on reals) and the logged ada_p.
    G-step calls (D frozen) are not on reals."""
    B = t.cfg.optim.batch_size
    current: list[torch.Tensor] = []

    def hook(module, args, out) -> None:
        if not next(module.parameters()).requires_grad:
            return  # the G step's call on fakes
        x = args[0]
        current.append((out[B:] if len(x) == 2 * B else out).detach().sign().double())

    handle = t.D.register_forward_hook(hook)
    signs, ps = [], []
    try:
        for _ in range(steps):
            ps.append(t.train_step()["ada_p"])
            signs.append(torch.cat(current))
            current.clear()
    finally:
        handle.remove()
    return signs, ps


def reference_p(signs: list[torch.Tensor], target: float, rate: float,
                interval: int = 1) -> list[float]:
    """training_loop.py's rule in float32 (p a float32 buffer, adjust a Python float): after
    iteration ``s`` with ``(s + 1) % interval == 0``, the mean of the signs reported since the
    last adjustment; p after each iteration."""
    p, out, pending = np.float32(0.0), [], []
    for s, sg in enumerate(signs):
        pending.append(sg)
        if (s + 1) % interval == 0:
            adjust = np.sign(torch.cat(pending).mean().item() - target) * rate
            p = max(np.float32(p + np.float32(adjust)), np.float32(0.0))
            pending = []
        out.append(float(p))
    return out


def test_ada_p_follows_the_reference_rule_without_lazy_r1() -> None:
    t = GANTrainer(sg2(train__steps=12, loss__r1_gamma=0.0, **FAST_ADA))
    signs, ps = real_logits_per_iteration(t, 12)
    assert all(len(s) == 8 for s in signs)  # one D step on 8 reals per iteration
    assert ps == reference_p(signs, 0.6, RATE)
    assert max(ps) > 0


def test_ada_p_counts_lazy_r1_signs_when_adjustments_avoid_r1_iterations() -> None:
    """ada_interval 2, r1_interval 4: p is adjusted after odd phase steps, R1 runs on multiples
    of 4, so the reference's order and the trainer's agree, and R1's signs must be counted."""
    t = GANTrainer(sg2(train__steps=12, augment__ada_interval=2, augment__ada_kimg=0.2))
    signs, ps = real_logits_per_iteration(t, 12)
    assert [len(s) for s in signs] == [16 if s % 4 == 0 else 8 for s in range(12)]
    assert ps == reference_p(signs, 0.6, 8 * 2 / (0.2 * 1000), interval=2)
    assert max(ps) > 0


def test_ada_p_counts_lazy_r1_signs_in_their_own_iteration_as_the_reference() -> None:
    t = GANTrainer(sg2(train__steps=12, **FAST_ADA))
    signs, ps = real_logits_per_iteration(t, 12)
    assert [len(s) for s in signs] == [16 if s % 4 == 0 else 8 for s in range(12)]
    assert ps == reference_p(signs, 0.6, RATE)


def test_ada_p_moves_by_the_rate_or_not_at_all_and_stays_non_negative() -> None:
    t = GANTrainer(sg2(train__steps=12, **FAST_ADA))
    ps = [0.0] + [t.train_step()["ada_p"] for _ in range(12)]
    steps = np.diff(np.asarray(ps, dtype=np.float64))
    f32 = float(np.float32(RATE))
    for d in steps:
        assert min(abs(d - v) for v in (-f32, 0.0, f32)) <= 1e-6, d
    assert min(ps) >= 0 and max(ps) > 0
    # p stays put only when clamped at 0 (a sign mean of exactly 0.6 cannot occur with 8 or 16
    # signs): every zero step is at p = 0.
    assert all(ps[i + 1] == 0.0 for i, d in enumerate(steps) if d == 0)


# -- 3. evaluation ------------------------------------------------------------------------------


def test_evaluation_is_deterministic_and_leaves_the_training_streams_alone() -> None:
    t = GANTrainer(sg2(loss__r1_interval=2))
    for _ in range(2):
        t.train_step()
    rng, train_stream = torch.get_rng_state(), t.gen.get_state()
    ema = {k: v.clone() for k, v in t.G_ema.state_dict().items()}
    first = t.evaluate()
    second = t.evaluate()
    assert first["fid"] == second["fid"] and np.isfinite(first["fid"])
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(t.gen.get_state(), train_stream)
    for k, v in t.G_ema.state_dict().items():
        assert torch.equal(v, ema[k]), k  # no w_avg update, no noise buffer touched
    # ... and training continues as if no evaluation had happened.
    twin = GANTrainer(t.cfg)
    for _ in range(2):
        twin.train_step()
    assert t.train_step() == twin.train_step()


# -- 4. DigGAN, DiffAugment, ADA on DiffAugment ------------------------------------------------


def test_diggan_and_diffaugment_train_with_stylegan2() -> None:
    t = GANTrainer(sg2(augment__ada="", augment__diffaugment="color,translation,cutout",
                       **DIGGAN))
    rows = [t.train_step() for _ in range(3)]
    for m in rows:
        assert {"dig", "reg_loss", "d_loss", "g_loss", "grad_norm_real"} <= set(m)
        assert all(np.isfinite(v) for v in m.values())
    assert "r1_penalty" in rows[0] and "pl_length" in rows[0] and "ada_p" not in rows[0]


def test_ada_runs_on_diffaugments_output() -> None:
    """T = ADA(DiffAugment(x)) with the run's stream, DiffAugment's draws first."""
    from tuneable_gan.augment import diff_augment

    t = GANTrainer(sg2(augment__diffaugment="translation,cutout", augment__ada_target=None,
                       augment__ada_p=0.5))
    x = t.images[:8].float()
    state = t.gen.get_state()
    got = t.augment(x)
    g = torch.Generator().manual_seed(0)
    g.set_state(state)
    want = t.ada[0].augment(diff_augment(x, t.policy, g), g)
    assert torch.equal(got, want)
    g.set_state(state)
    other_order = diff_augment(t.ada[0].augment(x, g), t.policy, g)
    assert not torch.equal(got, other_order)
    rows = [t.train_step() for _ in range(2)]
    assert all(m["ada_p"] == 0.5 and np.isfinite(m["d_loss"]) for m in rows)

