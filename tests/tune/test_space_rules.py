"""Search spaces: every bad-input rule gives one exact line naming the key (test_space.py covers
loading, expansion, Tune param_space, overrides and smoke)."""

from __future__ import annotations

import copy

import pytest
from space_docs import BASE, VALID, load, problems

from tuneable_gan.errors import ConfigError
from tuneable_gan.tune.space import expand_grid
from tuneable_gan.tune.space_parse import METRICS

# --- every bad-input rule, one exact line ---------------------------------------------------

def _set(doc: dict, path: tuple, value: object) -> dict:
    doc = copy.deepcopy(doc)
    d = doc
    for k in path[:-1]:
        d = d.setdefault(k, {})
    if value is DELETE:
        d.pop(path[-1])
    else:
        d[path[-1]] = value
    return doc


DELETE = object()
S, T = "space", "tune"
BAD = [
    ((S, "regularizer.wieght"), {"grid": [1.0]},
     "space.regularizer.wieght: unknown key (did you mean 'regularizer.weight'?)", None),
    ((S, "regularizer.pairing"), {"grid": []}, "space.regularizer.pairing: empty grid", None),
    ((S, "regularizer.ema"), {"choice": []}, "space.regularizer.ema: empty choice", None),
    ((S, "regularizer.weight"), {"loguniform": [0, 10]},
     "space.regularizer.weight: loguniform bounds must be 0 < lo < hi, got [0, 10]", None),
    ((T, "search"), "bayes", "tune.search must be one of random, grid, optuna; got 'bayes'",
     None),
    ((T, "num_samples"), 0, "space expands to zero trials (tune.num_samples=0)", None),
    ((S, "regularizer.ema"), {"choice": [0.0, 1.0]},
     "space.regularizer.ema: choice value 1.0: regularizer.ema must be in [0.0, 1.0), got 1.0",
     None),
    ((S, "regularizer.ema"), {"uniform": [0.5, 1.0]},
     "space.regularizer.ema: uniform bound 1.0: regularizer.ema must be in [0.0, 1.0), "
     "got 1.0", None),
    ((S, "optim.d_steps"), {"randint": [0, 3]},
     "space.optim.d_steps: randint bound 0: optim.d_steps must be in [1, inf], got 0", None),
    ((S, "regularizer.weight"), {"grid": [1.0], "choice": [2.0]},
     "space.regularizer.weight: give exactly one of grid, choice, uniform, loguniform, "
     "randint, seeds; got grid, choice", None),
    ((S, "regularizer.weight"), {"grdi": [1.0]},
     "space.regularizer.weight: unknown domain 'grdi' (did you mean 'grid'?)", None),
    ((S, "regularizer.weight"), [1, 2],
     "space.regularizer.weight: expected a mapping like {grid: [...]}, got [1, 2]", None),
    ((S, "regularizer.weight"), {"grid": 5},
     "space.regularizer.weight: grid must be a list of values, got 5", None),
    ((S, "regularizer.weight"), {"uniform": 5},
     "space.regularizer.weight: uniform needs [lo, hi], got 5", None),
    ((S, "optim.g_lr"), {"uniform": [1.0e-3, 1.0e-4]},
     "space.optim.g_lr: uniform bounds must be lo < hi, got [0.001, 0.0001]", None),
    ((S, "optim.d_steps"), {"randint": [1, 2.5]},
     "space.optim.d_steps: randint bounds must be integers lo < hi (hi excluded), "
     "got [1, 2.5]", None),
    ((S, "train.steps"), {"uniform": [100, 200]},
     "space.train.steps: uniform samples floats but train.steps is an integer (use randint)",
     None),
    ((S, "loss.name"), {"uniform": [0, 1]},
     "space.loss.name: uniform needs a numeric key; loss.name is not (use choice or grid)", None),
    ((S, "data.fraction"), {"seeds": 2},
     "space.data.fraction: seeds only applies to train.seed (use grid)", None),
    ((S, "train.seed"), {"seeds": 0}, "space.train.seed: seeds must be an integer >= 1, got 0",
     None),
    ((S, "regularizer.weight"), {"grid": [100, 1.0e+2]},
     "space.regularizer.weight: grid lists 100.0 twice", None),
    ((S, "regularizer.pairing"), {"grid": ["random", "same_class"]},
     "space.regularizer.pairing: grid value 'same_class': regularizer.pairing=same_class needs "
     "model.conditional=true (an unconditional G has no class to pair by)", None),
    ((T, "search"), "optuna",
     "space.regularizer.pairing: search: optuna cannot take a grid axis (use choice)",
     "optuna_with_grid"),
    (("base", "regularizer"), {"name": "diggan", "weight": -1},
     "base: regularizer.weight must be in [0.0, inf], got -1.0", None),
    (("base",), [1], "base must be a mapping of run-config keys or a path to a run-config YAML, "
     "got list", None),
    (("spcae",), {}, "spcae: unknown top-level key (did you mean 'space'?); valid: name, "
     "description, base, space, cells, baseline, paper, tune", None),
    ((S,), [1], "space must be a mapping of dotted run-config keys to domains, got list", None),
    ((T, "serach"), "grid", "tune.serach: unknown key (did you mean 'tune.search'?)", None),
    ((T, "resources"), {"cpu": 0}, "tune.resources.cpu must be > 0, got 0", None),
    ((T, "resources"), {"gpu": -1}, "tune.resources.gpu must be >= 0, got -1", None),
    ((T, "resources"), {"tpu": 1}, "tune.resources.tpu: unknown key (valid: cpu, gpu)", None),
    ((T, "mode"), "minimize", "tune.mode must be one of min, max; got 'minimize'", None),
    ((T, "scheduler"), "hyperband", "tune.scheduler must be fifo, asha, seed_asha, pbt or pb2 "
     "(e.g. {asha: {grace_period: 2}}); got 'hyperband'", None),
    ((T, "scheduler"), {"seed_asha": 2}, "tune.scheduler must be fifo, asha, seed_asha, pbt or "
     "pb2 (e.g. {asha: {grace_period: 2}}); got {'seed_asha': 2}", "seed_asha_not_a_mapping"),
    ((T, "scheduler"), {"fifo": {"x": 1}}, "tune.scheduler.fifo takes no settings, got {'x': 1}",
     None),
    ((T, "scheduler", "asha", "grace_period"), 0,
     "tune.scheduler.asha.grace_period must be an integer >= 1, got 0", None),
    ((T, "scheduler", "asha", "reduction_factor"), 1,
     "tune.scheduler.asha.reduction_factor must be a number > 1, got 1", None),
    ((T, "scheduler", "asha", "grace"), 1, "tune.scheduler.asha.grace: unknown key "
     "(did you mean 'tune.scheduler.asha.grace_period'?)", None),
    ((T, "scheduler", "asha"), {"grace_period": 5, "max_t": 3},
     "tune.scheduler.asha.grace_period (5) must be <= max_t (3)", None),
    ((T, "scheduler"), {"seed_asha": {"grace_period": 0}},
     "tune.scheduler.seed_asha.grace_period must be an integer >= 1, got 0", None),
    ((T, "scheduler"), {"seed_asha": {"reduction_factor": 1}},
     "tune.scheduler.seed_asha.reduction_factor must be a number > 1, got 1", None),
    ((T, "scheduler"), {"seed_asha": {"max_t": 0}},
     "tune.scheduler.seed_asha.max_t must be an integer >= 1, got 0", None),
    ((T, "scheduler"), {"seed_asha": {"grace": 1}}, "tune.scheduler.seed_asha.grace: unknown "
     "key (did you mean 'tune.scheduler.seed_asha.grace_period'?)", None),
    ((T, "scheduler"), {"seed_asha": {"grace_period": 5, "max_t": 3}},
     "tune.scheduler.seed_asha.grace_period (5) must be <= max_t (3)", None),
    ((T, "scheduler"), {"asha": {}, "seed_asha": {}}, "tune.scheduler must be fifo, asha, "
     "seed_asha, pbt or pb2 (e.g. {asha: {grace_period: 2}}); got {'asha': {}, "
     "'seed_asha': {}}",
     "two_schedulers"),
    ((T, "num_samples"), -1, "tune.num_samples must be an integer >= 1, got -1", None),
    ((T, "max_concurrent"), -1,
     "tune.max_concurrent must be an integer >= 0 (0 = unlimited), got -1", None),
    ((T, "max_failures"), -2,
     "tune.max_failures must be an integer >= -1 (-1 = retry forever), got -2", None),
    ((T, "num_to_keep"), 0, "tune.num_to_keep must be an integer >= 1, got 0", None),
    ((T, "storage"), 3, "tune.storage must be a path or URI, got 3", None),
    (("name",), "my sweep", "name must match [A-Za-z0-9_.-]+, got 'my sweep'", None),
    ((T, "metric"), "FID", "tune.metric: unknown metric 'FID' (did you mean 'fid'?); reported: "
     "fid, fid_best, kid, is_mean, modes_covered, w1, w1_best, precision, recall, density, "
     "coverage, nn_fake, nn_real, nn_ratio, dig, grad_norm_real, "
     "grad_norm_fake, d_loss, g_loss, reg_loss, sparsity, steps_per_s, step, images_seen",
     None),
    ((T, "mode"), "max", "tune.mode=max but fid is better when lower (use mode: min)", None),
    ((T, "metric"), "modes_covered", "tune.metric=modes_covered is only reported for "
     "data.name=toy2pt (use fid)", "toy_metric_on_images"),
    ((T, "metric"), "kid", "tune.metric=kid needs eval.kid: true in base", None),
]


