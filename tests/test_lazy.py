"""StyleGAN2's loss phases at the unit level (tuneable_gan.lazy, .ema, .optim, config checks).

Every expected value is written here from the formulas of NVlabs/stylegan2-ada-pytorch
(``training/loss.py``: R1 and path length; ``training/training_loop.py``: the lazy phases'
``batch_idx % interval``, ``mb_ratio`` and the EMA half-life with ramp-up), on hand-made nets whose
gradients have a closed form, never by calling the code under test for the expected value:

1. lazy R1 = interval * mean_i (gamma/2) ||grad_x D(T(x_i))||^2 w.r.t. the UN-augmented reals, its
   gradient w.r.t. D's weights (the penalty keeps its graph), ``r1_penalty``, ``observe_real``;
2. the schedule: phase steps 0, interval, 2 interval, ...; in a GANTrainer, the metrics and the
   extra optimizer steps appear exactly on those iterations;
3. path length on a G with a known Jacobian: lengths, running mean, penalty and its gradient,
   with the noise replayed from an identically seeded generator; also on the real stylegan2 G
   (draw order: sample_z, style mixing, synthesis noise, then the path-length noise);
4. Adam's lazy rescaling (lr * r, betas ** r, r = interval / (interval + 1)) per net;
5. the EMA decay: half-life in kimg, ramp-up, the first update a copy;
6. config errors naming the keys involved.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from tuneable_gan.config import from_dict
from tuneable_gan.ema import ema_decay
from tuneable_gan.errors import ConfigError
from tuneable_gan.lazy import LazyBatch, LazyR1, PathLength, lazy_ratio, lazy_updates
from tuneable_gan.models import build_models
from tuneable_gan.models.base import DataSpec
from tuneable_gan.terms import Schedule
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.training_stats import StepStats

# The tiny stylegan2 run (~0.1 s per G iteration on one CPU thread).
SG2 = {
    "data.name": "digits", "data.fraction": 0.1, "data.resolution": 32,
    "model.arch": "stylegan2", "model.z_dim": 16, "model.w_dim": 16, "model.fmaps": 0.0078125,
    "model.channel_max": 16, "model.mapping_layers": 2, "model.mbstd_group": 4,
    "loss.name": "ns", "loss.r1_gamma": 10.0, "loss.r1_interval": 4, "loss.pl_weight": 2.0,
    "loss.pl_interval": 2, "optim.batch_size": 8, "optim.g_lr": 0.002, "optim.d_lr": 0.002,
    "optim.betas": [0.0, 0.99], "optim.g_ema_kimg": 0.01, "optim.g_ema_rampup": 0.05,
    "augment.ada": "bgc", "train.steps": 8, "train.eval_every": 8, "train.log_every": 1,
    "train.device": "cpu", "eval.num_samples": 64, "eval.batch_size": 64,
}
EXACT = {"rtol": 0.0, "atol": 0.0}


def sg2(**dotted: object):
    """The tiny stylegan2 config; keyword keys use '__' for '.'."""
    return from_dict(SG2 | {k.replace("__", "."): v for k, v in dotted.items()})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. lazy R1 on a D with a closed-form input gradient ------------------------------------------


class QuadD(nn.Module):
    """D(x) = sum_j w_j x_j^2 per sample: grad_x D = 2 w x."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (self.w * x.square()).flatten(1).sum(1)


def r1_batch(D: nn.Module, reals: torch.Tensor, augment, seen: list) -> LazyBatch:
    return LazyBatch(G=None, D=D, augment=augment, generator=gen(), reals=reals,
                     real_labels=None, fake_labels=lambda n: None, batch_size=len(reals), step=0,
                     observe_real=seen.append)


