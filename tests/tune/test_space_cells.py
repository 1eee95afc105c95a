"""Search spaces: per-cell rules (``cells:``). Each trial's exact config, a preset per cell, the
smoke caps on rule-set lengths, overrides, the stored round trip, the trial context, and every
bad input as one line through ``tuneable-gan validate`` (exit 2)."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import pytest
import yaml
from space_docs import BASE, load, write

from analysis.collect import _config as collected_config
from tuneable_gan.cli import main
from tuneable_gan.config import from_dict
from tuneable_gan.tune.space import expand_grid, spec_from_dict, trial_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
FLAT = {"data.name": "digits", "data.fraction": 0.1, "model.arch": "dcgan",
        "regularizer.name": "diggan", "train.steps": 300, "train.eval_every": 100,
        "train.checkpoint_every": 100}
assert from_dict(FLAT) == from_dict(BASE)

RULES = {
    "name": "r", "base": BASE,
    "space": {"data.fraction": {"grid": [0.1, 0.2]},
              "regularizer.name": {"grid": ["none", "diggan"]}},
    "cells": [
        {"when": {"data.fraction": 0.2}, "set": {"train.steps": 400, "optim.d_steps": 2},
         "source": "script A"},
        {"when": {"data.fraction": 0.2, "regularizer.name": "diggan"},
         "set": {"train": {"steps": "5e2"}, "regularizer.weight": 7}, "source": "script B"},
        {"when": {"regularizer.name": "none"}, "set": {"train.eval_every": 50}},
    ],
    "tune": {"search": "grid"},
}
# What each cell's config must be: the base, then the rules in order, then the params.
EXPECTED = {
    (0.1, "none"): {"train.eval_every": 50},
    (0.1, "diggan"): {},
    (0.2, "none"): {"train.steps": 400, "optim.d_steps": 2, "train.eval_every": 50},
    (0.2, "diggan"): {"train.steps": 500, "optim.d_steps": 2, "regularizer.weight": 7.0},
}

CIFAR = {"preset": "biggan_cifar", "data.name": "cifar10", "data.root": "./c.tar.gz",
         "optim.d_lr": 1.0e-4}
PRESETS = {
    "name": "p", "base": CIFAR,
    "space": {"model.arch": {"grid": ["biggan", "sngan"]},
              "regularizer.name": {"grid": ["none", "diggan"]}},
    "cells": [{"when": {"model.arch": "sngan"}, "set": {"preset": "sngan_cifar"}},
              {"when": {"model.arch": "sngan", "regularizer.name": "diggan"},
               "set": {"optim.d_steps": 3}}],
    "tune": {"search": "grid"},
}


def test_rules_apply_in_order_with_an_exact_config_per_trial(tmp_path):
    spec = load(tmp_path, RULES)
    trials = expand_grid(spec)
    assert len(trials) == spec.expected_trials() == 4  # rules never change the trial count
    for params in trials:
        extra = EXPECTED[(params["data.fraction"], params["regularizer.name"])]
        assert spec.trial_config(params) == from_dict(FLAT | params | extra), params
    assert spec.cells[1].set == {"train.steps": 500, "regularizer.weight": 7.0}  # normalised
    assert spec.reports_per_trial() == 400 // 50  # the most reports of any cell


def test_a_rule_preset_replaces_the_base_preset_under_the_explicit_keys(tmp_path):
    spec = load(tmp_path, PRESETS)
    got = {(p["model.arch"], p["regularizer.name"]): spec.trial_config(p)
           for p in expand_grid(spec)}
    explicit = {k: v for k, v in CIFAR.items() if k != "preset"}
    for (arch, reg), cfg in got.items():
        preset = "sngan_cifar" if arch == "sngan" else "biggan_cifar"
        extra = {"optim.d_steps": 3} if (arch, reg) == ("sngan", "diggan") else {}
        assert cfg == from_dict({"preset": preset} | explicit | {
            "model.arch": arch, "regularizer.name": reg} | extra)
    sngan = got[("sngan", "none")]
    assert (sngan.train.steps, sngan.optim.d_steps, sngan.optim.batch_size) == (50_000, 5, 64)
    assert sngan.optim.betas == (0.0, 0.9) and sngan.optim.lr_schedule == "linear"
    assert sngan.data.flip is False  # nothing of biggan_cifar is left in a sngan_cifar cell
    assert sngan.optim.d_lr == 1e-4  # the base's explicit keys still win
    assert got[("biggan", "none")].train.steps == 250_000
    assert spec.base.model.arch == "biggan" and spec.base_doc["preset"] == "biggan_cifar"
    assert spec.reports_per_trial() == math.ceil(250_000 / 4000)


def test_smoke_shrinks_every_cell_whatever_its_rules_or_preset_set(tmp_path):
    doc = copy.deepcopy(PRESETS)
    doc["cells"] += [
        {"when": {"model.arch": "biggan"},
         "set": {"train.steps": 500_000, "eval.num_samples": 50_000,
                 "train.eval_every": 2000}},
        {"when": {"model.arch": "biggan", "regularizer.name": "diggan"},
         "set": {"train.steps": 5}},
    ]
    small = load(tmp_path, doc).smoke()
    got = {(p["model.arch"], p["regularizer.name"]): small.trial_config(p).train
           for p in expand_grid(small)}
    assert len(got) == 4
    for key, train in got.items():
        steps = 5 if key == ("biggan", "diggan") else 40
        assert (train.steps, train.eval_every, train.checkpoint_every) == (steps, min(10, steps),
                                                                           min(10, steps)), key
    for p in expand_grid(small):
        assert small.trial_config(p).eval.num_samples == 200
    assert small.reports_per_trial() == 4


def test_overrides_pin_a_key_in_every_cell_and_drop_rules_they_make_unreachable(tmp_path):
    spec = load(tmp_path, RULES)
    pinned = spec.with_overrides(["data.fraction=0.2"])
    assert "data.fraction" not in pinned.axes
    # the 0.2 rules now hold for every trial, conditioned on the remaining axes only
    assert [r.when for r in pinned.cells] == [{}, {"regularizer.name": "diggan"},
                                              {"regularizer.name": "none"}]
    for params in expand_grid(pinned):
        extra = EXPECTED[(0.2, params["regularizer.name"])]
        assert pinned.trial_config(params) == from_dict(FLAT | {"data.fraction": 0.2} | params
                                                        | extra)
    other = spec.with_overrides(["data.fraction=0.5"])
    assert [r.when for r in other.cells] == [{"regularizer.name": "none"}]
    steps = spec.with_overrides(["train.steps=7"])
    assert all(steps.trial_config(p).train.steps == 7 for p in expand_grid(steps))
    assert all("train.steps" not in r.set for r in steps.cells)
    cut = load(tmp_path, PRESETS).with_overrides(["space.model.arch={grid: [biggan]}"])
    assert cut.cells == ()  # both rules were for sngan cells
    assert load(tmp_path, PRESETS).with_overrides(["train.steps=9"]).trial_config(
        {"model.arch": "sngan", "regularizer.name": "none"}).train.steps == 9  # beats presets


def test_stored_spec_round_trips_and_rebuilds_each_trial(tmp_path):
    for doc in (RULES, PRESETS):
        spec = load(tmp_path, doc)
        stored = yaml.safe_load(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        back = spec_from_dict(stored, source=spec.source)
        assert back == spec and back.to_dict() == spec.to_dict()
        assert back.smoke() == spec.smoke() and spec.with_overrides([]) == spec
        for params in expand_grid(spec):
            cfg = spec.trial_config(params)
            assert back.trial_config(params) == cfg
            assert collected_config(stored, params) == cfg.flat()  # analysis/collect.py
    stored = spec.to_dict()
    assert stored["base"] == CIFAR and stored["cells"][0] == {
        "when": {"model.arch": "sngan"}, "set": {"preset": "sngan_cifar"}}


def test_trial_context_carries_the_base_document_and_rules(tmp_path):
    from tuneable_gan.tune.trainable import TrialContext

    spec = load(tmp_path, PRESETS)
    ctx = pickle.loads(pickle.dumps(TrialContext.of(spec)))  # as Ray ships it
    assert ctx.base == spec.trial_base() and ctx.base.doc == CIFAR
    for params in expand_grid(spec):
        assert trial_config(ctx.base, ctx.search, params) == spec.trial_config(params)


def test_every_cell_is_validated_with_its_rules(tmp_path):
    doc = copy.deepcopy(RULES)
    doc["cells"].append({"when": {"data.fraction": 0.2}, "set": {"regularizer.pairing":
                                                                 "same_class"}})
    assert _problems(tmp_path, doc) == [
        "s.yaml: cells[3].set.regularizer.pairing: regularizer.pairing=same_class needs "
        "model.conditional=true (an unconditional G has no class to pair by)"]
    # A rule can make a cell valid that the base alone would refuse.
    doc["cells"].append({"when": {"data.fraction": 0.2}, "set": {"model.conditional": True}})
    load(tmp_path, doc)


def _problems(tmp_path, doc) -> list[str]:
    from tuneable_gan.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load(tmp_path, doc)
    return e.value.problems


def _rule(i: int, **changes) -> dict:
    doc = copy.deepcopy(PRESETS)
    doc["cells"][i] = {k: v for k, v in (doc["cells"][i] | changes).items() if v is not None}
    return doc


BAD = [
    (_rule(0, when={"model.acrh": "sngan"}),
     "cells[0].when.model.acrh: unknown key (did you mean 'model.arch'?)"),
    (_rule(1, set={"optim.d_stesp": 3}),
     "cells[1].set.optim.d_stesp: unknown key (did you mean 'optim.d_steps'?)"),
    (_rule(1, set={"regularizer.name": "lecam"}),
     "cells[1].set.regularizer.name: is swept (space.regularizer.name); a rule may not set it"),
    (_rule(0, when={"model.arch": "dcgan"}),
     "cells[0].when.model.arch: 'dcgan' is not a value of space.model.arch (grid: 'biggan', "
     "'sngan')"),
    (_rule(0, set={"preset": "sngan"}),
     "cells[0].set.preset: unknown preset 'sngan' (did you mean 'sngan_cifar'?); valid: "
     "biggan_cifar, sngan_cifar, stylegan2_lowshot, stylegan2_cifar"),
    (_rule(0, when={"loss.name": "hinge"}),
     "cells[0].when.loss.name: not a swept axis; a rule matches the values of grid axes "
     "(here: model.arch, regularizer.name)"),
    (_rule(0, sett={"x": 1}), "cells[0].sett: unknown key (did you mean 'cells[0].set'?)"),
    (_rule(0, set={}), "cells[0].set must be a mapping of run-config keys to values, like "
                       "{train.steps: 250000}; got {}"),
    (_rule(1, set={"optim.d_steps": 0}),
     "cells[1].set.optim.d_steps: optim.d_steps must be in [1, inf], got 0"),
    (_rule(1, set={"train.seed": 3}),
     "cells[1].set.train.seed: is the replicate seed (set it in base); a rule may not set it"),
    ({**PRESETS, "base": {**CIFAR, "preset": "biggan"}},
     "base: preset must be one of biggan_cifar, sngan_cifar, stylegan2_lowshot, "
     "stylegan2_cifar; got 'biggan'"),
    ({**PRESETS, "cells": {"when": {}}}, "cells must be a list of rules like {when: "
     "{data.fraction: 0.1}, set: {train.steps: 250000}, source: ...}, got dict"),
]


@pytest.mark.parametrize("doc,expect", BAD, ids=[b[1][:48] for b in BAD])
def test_each_bad_rule_is_one_line_and_exit_2_through_validate(tmp_path, capsys, doc, expect):
    code = main(["validate", str(write(tmp_path, doc))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [f"tuneable-gan: error: s.yaml: {expect}"]


def test_validate_prints_the_rules_and_each_cells_length(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, RULES))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["r: 4 trials (search grid, seeds 1, scheduler fifo)",
                       "  data.fraction: {'grid': [0.1, 0.2]}",
                       "  regularizer.name: {'grid': ['none', 'diggan']}",
                       "base: no preset"]
    assert out[4:] == [
        "cells (applied in order, a later rule wins):",
        "  [0] when data.fraction=0.2: set train.steps=400, optim.d_steps=2  # script A",
        "  [1] when data.fraction=0.2, regularizer.name='diggan': set train.steps=500, "
        "regularizer.weight=7.0  # script B",
        "  [2] when regularizer.name='none': set train.eval_every=50",
        "train.steps per cell:",
        "  data.fraction=0.1, regularizer.name='none': 300 (cells[2])",
        "  data.fraction=0.1, regularizer.name='diggan': 300",
        "  data.fraction=0.2, regularizer.name='none': 400 (cells[0], cells[2])",
        "  data.fraction=0.2, regularizer.name='diggan': 500 (cells[0], cells[1])",
    ]
    assert main(["validate", str(write(tmp_path, PRESETS))]) == 0
    out = capsys.readouterr().out
    assert "base: preset biggan_cifar" in out
    assert "  model.arch='sngan', regularizer.name='none': 50000, preset sngan_cifar (cells[0])" \
        in out.splitlines()


# --- the paper spaces: each cell's length as its reference script runs it --------------------

DA = "translation,cutout"


def _table1(c: dict) -> int:
    if c["model.arch"] == "sngan":
        return 50_000  # SNGAN/exps/sngan_cifar10.sh --max_iter 50000
    long = (c["data.fraction"], c["augment.diffaugment"], c["regularizer.name"]) == (
        0.2, DA, "diggan")
    return 500_000 if long else 250_000  # DiffAugment-biggan-cifar10-0.2_Diggan.sh: 10000 ep


def _table2(c: dict) -> int:
    if c["regularizer.name"] == "lecam":  # google/lecam-gan lc-*biggan-cifar100*.sh
        return {0.1: 125_000, 0.2: 250_000, 1.0: 500_000}[c["data.fraction"]]
    long = (c["data.fraction"], c["augment.diffaugment"], c["regularizer.name"]) == (
        0.2, DA, "diggan")
    return 500_000 if long else 250_000


PAPER_LENGTHS = {"cifar10_table1": _table1, "cifar100_table2": _table2,
                 "pairing_table5": lambda c: 250_000, "regularizers_table10": lambda c: 250_000}


@pytest.mark.parametrize("stem", PAPER_LENGTHS)
def test_paper_spaces_train_each_cell_as_its_reference_script(stem):
    from tuneable_gan.tune.space import load_space
    from tuneable_gan.tune.space_parse import SEED_KEY

    spec = load_space(SPACES / f"{stem}.yaml")
    assert spec.base_doc["preset"] == "biggan_cifar"
    assert all(rule.source for rule in spec.cells)
    cells = spec.grid_cells()
    assert len(cells) * spec.seeds == spec.expected_trials()
    for cell in cells:
        cfg = spec.trial_config(cell | {SEED_KEY: 0})
        assert cfg.train.steps == PAPER_LENGTHS[stem](cell), cell
        o = cfg.optim
        if cfg.model.arch == "sngan":  # the SNGAN recipe, not the BigGAN one
            assert (o.batch_size, o.g_batch_size, o.d_steps, o.betas) == (64, 128, 5, (0.0, 0.9))
            assert (o.lr_schedule, o.g_ema, o.g_ema_buffers) == ("linear", 0.999, False)
            assert cfg.eval.g_mode == "eval" and not cfg.data.flip
        else:
            assert (o.batch_size, o.g_batch_size, o.d_steps, o.betas) == (50, 50, 4,
                                                                          (0.0, 0.999))
            assert (o.lr_schedule, o.g_ema, o.g_ema_start) == ("constant", 0.9999, 1000)
            assert cfg.eval.g_mode == "train" and cfg.data.flip
        assert (cfg.eval.extractor, cfg.eval.num_samples, cfg.eval.reference) == (
            "inception", 10_000, "test")