@pytest.mark.parametrize("path,value,expect", [b[:3] for b in BAD],
                         ids=[b[3] or b[2][:40] for b in BAD])
def test_each_bad_space_gives_one_exact_line(tmp_path, path, value, expect):
    doc = _set(VALID, path, value)
    if path == (T, "metric") and value == "modes_covered":
        doc["tune"]["mode"] = "max"
    assert problems(tmp_path, doc) == [f"s.yaml: {expect}"]


@pytest.mark.parametrize("doc,expect", [
    ({"space": {"model.conditional": {"grid": [True, False]},
                "regularizer.pairing": {"grid": ["random", "same_class"]}},
      "base": {"model": {"conditional": True}}},
     "space: model.conditional=False with regularizer.pairing='same_class': regularizer.pairing"
     "=same_class needs model.conditional=true (an unconditional G has no class to pair by)"),
    ({"space": {"regularizer.weight": {"loguniform": [1.0, 10.0]}}, "tune": {"search": "grid"}},
     "space.regularizer.weight: search: grid takes only grid and seeds axes, got loguniform "
     "(use search: random)"),
    ({"space": {"train.seed": {"seeds": 3}}, "tune": {"search": "optuna"}},
     "tune.search=optuna needs at least one sampled axis besides the seeds (for a plain seed "
     "sweep use search: grid)"),
    ({"space": {"regularizer.weight": {"grid": [1.0, 2.0]}}, "tune": {"num_samples": 3}},
     "tune.num_samples=3 would repeat identical trials: no axis is sampled (for replicates use "
     "train.seed: {seeds: N})"),
    ({"space": {"optim.betas": {"choice": [[0.0, 0.99], [0.5, 0.999]]}},
      "tune": {"search": "optuna"}},
     "space.optim.betas: search: optuna takes only scalar choice values"),
    ({"base": {"data": {"name": "toy2pt"}, "model": {"arch": "toy"}},
      "space": {"regularizer.weight": {"grid": [1.0]}}},
     "tune.metric=fid is not reported for data.name=toy2pt (use modes_covered or w1)"),
])
def test_cross_rules_give_one_exact_line(tmp_path, doc, expect):
    assert problems(tmp_path, doc) == [f"s.yaml: {expect}"]