@pytest.mark.parametrize("affine", [False, True], ids=["identity", "x*2+1"])
def test_lazy_r1_is_interval_times_mean_half_gamma_squared_input_gradient(affine: bool) -> None:
    gamma, interval = 3.0, 4
    w = torch.rand(2, 3, 3, generator=gen(1)) + 0.5
    x = torch.randn(5, 2, 3, 3, generator=gen(2))
    D = QuadD(w)
    # D(T(x)) = sum w (a x + b)^2: d/dx = 2 a w (a x + b), d/dw = (a x + b)^2.
    a, b = (2.0, 1.0) if affine else (1.0, 0.0)
    u = a * x + b
    grad_x = 2 * a * w * u                                          # per sample, w.r.t. raw x
    penalty = grad_x.square().flatten(1).sum(1)                     # ||grad||^2 per sample
    want_loss = interval * (gamma / 2 * penalty).mean()
    # d loss / d w_j = interval * gamma/2 * mean_i 2 (2 a u_ij)^2 w_j
    want_dw = interval * gamma / 2 * (2 * (2 * a * u).square() * w).mean(0)

    seen: list[torch.Tensor] = []
    stats = StepStats()
    loss = LazyR1(gamma, interval).loss(
        r1_batch(D, x, (lambda t: t * 2 + 1) if affine else (lambda t: t), seen), stats)
    assert_close(loss, want_loss)
    loss.backward()                 # the penalty keeps its graph: create_graph=True
    assert_close(D.w.grad, want_dw)
    got = stats.collect()
    assert set(got) == {"r1_penalty"}
    assert_close(got["r1_penalty"], penalty.mean().item())
    # observe_real got D's logits on the (augmented) reals, once.
    assert len(seen) == 1
    assert_close(seen[0], (w * u.square()).flatten(1).sum(1))


def test_lazy_r1_does_not_touch_the_reals_it_is_given() -> None:
    x = torch.randn(4, 1, 2, 2, generator=gen(3))
    before = x.clone()
    LazyR1(1.0, 2).loss(r1_batch(QuadD(torch.ones(1, 2, 2)), x, lambda t: t, []), StepStats())
    assert torch.equal(x, before) and not x.requires_grad and x.grad is None


# -- 2. the schedule ----------------------------------------------------------------------------


def test_schedule_fires_at_multiples_of_the_interval_only() -> None:
    r1 = LazyR1(10.0, 16)
    fired = [s for s in range(50) if r1.fires(s, 0, "train")]
    assert fired == [0, 16, 32, 48]
    assert [s for s in range(50) if Schedule(interval=16).fires(s, 0, "train")] == fired
    assert not any(r1.fires(s, 0, "train") for s in range(1, 16))


def _count_steps(opt: torch.optim.Optimizer) -> list[int]:
    """Wrap ``opt.step`` (on the instance); the list holds the number of calls so far."""
    calls = [0]
    step = opt.step

    def counted(*a, **k):
        calls[0] += 1
        return step(*a, **k)

    opt.step = counted
    return calls


def test_trainer_runs_lazy_updates_exactly_on_their_iterations() -> None:
    t = GANTrainer(sg2(train__steps=9, augment__ada=""))
    d_calls, g_calls = _count_steps(t.opt_d), _count_steps(t.opt_g)
    rows, d_steps, g_steps = [], [], []
    for _ in range(9):
        rows.append(t.train_step())
        d_steps.append(d_calls[0])
        g_steps.append(g_calls[0])
    assert [r["step"] for r in rows] == list(range(1, 10))
    # phase step before the iteration = reported step - 1: R1 at 0, 4, 8; PL at 0, 2, 4, 6, 8.
    assert [r["step"] for r in rows if "r1_penalty" in r] == [1, 5, 9]
    assert [r["step"] for r in rows if "pl_length" in r] == [1, 3, 5, 7, 9]
    assert [r["step"] for r in rows if "pl_mean" in r] == [1, 3, 5, 7, 9]
    # One optimizer step per main update plus one per lazy update, nowhere else.
    want_d, want_g, nd, ng = [], [], 0, 0
    for s in range(9):
        nd += 1 + (s % 4 == 0)
        ng += 1 + (s % 2 == 0)
        want_d.append(nd)
        want_g.append(ng)
    assert d_steps == want_d and g_steps == want_g


def test_every_parameter_takes_the_lazy_adam_step_as_in_the_reference() -> None:
    t = GANTrainer(sg2(augment__ada=""))
    t.train_step()  # phase step 0: main + lazy update for both nets
    for opt, net in ((t.opt_d, t.D), (t.opt_g, t.G)):
        names = {p: n for n, p in net.named_parameters()}
        behind = [names[p] for g in opt.param_groups for p in g["params"]
                  if int(opt.state[p]["step"]) != 2]
        assert not behind, behind


