"""Search spaces: loading, expansion, Tune param_space, overrides and smoke (the bad-input
rules are in test_space_rules.py).

No Ray cluster: Tune domains and variant generation work without ``ray.init``.
"""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from space_docs import BASE, GRID, VALID, load, write

from tuneable_gan.config import from_dict
from tuneable_gan.errors import ConfigError
from tuneable_gan.tune.space import TiedSample, expand_grid, load_space
from tuneable_gan.tune.space_parse import SAMPLE_KEY

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"

# --- shipped spaces -------------------------------------------------------------------------

SHIPPED = {"quickstart": 6, "diggan_asha": 8, "diggan_lambda": 18, "pairing": 18, "ema": 12,
           "data_fraction": 24, "toy_attractors": 50, "fewshot_faces": 24,
           "fewshot_stylegan2": 24, "cifar10_table1": 72,
           "cifar100_table2": 54, "regularizers_table10": 30, "pairing_table5": 18,
           "sparsity": 32, "sparsity_cifar10": 48, "instance_prior": 36,
           "instance_prior_gpu": 18, "pbt_quickstart": 8, "low_data_methods": 60}


def test_every_shipped_space_is_tested():
    assert {p.stem for p in SPACES.glob("*.yaml")} == set(SHIPPED)


@pytest.mark.parametrize("stem,trials", SHIPPED.items())
def test_shipped_space_loads_with_hand_counted_trials(stem, trials):
    spec = load_space(SPACES / f"{stem}.yaml")
    assert spec.expected_trials() == trials
    assert len(expand_grid(spec)) == trials
    for params in expand_grid(spec)[:3]:
        spec.trial_config(params)
    small = spec.smoke()
    assert small.base.train.steps <= 40 and small.seeds == 1
    assert small.expected_trials() <= 4
    for params in expand_grid(small):  # every cell shrinks, whatever its rules set
        train = small.trial_config(params).train
        assert train.steps <= 40 and train.eval_every <= 10


@pytest.mark.parametrize("stem", sorted(SHIPPED))
def test_low_data_image_spaces_report_memorisation(stem):
    """A low FID that copies the training set must be visible: every shipped space that trains
    on 20% of a dataset or less, in any cell, evaluates the nearest-neighbour columns (on the
    datasets with a test split of their own, whose images are the held-out yardstick)."""
    spec = load_space(SPACES / f"{stem}.yaml")
    for c in spec.grid_cells():
        cfg = spec.trial_config(c)
        if cfg.data.fraction <= 0.2 and cfg.data.name in ("digits", "cifar10", "cifar100"):
            assert cfg.eval.nn, (stem, c)


def test_quickstart_shape():
    spec = load_space(SPACES / "quickstart.yaml")
    assert spec.name == "quickstart" and spec.seeds == 3
    assert spec.base.data.fraction == 0.1 and spec.base.augment.diffaugment
    assert spec.tune.scheduler.name == "fifo" and spec.tune.search == "grid"
    assert spec.reports_per_trial() == 5
    # DigGAN against the unregularized baseline, which the space declares
    assert spec.baseline == {"regularizer.weight": 0.0}
    names = {c["regularizer.weight"]: spec.trial_config(c).regularizer.name
             for c in spec.grid_cells()}
    assert names == {0.0: "none", 1000.0: "diggan"}


def test_low_data_methods_shape():
    from tuneable_gan.resolve import fill_defaults

    spec = load_space(SPACES / "low_data_methods.yaml")
    assert spec.seeds == 5 and spec.tune.scheduler.name == "fifo"
    assert spec.baseline == {"regularizer.name": "none", "augment.diffaugment": ""}
    seen = {}
    for c in spec.grid_cells():
        cfg = fill_defaults(spec.trial_config(c))
        assert cfg.eval.nn and cfg.train.steps == 1000
        seen[(c["data.fraction"], c["regularizer.name"], c["augment.diffaugment"])] = cfg
    assert len(seen) == 12
    for (frac, name, aug), cfg in seen.items():
        p = 100 * frac  # the DigGAN reference's rule, p = percent of the data
        if name == "diggan":
            torch.testing.assert_close(cfg.regularizer.weight, 1e5 / p**2 if aug else 1e5 / p)
        if name == "lecam":  # the reference's start 1000 is past a 1k-step run's end
            assert cfg.regularizer.start == 100 and cfg.regularizer.weight == 0.3


