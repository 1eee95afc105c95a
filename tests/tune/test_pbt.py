"""PBT / PB2: the settings and their one-line errors, what a clone does after an exploit (the
donor's state under its own new values, its own random streams, its lineage), and a PBT sweep
on 2 CPUs that exploits, records lineage and keeps every report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest
import yaml
from conftest import TINY
from ray import tune

from tuneable_gan.errors import ConfigError
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.tune import trainable as tr
from tuneable_gan.tune.launch import _scheduler, run_sweep
from tuneable_gan.tune.pbt import PBT
from tuneable_gan.tune.space import load_space, spec_from_dict

MUTATIONS = {"optim.g_lr": {"loguniform": [1.0e-5, 1.0e-3]},
             "regularizer.weight": {"uniform": [1.0, 100.0]}}
BASE = TINY | {"train.steps": 6, "train.eval_every": 2, "train.checkpoint_every": 6,
               "eval.num_samples": 64, "eval.batch_size": 64}


def doc(tmp_path: Path, **pbt) -> dict:
    return {"name": "p", "base": BASE, "space": {"optim.g_lr": {"loguniform": [1e-4, 1e-3]}},
            "tune": {"storage": str(tmp_path / "results"), "search": "random",
                     "num_samples": 4, "num_to_keep": 4,
                     "scheduler": {"pbt": {"perturbation_interval": 2, "mutations": MUTATIONS}
                                   | pbt}}}


def sweep_doc(tmp_path: Path) -> dict:
    """A sweep whose exploits are certain: synchronous PBT ranks all four trials at steps 2
    and 4 and clones the bottom one from a top one at each. Ray's default (asynchronous) ranks
    a trial against the other live trials' last scores: 2 runs of 48 exploited none (and
    one such run failed CI)."""
    return doc(tmp_path, synch=True)


def problems(d: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        spec_from_dict(d, source="s.yaml")
    return [p.removeprefix("s.yaml: ") for p in e.value.problems]


def test_pbt_settings_build_rays_scheduler_timed_in_g_steps(tmp_path):
    spec = spec_from_dict(doc(tmp_path, quantile_fraction=0.5), source="s.yaml")
    sched = _scheduler(spec)
    assert isinstance(sched, PBT) and sched._time_attr == "step"
    assert sched._perturbation_interval == 2 and sched._quantile_fraction == 0.5
    assert set(sched._hyperparam_mutations) == set(MUTATIONS)
    assert spec_from_dict(spec.to_dict(), source="s.yaml") == spec
    assert tr.TrialContext.of(spec).pbt_interval == 2
    assert sched._synch is False
    synch = spec_from_dict(doc(tmp_path, synch=True), source="s.yaml")
    assert _scheduler(synch)._synch is True and spec_from_dict(synch.to_dict(), "s.yaml") == synch


def test_pbt_perturbations_stay_inside_the_bounds():
    """Ray's own explore step, then the clip: 9e-4 x 1.2 would leave [1e-5, 1e-3]."""
    from ray.tune.schedulers.pbt import _explore

    sched = _scheduler(spec_from_dict(doc(Path("/tmp")), source="s.yaml"))
    config = {"optim.g_lr": 9e-4, "regularizer.weight": 90.0, "__sample__": 0}
    for _ in range(20):
        new, _ = _explore(config, sched._hyperparam_mutations, 0.0, (1.2, 0.8),
                          sched._custom_explore_fn)
        assert 1e-5 <= new["optim.g_lr"] <= 1e-3 and 1.0 <= new["regularizer.weight"] <= 100.0
    up, _ = _explore(config, sched._hyperparam_mutations, 0.0, (1.2, 1.2),
                     sched._custom_explore_fn)
    assert up["optim.g_lr"] == 1e-3 and up["regularizer.weight"] == 100.0