# -- 3. path length on a G with a known Jacobian ---------------------------------------------------


class TanhG(nn.Module):
    """z -> ws = (z M) as (n, L, W) -> img = tanh(ws_flat A) as (n, C, H, Wd). No draws besides z.
    d(img . y)/d ws_flat = (y * (1 - img^2))_flat A^T."""

    L, W, C, H, Wd, Z = 3, 4, 2, 3, 5, 6

    def __init__(self) -> None:
        super().__init__()
        g = gen(7)
        self.M = nn.Parameter(torch.randn(self.Z, self.L * self.W, generator=g) * 0.5)
        self.A = nn.Parameter(torch.randn(self.L * self.W, self.C * self.H * self.Wd,
                                          generator=g) * 0.3)

    def sample_z(self, n: int, generator: torch.Generator, device) -> torch.Tensor:
        return torch.randn(n, self.Z, generator=generator, device=device)

    def train_stem(self, z, y, generator) -> torch.Tensor:
        return (z @ self.M).reshape(-1, self.L, self.W)

    def rest(self, ws, y=None) -> torch.Tensor:
        return torch.tanh(ws.reshape(len(ws), -1) @ self.A).reshape(-1, self.C, self.H, self.Wd)


def pl_oracle(G: TanhG, seed: int, n: int, m0: torch.Tensor, decay: float, weight: float,
              interval: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lengths, new mean, penalty) from the formula, the draws replayed: z, then the noise."""
    g = gen(seed)
    z = torch.randn(n, G.Z, generator=g)
    noise = torch.randn(n, G.C, G.H, G.Wd, generator=g) / math.sqrt(G.H * G.Wd)
    ws = (z @ G.M).reshape(n, G.L, G.W)
    img = torch.tanh(ws.reshape(n, -1) @ G.A)                      # (n, C H Wd)
    jt_y = ((noise.reshape(n, -1) * (1 - img.square())) @ G.A.T).reshape(n, G.L, G.W)
    lengths = torch.stack([
        torch.sqrt(sum(jt_y[i, layer].square().sum() for layer in range(G.L)) / G.L)
        for i in range(n)])
    m = m0 + decay * (lengths.mean() - m0)
    penalty = interval * weight * (lengths - m).square().mean()
    return lengths, m, penalty


def pl_batch(G: nn.Module, seed: int, batch_size: int = 8) -> LazyBatch:
    return LazyBatch(G=G, D=None, augment=lambda t: t, generator=gen(seed), reals=torch.zeros(0),
                     real_labels=None, fake_labels=lambda n: None, batch_size=batch_size,
                     step=0)


def test_path_length_matches_the_formula_with_replayed_noise() -> None:
    weight, interval, decay, shrink = 2.0, 4, 0.3, 2
    G = TanhG()
    pl = PathLength(weight, interval, decay, shrink)
    m = torch.zeros(())
    for seed in (11, 12):  # two updates: the running mean moves from 0, then from m1
        stats = StepStats()
        loss = pl.loss(pl_batch(G, seed), stats)
        lengths, m_new, penalty = pl_oracle(G, seed, 8 // shrink, m, decay, weight, interval)
        assert_close(loss, penalty)
        assert_close(pl.mean, m_new.detach())
        got = stats.collect()
        assert_close(got["pl_length"], lengths.mean().item())
        assert_close(got["pl_mean"], m_new.item())
        # The gradient w.r.t. G's weights, the new mean inside the graph (the reference's lerp).
        want = torch.autograd.grad(penalty, [G.M, G.A])
        assert_close(torch.autograd.grad(loss, [G.M, G.A]), want)
        m = m_new.detach()
    assert not pl.mean.requires_grad


def test_path_length_batch_is_shrunk_and_at_least_one() -> None:
    G = TanhG()
    for batch_size, shrink, n in [(8, 2, 4), (8, 8, 1), (2, 4, 1)]:
        pl = PathLength(1.0, 1, 0.5, shrink)
        loss = pl.loss(pl_batch(G, 5, batch_size), StepStats())
        assert_close(loss, pl_oracle(G, 5, n, torch.zeros(()), 0.5, 1.0, 1)[2])


def test_path_length_on_stylegan2_replays_the_reference_draw_order() -> None:
    """On the real G: z, the style-mixing draws, the synthesis noise (G's noise_generator is the
    run's stream, as in the trainer), then the path-length noise, all from the batch's stream;
    the Jacobian-vector products per sample, one at a time."""
    torch.manual_seed(0)
    cfg = sg2().model
    G, _ = build_models(cfg, DataSpec((3, 32, 32), 0, 0))
    n = 4
    pl = PathLength(2.0, 2, 0.01, 2)
    batch = pl_batch(G, 21)
    G.noise_generator = batch.generator
    stats = StepStats()
    loss = pl.loss(batch, stats)

    g = gen(21)
    G.noise_generator = g
    z = G.sample_z(n, g, "cpu")
    ws = G.train_stem(z, None, g)
    img = G.rest(ws)
    noise = torch.randn(img.shape, generator=g) / math.sqrt(32 * 32)
    lengths = []
    for i in range(n):
        (gi,) = torch.autograd.grad((img[i] * noise[i]).sum(), ws, retain_graph=True)
        others = torch.cat([gi[:i], gi[i + 1:]])
        assert not others.any()  # sample i's image depends on sample i's ws only
        lengths.append(gi[i].square().sum(1).mean().sqrt())
    a = torch.stack(lengths)
    m = 0.01 * a.mean()
    assert_close(stats.collect()["pl_length"], a.mean().item())
    assert_close(loss, (2 * 2.0 * (a - m).square().mean()))
    assert_close(pl.mean, m.detach())


def test_path_length_mean_round_trips_through_a_checkpoint() -> None:
    pl = PathLength(2.0, 4, 0.01, 2)
    pl.mean = torch.tensor(0.3721)
    buf = io.BytesIO()
    torch.save(pl.state_dict(), buf)
    buf.seek(0)
    other = PathLength(2.0, 4, 0.01, 2)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(other.mean, pl.mean)
    state = pl.state_dict()
    state["mean"].add_(1.0)  # a copy: the checkpoint does not alias the live mean
    assert pl.mean.item() == pytest.approx(0.3721)


# -- 4. Adam's lazy rescaling ---------------------------------------------------------------------


def test_lazy_ratio_is_interval_over_interval_plus_one_per_net() -> None:
    assert lazy_ratio([]) == 1.0
    assert lazy_ratio([LazyR1(10.0, 16)]) == 16 / 17
    d, g = lazy_updates(sg2(loss__r1_interval=16, loss__pl_interval=4).loss)
    assert [type(u) for u in d] == [LazyR1] and [type(u) for u in g] == [PathLength]
    # Each net its own list: D's ratio is R1's alone, G's is path length's alone.
    assert lazy_ratio(d) == 16 / 17 and lazy_ratio(g) == 4 / 5
    assert lazy_updates(sg2(loss__r1_gamma=0.0, loss__pl_weight=0.0).loss) == ([], [])


def _hyper(opt: torch.optim.Optimizer) -> list[tuple[float, tuple[float, ...]]]:
    return [(grp["lr"], tuple(grp["betas"])) for grp in opt.param_groups]


@pytest.mark.parametrize("pl_weight", [0.0, 2.0])
def test_trainer_rescales_adam_of_the_nets_with_lazy_updates(pl_weight: float) -> None:
    t = GANTrainer(sg2(loss__r1_interval=16, loss__pl_weight=pl_weight, loss__pl_interval=4,
                       augment__ada="", optim__g_lr=0.003, optim__betas=[0.1, 0.99]))
    t.train_step()
    r = 16 / 17
    want_d = (0.002 * r, (0.1 ** r, 0.99 ** r))
    g = 4 / 5
    want_g = (0.003 * g, (0.1 ** g, 0.99 ** g)) if pl_weight else (0.003, (0.1, 0.99))
    for lr, betas in _hyper(t.opt_d):
        assert_close((lr, betas), want_d, **EXACT)
    for lr, betas in _hyper(t.opt_g):
        assert_close((lr, betas), want_g, **EXACT)
    # A loaded optimizer state carries the saver's values: they are reapplied from the config.
    state = t.state_dict()
    for grp in state["opt_d"]["param_groups"]:
        grp["lr"], grp["betas"] = 1.0, (0.5, 0.5)
    fresh = GANTrainer(t.cfg)
    fresh.load_state_dict(state)
    assert all(h == want_d for h in _hyper(fresh.opt_d))


# -- 5. the EMA decay ------------------------------------------------------------------------------


def test_ema_decay_by_half_life_in_kimg() -> None:
    o = sg2(optim__g_ema_kimg=10.0, optim__g_ema_rampup=None).optim
    for nimg in (0, 8, 10 ** 6):
        assert_close(ema_decay(o, 0, nimg), 0.5 ** (8 / 10_000), **EXACT)
    o = sg2(optim__g_ema_kimg=10.0, optim__g_ema_rampup=0.05).optim
    assert ema_decay(o, 0, 0) == 0.0                      # half-life 1e-8 images: a copy
    assert_close(ema_decay(o, 5, 1000), 0.5 ** (8 / 50), **EXACT)   # min(10000, 1000 * 0.05)
    assert_close(ema_decay(o, 0, 400_000), 0.5 ** (8 / 10_000), **EXACT)  # ramp-up over
    o = sg2(optim__g_ema_kimg=None, optim__g_ema_rampup=None, optim__g_ema=0.99,
            optim__g_ema_start=5).optim
    assert [ema_decay(o, s, 10 ** 6) for s in (0, 4, 5, 100)] == [0.0, 0.0, 0.99, 0.99]


def test_trainer_ema_first_update_copies_g_with_rampup() -> None:
    t = GANTrainer(sg2(augment__ada=""))
    t.train_step()
    ema = t.G_ema.state_dict()
    for k, v in t.G.state_dict().items():
        assert torch.equal(v, ema[k]), k
    # Second update: nimg = 8 shown before it, half-life min(10, 8 * 0.05) = 0.4 images.
    before = copy.deepcopy(ema)
    t.train_step()
    beta = 0.5 ** (8 / 0.4)
    for k, v in t.G.state_dict().items():
        if v.is_floating_point():
            assert_close(t.G_ema.state_dict()[k], v + beta * (before[k] - v))


def test_trainer_ema_without_rampup_averages_from_the_first_update() -> None:
    t = GANTrainer(sg2(augment__ada="", optim__g_ema_rampup=None))  # half-life 10 images
    before = copy.deepcopy(t.G_ema.state_dict())
    t.train_step()
    beta = 0.5 ** (8 / 10)
    for k, v in t.G.state_dict().items():
        if v.is_floating_point():
            assert_close(t.G_ema.state_dict()[k], v + beta * (before[k] - v))


# -- 6. config errors ------------------------------------------------------------------------------


def _problems(**dotted: object) -> list[str]:
    with pytest.raises(ConfigError) as e:
        sg2(**dotted)
    return e.value.problems


def test_path_length_needs_stylegan2() -> None:
    (msg,) = _problems(model__arch="dcgan", data__resolution=8, loss__r1_gamma=0.0,
                       augment__ada="")
    assert "loss.pl_weight" in msg and "model.arch=stylegan2" in msg and "dcgan" in msg
    # R1 alone is no problem on another arch.
    sg2(model__arch="dcgan", data__resolution=8, loss__pl_weight=0.0, augment__ada="")


def test_batch_sizes_must_be_multiples_of_the_mbstd_group() -> None:
    (msg,) = _problems(optim__batch_size=6)
    assert "optim.batch_size" in msg and "model.mbstd_group" in msg
    (msg,) = _problems(optim__g_batch_size=6)
    assert "optim.g_batch_size" in msg and "model.mbstd_group" in msg
    sg2(optim__batch_size=6, model__mbstd_group=2)
    sg2(optim__batch_size=6, model__mbstd_channels=0)   # no minibatch-stddev layer


def test_unknown_ada_pipe_lists_the_valid_ones() -> None:
    (msg,) = _problems(augment__ada="nope")
    assert "augment.ada" in msg and "'nope'" in msg
    for pipe in ("bgc", "bg", "blit", "geom", "color"):
        assert pipe in msg


def test_ada_and_diffaugment_combine() -> None:
    """They were alternatives when this suite was specified; the config now composes them
    (D sees ADA(DiffAugment(x)); tests/test_stylegan2_training.py checks the order)."""
    cfg = sg2(augment__diffaugment="translation")
    assert cfg.augment.ada == "bgc" and cfg.augment.diffaugment == "translation"