def test_diggan_asha_shape():
    spec = load_space(SPACES / "diggan_asha.yaml")
    assert spec.name == "diggan-asha" and spec.seeds == 2
    assert spec.tune.scheduler.name == "asha" and spec.tune.search == "random"
    assert spec.reports_per_trial() == 6


def test_toy_space_uses_toy_metric_and_reference_optimizer():
    spec = load_space(SPACES / "toy_attractors.yaml")
    b = spec.base
    assert (b.data.name, b.model.arch, b.loss.name, b.optim.name) == ("toy2pt", "toy", "ns", "sgd")
    assert (b.optim.g_lr, b.optim.d_lr, b.optim.momentum, b.optim.d_steps) == (1e-2, 1e-2, 0.9, 10)
    assert (spec.tune.metric, spec.tune.mode, spec.tune.scheduler.name) == (
        "modes_covered", "max", "fifo")
    assert spec.seed_values() == list(range(10))


# --- expansion and param_space --------------------------------------------------------------

def test_grid_and_seeds_expand_to_the_explicit_trial_set(tmp_path):
    spec = load(tmp_path, GRID)
    assert spec.expected_trials() == 8
    expected = [{"regularizer.weight": w, "regularizer.pairing": p, "train.seed": s}
                for s in (0, 1) for w in (10.0, 100.0) for p in ("random", "magnitude")]
    assert expand_grid(spec) == expected


def _trainable(config):  # a named function: Tune registers trainables by name
    pass


def tune_trials(spec, tmp_path) -> list[dict]:
    """The trial configs Tune's default search creates from the spec (no Ray cluster needed)."""
    from ray.tune.search import BasicVariantGenerator

    gen = BasicVariantGenerator()
    gen.add_configurations({"t": {"run": _trainable, "config": spec.param_space(),
                                  "num_samples": spec.tuner_num_samples(),
                                  "storage_path": str(tmp_path)}})
    out = []
    while not gen.is_finished():
        trial = gen.next_trial()
        if trial is not None:
            out.append({k: v for k, v in trial.config.items() if k != SAMPLE_KEY})
    return out


@pytest.mark.parametrize("doc", [GRID, VALID], ids=["grid", "random"])
def test_expand_grid_is_exactly_what_tune_generates(doc, tmp_path):
    spec = load(tmp_path, doc)
    assert tune_trials(spec, tmp_path) == expand_grid(spec)
    assert len(expand_grid(spec)) == spec.expected_trials()


@pytest.mark.parametrize("stem", ["quickstart", "diggan_asha", "pairing"])
def test_tune_creates_the_expected_trials(stem, tmp_path):
    spec = load_space(SPACES / f"{stem}.yaml")
    trials = tune_trials(spec, tmp_path)
    assert trials == expand_grid(spec) and len(trials) == spec.expected_trials()
    for params in trials:
        spec.trial_config(params)


def test_seeds_of_a_configuration_share_its_sampled_values(tmp_path):
    spec = load(tmp_path, VALID)
    trials = expand_grid(spec)
    assert len(trials) == 2 * 4 * 3
    sampled = ("regularizer.weight", "regularizer.ema", "optim.g_lr", "optim.d_steps")
    groups: dict[tuple, set] = {}
    for t in trials:
        groups.setdefault(tuple(t[k] for k in sampled), set()).add(
            (t["regularizer.pairing"], t["train.seed"]))
    # 2 pairings x 4 samples = 8 configurations, each run with all 3 seeds and nothing else
    assert len(groups) == 8
    assert all(len(v) == 3 and len({p for p, _ in v}) == 1 for v in groups.values())
    for t in trials:
        assert 1.0 <= t["regularizer.weight"] < 1e5 and t["regularizer.ema"] in (0.0, 0.5, 0.9)
        assert 1e-4 <= t["optim.g_lr"] < 4e-4 and t["optim.d_steps"] in (1, 2, 3)
        assert isinstance(t["optim.d_steps"], int)
    assert expand_grid(load(tmp_path, VALID)) == trials  # a pure function of tune.seed
    explicit = expand_grid(spec.with_overrides(["space.train.seed={grid: [0, 1, 2]}"]))
    assert explicit == trials  # an explicit seed grid is replicates too
    assert expand_grid(spec.with_overrides(["tune.seed=1"])) != trials