@pytest.mark.parametrize("change, line", [
    ({"mutations": {"optim.betas": {"uniform": [0.0, 0.9]}}},
     "tune.scheduler.pbt.mutations.optim.betas: this key may not mutate during training "
     "(mutable: optim.g_lr, optim.d_lr, regularizer.weight, regularizer.ema, "
     "augment.advaug_step)"),
    ({"mutations": {"optim.d_lr": {"uniform": [1.0e-3, 1.0e-4]}}},
     "tune.scheduler.pbt.mutations.optim.d_lr.uniform: low (0.001) must be < high (0.0001)"),
    ({"mutations": {"optim.d_lr": {"loguniform": [0, 1.0e-4]}}},
     "tune.scheduler.pbt.mutations.optim.d_lr.loguniform: low must be > 0, got 0"),
    ({"perturbation_interval": 3},
     "tune.scheduler.pbt.perturbation_interval (3) must be a multiple of train.eval_every (2): "
     "a trial reports, and PBT perturbs, only at evaluations"),
    ({"synch": "yes"}, "tune.scheduler.pbt.synch must be true or false, got 'yes'"),
    ({"quantile_fraction": 0.7}, "tune.scheduler.pbt.quantile_fraction must be in (0, 0.5], "
                                 "got 0.7"),
    ({"time_attr": "step"}, "tune.scheduler.pbt.time_attr: unknown key (valid: "
                            "perturbation_interval, "
                            "burn_in_period, quantile_fraction, resample_probability, synch, "
                            "mutations)"),
])
def test_bad_pbt_settings_are_one_line_each(tmp_path, change, line):
    assert problems(doc(tmp_path, **change)) == [line]


def test_pbt_is_refused_for_sparse_runs_optuna_and_a_short_checkpoint_history(tmp_path):
    d = doc(tmp_path)
    d["base"] = BASE | {"sparsity.level": 0.5}
    assert any("tune.scheduler=pbt cannot judge lottery-ticket trials" in p
               for p in problems(d))
    d = doc(tmp_path)
    d["tune"]["num_to_keep"] = 2
    assert problems(d) == ["tune.num_to_keep must be >= 3 with pbt, got 2: a donor's "
                           "checkpoint must outlive its clone's restore"]


def test_pb2_without_gpy_is_one_line(tmp_path):
    d = sweep_doc(tmp_path)
    d["tune"]["scheduler"] = {"pb2": {"perturbation_interval": 2,
                                      "mutations": {"optim.g_lr": [1.0e-5, 1.0e-3]}}}
    with mock.patch("importlib.util.find_spec", return_value=None):
        assert problems(d) == ["tune.scheduler=pb2 needs GPy, which is not installed (pip "
                               "install 'tuneable-gan[pb2]'), or use pbt"]


# -- a clone, driven through the trainable in this process -----------------------------------