def test_several_problems_give_several_lines(tmp_path):
    doc = _set(VALID, (S, "regularizer.wieght"), {"grid": [1.0]})
    doc = _set(doc, (S, "regularizer.pairing"), {"grid": []})
    doc = _set(doc, (T, "search"), "bayes")
    doc = _set(doc, (T, "resources"), {"cpu": 0})
    got = problems(tmp_path, doc)
    assert got == [
        "s.yaml: tune.search must be one of random, grid, optuna; got 'bayes'",
        "s.yaml: tune.resources.cpu must be > 0, got 0",
        "s.yaml: space.regularizer.pairing: empty grid",
        "s.yaml: space.regularizer.wieght: unknown key (did you mean 'regularizer.weight'?)",
    ]
    assert str(ConfigError(got)).count("\n") == 3


def test_nested_space_keys_and_tune_seed(tmp_path):
    doc = {"base": BASE, "space": {"regularizer": {"weight": {"loguniform": [1.0, 10.0]}}},
           "tune": {"num_samples": 3, "seed": 1}}
    spec = load(tmp_path, doc)
    assert spec.axes == {"regularizer.weight": {"loguniform": [1.0, 10.0]}}
    other = spec.with_overrides(["tune.seed=2"])
    assert expand_grid(spec) != expand_grid(other) and len(expand_grid(other)) == 3
    assert problems(tmp_path, {**doc, "tune": {"metric": ["fid"]}}) == [
        "s.yaml: tune.metric: unknown metric ['fid'] (did you mean 'fid'?); reported: "
        + ", ".join(METRICS)]