def test_param_space_random_search(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Function, Integer

    spec = load(tmp_path, VALID)
    space = spec.param_space()
    assert space[SAMPLE_KEY] == {"grid_search": [0, 1, 2, 3]}
    assert space["regularizer.pairing"] == {"grid_search": ["random", "magnitude"]}
    assert space["train.seed"] == {"grid_search": [0, 1, 2]}
    assert spec.tuner_num_samples() == 1
    kinds = {"regularizer.weight": (Float, "loguniform", (1.0, 1e5)),
             "optim.g_lr": (Float, "uniform", (1e-4, 4e-4)),
             "optim.d_steps": (Integer, "randint", (1, 4)),
             "regularizer.ema": (Categorical, "choice", (0.0, 0.5, 0.9))}
    for key, (cls, kind, args) in kinds.items():
        dom = space[key]
        assert isinstance(dom, Function) and isinstance(dom.func, TiedSample)
        assert (dom.func.kind, dom.func.args) == (kind, args)
        assert dom.func.cell == ("regularizer.pairing",)
        assert isinstance(dom.func.domain(), cls)
    w = space["regularizer.weight"].func.domain()
    assert type(w.sampler).__name__ == "_LogUniform" and (w.lower, w.upper) == (1.0, 1e5)
    pickle.loads(pickle.dumps(space))  # Tune stores the space in its experiment state
    grid = load(tmp_path, GRID).param_space()
    assert SAMPLE_KEY not in grid and load(tmp_path, GRID).tuner_num_samples() == 1


def test_param_space_optuna_has_no_seeds_and_no_grid(tmp_path):
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.search.sample import Categorical, Float, Integer

    doc = copy.deepcopy(VALID)
    doc["space"]["regularizer.pairing"] = {"choice": ["random", "magnitude"]}
    doc["tune"] = {"search": "optuna", "num_samples": 5}
    spec = load(tmp_path, doc)
    space = spec.param_space()
    assert set(space) == {"regularizer.weight", "regularizer.pairing", "regularizer.ema",
                          "optim.g_lr", "optim.d_steps"}
    w, lr, d = space["regularizer.weight"], space["optim.g_lr"], space["optim.d_steps"]
    assert isinstance(w, Float) and (w.lower, w.upper) == (1.0, 1e5)
    assert type(w.sampler).__name__ == "_LogUniform"
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 4e-4)
    assert isinstance(d, Integer) and (d.lower, d.upper) == (1, 4)
    assert isinstance(space["regularizer.ema"], Categorical)
    assert space["regularizer.ema"].categories == [0.0, 0.5, 0.9]
    assert spec.expected_trials() == 15 and spec.tuner_num_samples() == 15
    assert len(OptunaSearch.convert_search_space(space)) == 5
    with pytest.raises(ValueError):
        expand_grid(spec)
    cfg = spec.trial_config({"regularizer.weight": 3.0, "__trial_index__": 2})
    assert cfg.train.seed == 2 and cfg.regularizer.weight == 3.0


def test_trial_config_applies_params_and_validates(tmp_path):
    spec = load(tmp_path, VALID)
    cfg = spec.trial_config({SAMPLE_KEY: 1, "regularizer.weight": np.float64(12.5),
                             "optim.d_steps": np.int64(3), "train.seed": 2,
                             "regularizer.pairing": "magnitude"})
    assert cfg.regularizer.weight == 12.5 and cfg.optim.d_steps == 3 and cfg.train.seed == 2
    assert isinstance(cfg.optim.d_steps, int) and cfg.regularizer.pairing == "magnitude"
    assert cfg.data.fraction == 0.1 and cfg.train.steps == 300  # the base's constants
    assert spec.trial_config({"__trial_index__": 5}).train.seed == 0  # random: not a seed
    with pytest.raises(ConfigError, match="regularizer.ema must be in"):
        spec.trial_config({"regularizer.ema": 1.0})


