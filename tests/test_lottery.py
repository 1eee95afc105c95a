"""Lottery tickets inside the trainer (tuneable_gan.lottery): both stages in one loop, exact
sparsity, exact zeros through training, EMA and resume, rewinding, ticket reuse across trials
and processes, AdvAug in the trainer, and the sparsity sweep end to end."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, remaining_after, tiny_config

from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.cli import main
from tuneable_gan.config import from_dict
from tuneable_gan.phases import DensePhase
from tuneable_gan.sparsity import measured_sparsity, prunable, rounds_for
from tuneable_gan.tickets import TicketStore, ticket_key
from tuneable_gan.trainer import GANTrainer

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def sparse(level: float = 0.488, **kw):
    """A tiny lottery config: rounds of 2 G steps, 4 stage-II steps."""
    return tiny_config(**{"sparsity__level": level, "sparsity__round_steps": 2,
                          "train__steps": 4, **kw})


def run(trainer: GANTrainer) -> list[dict]:
    out = []
    while not trainer.finished:
        out.append(trainer.train_step())
    trainer.close()
    return out


def assert_bitwise_equal(a: dict, b: dict, prefix: str = "") -> None:
    """Every tensor and scalar leaf of two nested state dicts is identical."""
    assert a.keys() == b.keys(), prefix
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            assert_bitwise_equal(x, y, f"{prefix}/{k}")
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f"{prefix}/{k}"
        elif isinstance(x, (list, tuple)):
            assert_bitwise_equal(dict(enumerate(x)), dict(enumerate(y)), f"{prefix}/{k}")
        else:
            assert x == y, f"{prefix}/{k}"


def n_conv(G) -> int:
    return sum(p.numel() for _, p in prunable(G))


def pruned(G) -> dict[str, torch.Tensor]:
    return {k: p.detach() == 0 for k, p in prunable(G)}


# -- stage I: exact sparsity, rewinding --------------------------------------------------------

@pytest.mark.parametrize("level", [0.2, 0.36, 0.488, 0.738])
def test_measured_sparsity_equals_the_target_after_stage_one(tmp_path, level):
    k = rounds_for(level)
    t = GANTrainer(sparse(level, sparsity__round_steps=1), tickets=tmp_path)
    assert (t.phase.stage, t.phase.round, t.phase.total) == ("ticket", 1, k + 4)
    while t.phase.stage == "ticket":
        t.train_step()
    t.close()
    N = n_conv(t.G)
    n_zero = N - remaining_after(N, k)  # the exact count: 20% of the remaining, rounded
    assert sum(int(z.sum()) for z in pruned(t.G).values()) == n_zero
    assert sum(int(z.sum()) for z in pruned(t.G_ema).values()) == n_zero
    target = n_zero / N
    assert t.sparsity() == measured_sparsity(t.G_ema) == pytest.approx(target, abs=1e-15)
    assert abs(target - (1 - 0.8 ** k)) <= k / N and target >= level - 1e-3
    assert (t.phase.stage, t.phase.round, t.step, t.phase.computed) == ("train", k, 1, k)


def test_level_zero_runs_no_rounds_and_writes_no_tickets(tmp_path):
    t = GANTrainer(sparse(0.0), tickets=tmp_path / "tickets")
    assert isinstance(t.phase, DensePhase) and t.phase.stage == "train" and t.phase.total == 4
    rows = run(t)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and t.sparsity() == 0.0
    assert not (tmp_path / "tickets").exists()


def test_rewinding_restores_the_init_of_surviving_weights_and_dense_d(tmp_path):
    t = GANTrainer(sparse(0.2), tickets=tmp_path)
    init_G = {k: v.clone() for k, v in t.G.state_dict().items()}
    init_D = {k: v.clone() for k, v in t.D.state_dict().items()}
    gen0 = t.gen.get_state()
    t.train_step()
    t.train_step()  # round 1 done: trained, not yet pruned
    first = prunable(t.G)[0][0]
    assert not torch.equal(t.G.state_dict()[first], init_G[first])
    t.phase.before_step()  # what the next train_step does first: prune, store, rewind
    assert (t.phase.stage, t.phase.round, t.step, t.phase.step) == ("train", 1, 0, 0)
    keep = t.phase.masks.masks
    for k, v in t.G.state_dict().items():
        if k in keep:
            assert torch.equal(v[keep[k]], init_G[k][keep[k]]), k  # survivors: init values
            assert (v[~keep[k]] == 0).all(), k
        else:
            assert torch.equal(v, init_G[k]), k  # dense parts and buffers: init
    for k, v in t.D.state_dict().items():
        assert torch.equal(v, init_D[k]), k  # D rewinds too, dense
    for k, v in t.G_ema.state_dict().items():
        assert torch.equal(v, t.G.state_dict()[k]), k  # G_ema re-initialised from the rewound G
    assert not t.opt_g.state and not t.opt_d.state  # fresh optimizers
    assert torch.equal(t.gen.get_state(), gen0) and t.sampler.state_dict() == {"epoch": 0,
                                                                                 "pos": 0}
    t.close()


def test_stage_one_trains_without_advaug_and_stage_two_with_it(tmp_path):
    rows = run(GANTrainer(sparse(0.2, augment__advaug="gd"), tickets=tmp_path))
    assert [("d_loss_adv" in r) for r in rows] == [False, False, True, True, True, True]
    assert [r["step"] for r in rows] == [-1, 0, 1, 2, 3, 4]


# -- stage II: exact zeros through steps, EMA, checkpoints -------------------------------------

def test_pruned_weights_stay_exactly_zero_through_steps_ema_and_resume(tmp_path):
    cfg = sparse(0.488, optim__g_ema_start=0, train__steps=6)
    t = GANTrainer(cfg, tickets=tmp_path / "t")
    while t.phase.stage == "ticket" or t.step < 2:
        t.train_step()
    zeros = pruned(t.G)
    n_zero = sum(int(z.sum()) for z in zeros.values())
    assert n_zero == n_conv(t.G) - remaining_after(n_conv(t.G), 3)
    before = {k: p.detach().clone() for k, p in prunable(t.G)}

    def check(tr):
        for k, p in prunable(tr.G):
            assert (p.detach()[zeros[k]] == 0).all(), k
            assert (tr.G_ema.get_parameter(k).detach()[zeros[k]] == 0).all(), k
            for v in tr.opt_g.state[p].values():  # no momentum to regrow a pruned weight
                if torch.is_tensor(v) and v.shape == p.shape:
                    assert (v[zeros[k]] == 0).all(), k

    check(t)
    write_checkpoint(tmp_path / "ck", t.state_dict(), t.cfg)
    state, cfg2 = read_checkpoint(tmp_path / "ck")
    r = GANTrainer(cfg2, tickets=tmp_path / "t")
    r.load_state_dict(state)
    assert (r.phase.stage, r.phase.round, r.step) == ("train", 3, 2)
    assert all(torch.equal(pruned(r.G)[k], zeros[k]) for k in zeros)
    run(r)
    check(r)
    assert r.sparsity() == measured_sparsity(r.G_ema) == n_zero / n_conv(r.G)
    moved = [not torch.equal(p.detach()[~zeros[k]], before[k][~zeros[k]]) for k, p in
             prunable(r.G)]
    assert all(moved)  # the survivors do train
    # The checkpoint's G_ema alone (what the report's sample grids load) carries the zeros.
    assert measured_sparsity(r.G_ema) > 0.48


@pytest.mark.parametrize("split", [3, 5, 6, 8])
def test_resume_is_bitwise_inside_stage_one_and_stage_two(tmp_path, split):
    """10 G iterations (3 rounds of 2, then 4 ticket steps) straight == ``split`` + save/load +
    the rest: 3 and 5 fall inside rounds 2 and 3, 6 at the end of stage I before its prune,
    8 inside stage II."""
    cfg = sparse(0.488, data__flip=True, regularizer__pairing="magnitude")
    straight = GANTrainer(cfg, tickets=tmp_path / "a")
    logged_straight = run(straight)
    assert len(logged_straight) == 10

    first = GANTrainer(cfg, tickets=tmp_path / "b")
    logged = [first.train_step() for _ in range(split)]
    write_checkpoint(tmp_path / "ck", first.state_dict(), cfg)
    first.close()
    del first
    state, cfg2 = read_checkpoint(tmp_path / "ck")
    assert state["phase"]["stage"] == ("ticket" if split <= 6 else "train")
    second = GANTrainer(cfg2, tickets=tmp_path / "b")
    second.load_state_dict(state)
    logged += run(second)
    assert logged == logged_straight
    assert_bitwise_equal(second.state_dict(), straight.state_dict())
    assert second.phase.computed == 3 and second.phase.reused == 0


# -- tickets shared across trials ---------------------------------------------------------------

def test_a_sweep_over_levels_computes_each_shared_round_once(tmp_path):
    """Levels 0.2, 0.36, 0.488 (k = 1, 2, 3) share a key: 3 rounds computed, not 1+2+3 = 6, and
    each trial trains exactly the ticket it would have found alone."""
    store = tmp_path / "shared"
    levels = [0.2, 0.36, 0.488]
    assert len({ticket_key(GANTrainer(sparse(x), tickets=store).cfg) for x in levels}) == 1
    trials = {}
    for x in levels:
        t = GANTrainer(sparse(x), tickets=store)
        rows = run(t)
        trials[x] = (t, rows)
    computed = [trials[x][0].phase.computed for x in levels]
    reused = [trials[x][0].phase.reused for x in levels]
    assert computed == [1, 1, 1] and sum(computed) == 3  # without reuse: 1 + 2 + 3 = 6
    assert reused == [0, 1, 2]
    assert TicketStore(store).rounds(ticket_key(trials[0.2][0].cfg)) == [0, 1, 2, 3]
    # Stage-I rows only for the rounds a trial computed itself (steps count up to 0).
    assert [r["step"] for r in trials[0.488][1]] == [-1, 0, 1, 2, 3, 4]
    # Reuse is honest: the same ticket and the same stage II as a trial that found it alone.
    alone = GANTrainer(sparse(0.488), tickets=tmp_path / "alone")
    alone_rows = run(alone)
    assert alone.phase.computed == 3
    assert alone_rows[-4:] == trials[0.488][1][-4:]
    assert_bitwise_equal({"G": alone.G.state_dict(), "D": alone.D.state_dict()},
                         {"G": trials[0.488][0].G.state_dict(),
                          "D": trials[0.488][0].D.state_dict()})


def test_a_different_key_does_not_reuse(tmp_path):
    run(GANTrainer(sparse(0.2), tickets=tmp_path))
    t = GANTrainer(sparse(0.2, regularizer__name="none"), tickets=tmp_path)
    run(t)
    assert (t.phase.computed, t.phase.reused) == (1, 0)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def _trial_process(root: str, level: float, out: str) -> None:
    torch.set_num_threads(1)
    t = GANTrainer(sparse(level, sparsity__round_steps=4),
                   tickets=TicketStore(root, timeout_s=120.0, poll_s=0.02))
    run(t)
    torch.save({"computed": t.phase.computed, "reused": t.phase.reused,
                "masks": t.phase.masks.state_dict(), "G": t.G.state_dict()}, out)


def test_concurrent_trials_on_one_key_compute_each_round_once(tmp_path):
    ctx = mp.get_context("fork")
    outs = [str(tmp_path / f"out{i}.pt") for i in range(2)]
    procs = [ctx.Process(target=_trial_process, args=(str(tmp_path / "store"), level, o))
             for level, o in zip([0.488, 0.488], outs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    res = [torch.load(o, weights_only=True) for o in outs]
    assert sum(r["computed"] for r in res) == 3 and sum(r["reused"] for r in res) == 3
    for k in res[0]["masks"]:
        assert torch.equal(res[0]["masks"][k], res[1]["masks"][k])
    for k in res[0]["G"]:  # one ticket, one stage II
        assert torch.equal(res[0]["G"][k], res[1]["G"][k]), k


# -- AdvAug in the trainer ---------------------------------------------------------------------

def test_advaug_d_loss_is_half_clean_half_perturbed_on_the_first_step():
    kw = {"optim__d_steps": 1, "regularizer__name": "none", "augment__diffaugment": "",
          "augment__advaug": "d", "augment__advaug_step": 0.05}
    m = GANTrainer(tiny_config(**kw)).train_step()
    # By hand, from a second trainer's identical init and random streams.
    t = GANTrainer(tiny_config(**kw))
    B = 8
    x_r = t.images[t.sampler.next()]
    z = t.G.sample_z(B, t.gen, t.device)
    with torch.no_grad():
        x_f = t.G(z)
    h = t.D.trunk(torch.cat([x_f, x_r]))
    out = t.D.head(h)

    def hinge(o):
        return F.relu(1 - o[B:]).mean() + F.relu(1 + o[:B]).mean()

    hd = h.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(t.D.head(hd).mean(), hd)  # code_increase_logit: ascend D
    adv = hinge(t.D.head(h + 0.05 * grad.sign()))
    assert m["d_loss_adv"] == pytest.approx(adv.item(), rel=1e-6)
    assert m["d_loss"] == pytest.approx(0.5 * hinge(out).item() + 0.5 * adv.item(), rel=1e-6)
    off = GANTrainer(tiny_config(**kw | {"augment__advaug": "g"})).train_step()
    assert "d_loss_adv" not in off and off["d_loss"] == pytest.approx(hinge(out).item(),
                                                                      rel=1e-6)


def test_advaug_g_changes_only_the_g_loss():
    kw = {"optim__d_steps": 1, "augment__advaug_mode": "worst_case"}
    a = GANTrainer(tiny_config(**kw)).train_step()
    b = GANTrainer(tiny_config(**kw, augment__advaug="g")).train_step()
    assert a["d_loss"] == b["d_loss"] and a["dig"] == b["dig"]
    assert a["g_loss"] != b["g_loss"]


# -- CLI and sweeps -----------------------------------------------------------------------------

def test_cli_train_runs_both_stages_and_resumes_bitwise(tmp_path, capsys, monkeypatch):
    cfg = from_dict(TINY | {"sparsity.level": 0.2, "sparsity.round_steps": 4,
                            "train.checkpoint_every": 2})
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    straight, split = tmp_path / "straight", tmp_path / "split"
    monkeypatch.setenv("TUNEABLE_GAN_TICKETS", str(tmp_path / "tickets_a"))
    assert main(["train", str(p), "--out", str(straight), "--quiet"]) == 0
    monkeypatch.setenv("TUNEABLE_GAN_TICKETS", str(tmp_path / "tickets_b"))
    assert main(["train", str(p), "--out", str(split), "--quiet", "--set",
                 "train.steps=3"]) == 0
    assert main(["train", str(p), "--out", str(split), "--quiet", "--resume"]) == 0
    capsys.readouterr()

    def rows(d):
        return [{k: v for k, v in json.loads(ln).items() if k != "steps_per_s"}
                for ln in (d / "metrics.jsonl").read_text().splitlines()]

    got = rows(straight)
    assert rows(split) == got
    assert [r["step"] for r in got] == [-3, -2, -1, 0, 1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in got] == ["ticket"] * 4 + ["train"] * 6
    assert {r["round"] for r in got} == {1} and got[-1]["rounds_computed"] == 1
    assert "ticket_fid" in got[2] and "fid" not in got[2] and "fid" in got[6]  # eval_every 3
    assert "ticket_fid" in got[3] and "ticket_fid" not in got[1]  # and at the round end
    assert got[0]["sparsity"] == 0.0 and 0.19 < got[-1]["sparsity"] < 0.21
    # Checkpoints are named by G steps on the whole schedule (4 ticket steps + 6).
    assert (straight / "checkpoints" / "LATEST").read_text().strip() == "step_0000010"


def test_sparsity_spaces_load_refuse_asha_and_shrink_rounds_under_smoke(monkeypatch):
    from tuneable_gan.errors import ConfigError
    from tuneable_gan.tune.space import load_space
    from tuneable_gan.tune.trainable import ticket_root

    spec = load_space(SPACES / "sparsity.yaml")
    assert spec.expected_trials() == 32 and spec.tune.scheduler.name == "fifo"
    assert [rounds_for(x) for x in spec.axes["sparsity.level"]["grid"]] == [0, 1, 3, 6]
    cifar = load_space(SPACES / "sparsity_cifar10.yaml")
    assert cifar.expected_trials() == 48 and cifar.base.model.arch == "biggan"
    assert [rounds_for(x) for x in cifar.axes["sparsity.level"]["grid"]] == [0, 3, 6, 9]
    smoke = spec.smoke()
    assert smoke.base.sparsity.round_steps == smoke.base.train.steps == 40
    assert smoke.axes["sparsity.level"]["grid"] == [0.0, 0.2] and smoke.expected_trials() == 4
    with pytest.raises(ConfigError) as e:
        spec.with_overrides(["tune.scheduler={asha: {grace_period: 1}}"])
    assert len(e.value.problems) == 1 and "use scheduler: fifo" in e.value.problems[0]
    dense = spec.with_overrides(["space.sparsity.level=null",
                                 "tune.scheduler={asha: {grace_period: 1}}"])
    assert dense.tune.scheduler.name == "asha"  # no ticket rounds: ASHA stays allowed
    root, warning = ticket_root(spec)
    assert root == Path(spec.tune.storage) / "sparsity" / "tickets" and not warning
    monkeypatch.setenv("TUNEABLE_GAN_TICKETS", "/shared/tickets")
    root, warning = ticket_root(spec.with_overrides(["tune.storage=s3://bucket/exp"]))
    assert root == Path("/shared/tickets") and "TUNEABLE_GAN_TICKETS" in warning




@pytest.mark.slow
def test_tune_sweep_over_three_levels_shares_the_rounds(ray_2cpu, tmp_path):
    import yaml

    from tuneable_gan.tune.launch import run_sweep
    from tuneable_gan.tune.space import load_space

    base = TINY | {"sparsity.round_steps": 3, "train.steps": 4, "train.eval_every": 2,
                   "train.checkpoint_every": 2, "eval.num_samples": 64, "eval.batch_size": 64}
    doc = {"name": "lt", "base": base, "space": {"sparsity.level": {"grid": [0.2, 0.36, 0.488]}},
           "tune": {"search": "grid", "scheduler": "fifo", "resources": {"cpu": 1},
                    "storage": str(tmp_path / "results")}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    results = run_sweep(load_space(tmp_path / "s.yaml"))
    assert results.num_errors == 0 and len(results) == 3
    computed = sum(r.metrics["rounds_computed"] for r in results)
    assert computed == 3  # each trial alone: 1 + 2 + 3 = 6 rounds
    assert sum(r.metrics["rounds_reused"] for r in results) == 3
    tickets = tmp_path / "results" / "lt" / "tickets"
    (key,) = [d.name for d in tickets.iterdir()]
    assert TicketStore(tickets).rounds(key) == [0, 1, 2, 3]
    for r in results:
        df = r.metrics_dataframe
        last = r.metrics
        assert last["stage"] == "train" and last["step"] == 4 and last["diverged"] is False
        assert last["round"] == rounds_for(r.config["sparsity.level"])
        assert math.isfinite(last["fid"])
        assert last["sparsity"] == pytest.approx(1 - 0.8 ** last["round"], abs=2e-3)
        ticket = df[df["stage"] == "ticket"]  # none where a trial reused every round
        assert len(ticket) == 2 * last["rounds_computed"]  # eval_every 2, rounds of 3 steps
        if len(ticket):
            assert (ticket["step"] <= 0).all() and ticket["fid"].isna().all()
            assert ticket["ticket_fid"].notna().all()


@pytest.mark.slow
def test_sparsity_space_smoke_sweep_and_report(ray_2cpu, tmp_path, capsys):
    code = main(["sweep", str(SPACES / "sparsity.yaml"), "--smoke",
                 "--storage", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0, out
    exp = tmp_path / "results" / "sparsity-smoke"
    assert "trials: 4, errored: 0" in out
    assert main(["report", str(exp)]) == 0
    report = exp / "report"
    assert (report / "plots" / "fid_vs_sparsity.png").stat().st_size > 0
    text = (report / "report.md").read_text()
    assert "![fid against sparsity.level (finished trials)](plots/fid_vs_sparsity.png)" in text
    # Smoke cells: levels 0, 0.2 (k = 0, 1) x regularizer none, diggan: two one-round tickets.
    assert "## Lottery tickets" in text and (report / "tickets.md").is_file()
    assert ("Ticket rounds: 2 computed and 0 reused from the shared ticket store (the sweep "
            "holds 2 tickets); the trials alone would have computed 2, so reuse saved 0 rounds "
            "(0%).") in text
    # Stage-I rows are in the data (stage ticket, steps up to 0) but not in the FID columns.
    df = pd.read_parquet(report / "results.parquet")
    ticket = df[df["stage"] == "ticket"]
    assert len(ticket) > 0 and (ticket["step"] <= 0).all() and ticket["fid"].isna().all()
    assert ticket["ticket_fid"].notna().all()
    last = df[df["last_report"]]
    assert set(last["status"]) == {"finished"} and (last["step"] == 40).all()
    assert sorted(last["round"]) == [0, 0, 1, 1] and (last["rounds_computed"].fillna(0) <= 1).all()