def run_trial(tmp_path: Path, spec, config: dict, trial_id: str, checkpoint: Path | None,
              keep: Path | None = None) -> tuple[list[dict], GANTrainer]:
    """train_gan for one trial with Tune mocked: its reports (checkpoints copied to ``keep``)
    and its trainer."""
    reports, trainers = [], []

    class Spy(GANTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            trainers.append(self)

    def report(metrics, checkpoint=None):
        reports.append(dict(metrics))
        if checkpoint is not None and keep is not None:
            shutil.copytree(checkpoint.path, keep / f"step{metrics['step']}")

    ckpt = tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
    with mock.patch.object(tr.tune, "report", report), \
            mock.patch.object(tr.tune, "get_checkpoint", lambda: ckpt), \
            mock.patch.object(tr, "_trial_id", lambda: trial_id), \
            mock.patch.object(tr, "GANTrainer", Spy), \
            mock.patch.object(tr.ray, "get_gpu_ids", lambda: []), \
            mock.patch.object(tr.ray, "get_runtime_context") as ctx:
        ctx.return_value.get_node_id.return_value = "node"
        tr.train_gan(config, tr.TrialContext.of(spec))
    return reports, trainers[0]


def test_a_clone_trains_the_donors_state_with_its_new_values_and_streams(tmp_path):
    spec = spec_from_dict(doc(tmp_path), source="s.yaml")
    keep = tmp_path / "donor"
    keep.mkdir()
    donor_cfg = {"optim.g_lr": 2e-4, "__sample__": 0}
    donor, _ = run_trial(tmp_path, spec, donor_cfg, "donor", None, keep)
    # A checkpoint with every report at a perturbation (every 2 steps), naming its trial.
    assert sorted(p.name for p in keep.iterdir()) == ["step2", "step4", "step6"]
    assert json.loads((keep / "step2" / tr.ORIGIN_FILE).read_text()) == {
        "trial_id": "donor", "step": 2, "lineage": {}}
    new = {"optim.g_lr": 7e-4, "regularizer.weight": 55.0, "__sample__": 1}
    a, ta = run_trial(tmp_path, spec, new, "a", keep / "step2")
    b, _ = run_trial(tmp_path, spec, new, "b", keep / "step2")
    a2, _ = run_trial(tmp_path, spec, new, "a", keep / "step2")
    assert [r["step"] for r in a] == [4, 6]  # it went on from the donor's step 2
    assert all(r["pbt_parent"] == "donor" and r["pbt_cloned_at"] == 2 for r in a)
    # The new values are in force: the optimizer's lr (Ray issue 62173), the DigGAN weight.
    assert ta.opt_g.param_groups[0]["lr"] == 7e-4
    assert ta.opt_g.param_groups[0]["betas"] == tuple(ta.cfg.optim.betas)
    assert a[0]["optim.g_lr"] == 7e-4 and a[0]["regularizer.weight"] == 55.0
    # Two clones of one donor part ways; one clone is reproducible.
    assert a[0]["g_loss"] != b[0]["g_loss"] and a[0]["fid"] != b[0]["fid"]
    assert [r["g_loss"] for r in a] == [r["g_loss"] for r in a2]
    assert a[0]["g_loss"] != donor[1]["g_loss"]  # not a replay of the donor's step 4
    # A restart of the clone from its own checkpoint keeps reporting its lineage.
    ka = tmp_path / "clone"
    ka.mkdir()
    run_trial(tmp_path, spec, new, "a", keep / "step2", ka)
    again, _ = run_trial(tmp_path, spec, new, "a", ka / "step4")
    assert [(r["step"], r["pbt_parent"]) for r in again] == [(6, "donor")]


@pytest.mark.slow
def test_a_pbt_sweep_exploits_records_lineage_and_keeps_every_report(ray_2cpu, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep_doc(tmp_path)))
    spec = load_space(path)
    results = run_sweep(spec)
    assert results.num_errors == 0 and len(results) == 4
    from analysis.collect import collect

    df = collect(str(tmp_path / "results" / "p"))
    cloned = df[df["pbt_parent"].notna()] if "pbt_parent" in df else df.iloc[0:0]
    # One clone at each of the two synchronous points (the final report is never perturbed).
    assert set(cloned["pbt_cloned_at"]) == {2, 4}
    for _, r in cloned.iterrows():
        assert r["pbt_parent"] in set(df["trial_id"]) and r["pbt_parent"] != r["trial_id"]
        assert r["pbt_cloned_at"] % 2 == 0 and r["pbt_cloned_at"] < r["step"]
    # Every trial ran to its end and every report is kept (Ray's result.json loses rows when
    # a trial restarts; the driver's own log does not).
    assert set(df.groupby("trial_id")["step"].max()) == {6}
    for d in (tmp_path / "results" / "p").glob("trial_*"):
        mine = (d / "tuneable_gan_result.jsonl").read_text().splitlines()
        assert len(mine) >= len((d / "result.json").read_text().splitlines())


@pytest.mark.slow
def test_a_pb2_sweep_runs_and_exploits(ray_2cpu, tmp_path):
    pytest.importorskip("GPy", reason="PB2 needs GPy (pip install 'tuneable-gan[pb2]')")
    d = sweep_doc(tmp_path)
    d["tune"]["scheduler"] = {"pb2": {"perturbation_interval": 2, "synch": True,
                                      "mutations": {"optim.g_lr": [1.0e-5, 1.0e-3],
                                                    "regularizer.weight": [1.0, 100.0]}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    results = run_sweep(load_space(path))
    assert results.num_errors == 0 and len(results) == 4
    from analysis.collect import collect

    df = collect(str(tmp_path / "results" / "p"))
    assert set(df.groupby("trial_id")["step"].max()) == {6}
    cloned = df[df["pbt_parent"].notna()]
    assert set(cloned["pbt_cloned_at"]) == {2, 4}
    inside = 1 + 1e-6  # PB2 hands back float32 values: a bound comes back rounded
    for _, r in cloned.iterrows():  # PB2's values stay inside its box
        assert 1e-5 / inside <= r["optim.g_lr"] <= 1e-3 * inside
        assert 1.0 / inside <= r["regularizer.weight"] <= 100.0 * inside