def test_seeds_start_at_the_base_seed(tmp_path):
    doc = copy.deepcopy(GRID)
    doc["base"] = {**BASE, "train": {**BASE["train"], "seed": 10}}
    assert load(tmp_path, doc).param_space()["train.seed"] == {"grid_search": [10, 11]}


def test_yaml_1e5_strings_are_numbers(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("space:\n  regularizer.weight: {loguniform: [1.0, 1.0e5]}\n"
                 "  regularizer.ema: {grid: [0.5, 5e-1]}\n")
    with pytest.raises(ConfigError) as e:
        load_space(p)
    assert e.value.problems == ["s.yaml: space.regularizer.ema: grid lists 0.5 twice"]
    p.write_text("base: {regularizer: {name: diggan}}\n"
                 "space:\n  regularizer.weight: {loguniform: [1.0, 1.0e5]}\n"
                 "  optim.d_lr: {grid: [1e-4, 2e-4]}\n")
    spec = load_space(p)
    assert spec.axes == {"regularizer.weight": {"loguniform": [1.0, 100000.0]},
                         "optim.d_lr": {"grid": [1e-4, 2e-4]}}
    assert spec.name == "s" and spec.tune.metric == "fid" and spec.seeds == 1


# --- defaults, storage, base as a path ------------------------------------------------------

def test_tune_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load(tmp_path, {"base": BASE, "space": {"regularizer.weight": {"grid": [1.0]}}})
    t = spec.tune
    assert (t.metric, t.mode, t.search, t.num_samples) == ("fid", "min", "random", 1)
    assert t.scheduler.name == "fifo" and t.resources == {"cpu": 1.0, "gpu": 0.0}
    assert (t.max_concurrent, t.max_failures, t.num_to_keep) == (0, 0, 2)
    assert t.storage == os.path.join(str(tmp_path), "results")


def test_storage_uri_is_kept_and_asha_defaults_filled(tmp_path):
    doc = copy.deepcopy(VALID)
    doc["tune"].update(storage="s3://bucket/prefix", scheduler="asha",
                       resources={"cpu": 0.5, "gpu": 0.25})
    t = load(tmp_path, doc).tune
    assert t.storage == "s3://bucket/prefix" and t.resources == {"cpu": 0.5, "gpu": 0.25}
    assert (t.scheduler.name, t.scheduler.params) == ("asha", {"grace_period": 1,
                                                              "reduction_factor": 4})


def test_base_given_as_a_path_is_relative_to_the_space_file(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "spaces").mkdir()
    (tmp_path / "configs" / "run.yaml").write_text(
        "data: {name: digits, fraction: 0.2}\nregularizer.name: diggan\n")
    doc = {"base": "../configs/run.yaml", "space": {"regularizer.weight": {"grid": [1.0, 2.0]}}}
    spec = load_space(write(tmp_path / "spaces", doc))
    assert spec.base.data.fraction == 0.2 and spec.base.regularizer.name == "diggan"
    doc["base"] = "../configs/missing.yaml"
    with pytest.raises(ConfigError) as e:
        load_space(write(tmp_path / "spaces", doc))
    missing = tmp_path / "spaces" / ".." / "configs" / "missing.yaml"
    assert e.value.problems == [f"s.yaml: base: config file not found: {missing}"]


# --- with_overrides and smoke ---------------------------------------------------------------

def test_with_overrides(tmp_path):
    spec = load(tmp_path, VALID)
    new = spec.with_overrides(["tune.num_samples=2", "tune.max_concurrent=1",
                               "tune.resources.gpu=0.5", "train.steps=200",
                               "regularizer.pairing=random", "name=other"])
    assert new.tune.num_samples == 2 and new.tune.max_concurrent == 1
    assert new.tune.resources == {"cpu": 1.0, "gpu": 0.5} and new.name == "other"
    assert new.base.train.steps == 200
    # a swept key set with --set is pinned: its axis goes away
    assert "regularizer.pairing" not in new.axes and new.base.regularizer.pairing == "random"
    assert new.expected_trials() == 2 * 3
    assert spec.expected_trials() == 24  # the original is untouched
    assert spec.with_overrides([]) == spec
    pinned = spec.with_overrides(["train.seed=7"])
    assert pinned.seeds == 1 and pinned.base.train.seed == 7
    axis = spec.with_overrides(["space.regularizer.ema=null", "space.loss.name={grid: [ns]}"])
    assert "regularizer.ema" not in axis.axes and axis.axes["loss.name"] == {"grid": ["ns"]}


@pytest.mark.parametrize("override,expect", [
    ("tune.serach=grid", "s.yaml: tune.serach: unknown key (did you mean 'tune.search'?)"),
    ("sapce.x=1", "--set sapce.x: unknown key"),
    ("regularizer.wieght=3", "--set regularizer.wieght: unknown key "
                             "(did you mean 'regularizer.weight'?)"),
    ("tune.num_samples=0", "s.yaml: space expands to zero trials (tune.num_samples=0)"),
    ("data.fraction=0", "s.yaml: base: data.fraction must be in (0.0, 1.0], got 0.0"),
    ("tune.search=bayes", "s.yaml: tune.search must be one of random, grid, optuna; "
                          "got 'bayes'"),
])
def test_bad_override_is_one_line(tmp_path, override, expect):
    spec = load(tmp_path, VALID)
    with pytest.raises(ConfigError) as e:
        spec.with_overrides([override])
    assert e.value.problems == [expect]


def test_smoke_shrinks_exactly_as_documented(tmp_path):
    doc = copy.deepcopy(VALID)
    doc["space"]["regularizer.pairing"] = {"grid": ["random", "magnitude", "same_class"]}
    doc["base"] = {**BASE, "model": {"arch": "dcgan", "conditional": True},
                   "eval": {"num_samples": 1000}}
    doc["space"]["train.steps"] = {"grid": [100, 200]}
    spec = load(tmp_path, doc)
    small = spec.smoke()
    b = small.base
    assert (b.train.steps, b.train.eval_every, b.train.checkpoint_every) == (40, 10, 10)
    assert b.eval.num_samples == 200 and small.seeds == 1 and small.tune.num_samples == 1
    assert small.axes["regularizer.pairing"] == {"grid": ["random", "magnitude"]}
    assert "train.steps" not in small.axes
    assert small.axes["regularizer.weight"] == spec.axes["regularizer.weight"]
    assert small.tune.scheduler.params["grace_period"] == 1
    assert small.name == "t-smoke" and small.expected_trials() == 2
    assert small.reports_per_trial() == 4

    short = load(tmp_path, GRID).with_overrides(["train.steps=5", "eval.num_samples=50"]).smoke()
    b = short.base
    assert (b.train.steps, b.train.eval_every, b.train.checkpoint_every) == (5, 5, 5)
    assert b.eval.num_samples == 50 and short.expected_trials() == 4

    doc = copy.deepcopy(VALID)
    doc["space"]["regularizer.pairing"] = {"choice": ["random", "magnitude"]}
    doc["tune"] = {"search": "optuna", "num_samples": 30,
                   "scheduler": {"asha": {"grace_period": 3, "max_t": 30}}}
    opt = load(tmp_path, doc).smoke()
    assert opt.tune.num_samples == 2 and opt.expected_trials() == 2
    assert opt.tune.scheduler.params == {"grace_period": 1, "reduction_factor": 4, "max_t": 4}


def test_a_valid_space_makes_only_valid_trial_configs(tmp_path):
    spec = load(tmp_path, VALID)
    for params in expand_grid(spec):
        cfg = spec.trial_config(params)
        assert cfg == from_dict(cfg.flat())


NATURAL_BASELINES = {"regularizer.name": "none", "regularizer.weight": 0.0,
                     "sparsity.level": 0.0, "prior.network": "none"}


@pytest.mark.parametrize("stem", sorted(SHIPPED))
def test_a_space_with_a_natural_baseline_declares_it(stem):
    """The report compares every cell with the space's baseline: where a grid holds a method
    switched off, the space names such a cell (the sparsity spaces ask about sparsity: the
    dense run, per regularizer)."""
    spec = load_space(SPACES / f"{stem}.yaml")
    natural = {k: v for k, v in NATURAL_BASELINES.items()
               if v in spec.axes.get(k, {}).get("grid", [])}
    assert not natural or any(spec.baseline.get(k) == v for k, v in natural.items()), (
        natural, spec.baseline)
