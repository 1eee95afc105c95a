"""The G EMA warning (``tuneable_gan.ema_warning``): the weight G_ema keeps on its start, checked
against the EMA update itself, the exact numbers of the warning, configs that must not warn, and
where the CLI prints it (train once, validate, sweep once per space, not for --smoke)."""

from __future__ import annotations

import pytest
import yaml
from conftest import TINY
from torch import nn

from tuneable_gan.cli import main
from tuneable_gan.config import from_dict
from tuneable_gan.ema import ema_decay, update_ema
from tuneable_gan.ema_warning import LEFT_LIMIT, cell_warnings, ema_warning, weight_left
from tuneable_gan.errors import UserError

SHIPPED = {"optim.g_ema": 0.999, "optim.g_ema_start": 0, "optim.batch_size": 32,
           "optim.d_steps": 1}


def cfg(**dotted):
    return from_dict(TINY | SHIPPED | {k.replace("__", "."): v for k, v in dotted.items()})


def simulated_left(c) -> float:
    """G_ema's weight on its start after ``train.steps`` updates of ``ema.update_ema`` with the
    trainer's decays, read off one-weight nets: G_ema starts at 1 and G is 0, but for the last
    step before ``optim.g_ema_start``, whose copy of G (1) is then the start."""
    G_ema, G = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    G_ema.weight.requires_grad_(False).fill_(1.0)
    G.weight.requires_grad_(False)
    o = c.optim
    for step in range(c.train.steps):
        G.weight.fill_(1.0 if o.g_ema_kimg is None and step == o.g_ema_start - 1 else 0.0)
        update_ema(G_ema, G, ema_decay(o, step, step * o.d_steps * o.batch_size))
    return float(G_ema.weight)


@pytest.mark.parametrize("dotted", [
    {}, {"optim__g_ema_start": 50}, {"optim__g_ema": 0.9}, {"optim__g_ema_start": 300},
    {"optim__g_ema_kimg": 10.0}, {"optim__g_ema_kimg": 10.0, "optim__g_ema_rampup": 0.05}])
def test_the_weight_left_is_what_the_ema_update_leaves(dotted):
    c = cfg(train__steps=200, **dotted)
    assert weight_left(c) == pytest.approx(simulated_left(c), rel=1e-4, abs=1e-9)


def test_the_shipped_ema_over_200_steps_warns_with_the_exact_numbers():
    c = cfg(train__steps=200)
    assert weight_left(c) == pytest.approx(0.999 ** 200) == pytest.approx(0.8186, abs=1e-4)
    assert ema_warning(c) == (
        "optim.g_ema=0.999 over train.steps=200 leaves G_ema 0.999^200 = 0.8186 of G's random "
        "initialisation (> 0.05): the FID and samples, all of G_ema, mostly show that, not the "
        "trained G; use optim.g_ema <= 0.985 (0.05^(1/200)) or train.steps >= 2995")
    # The values it offers do fit, and the step count is the least that does.
    assert 0.985 ** 200 <= LEFT_LIMIT < 0.986 ** 200
    assert 0.999 ** 2995 <= LEFT_LIMIT < 0.999 ** 2994


def test_a_late_start_and_the_half_life_form_name_their_keys():
    w = ema_warning(cfg(train__steps=200, optim__g_ema_start=50))
    assert w.startswith("optim.g_ema=0.999 over train.steps=200 from optim.g_ema_start=50 "
                        "leaves G_ema 0.999^150 = 0.8606 of G at step 50 (> 0.05)")
    assert w.endswith("use optim.g_ema <= 0.98 (0.05^(1/150)) or train.steps >= 3045")
    w = ema_warning(cfg(train__steps=200, optim__g_ema_kimg=10.0))
    assert w.startswith("optim.g_ema_kimg=10 over train.steps=200 (6400 images at batch 32, "
                        "half-life 10000) leaves G_ema 0.5^(6400/10000) = 0.6417 of G's random "
                        "initialisation")
    assert w.endswith("use optim.g_ema_kimg <= 1.4, optim.g_ema_rampup, or train.steps >= 1351")
    assert 0.5 ** (200 * 32 / 1400) <= LEFT_LIMIT < 0.5 ** (1350 * 32 / 10000)
    assert "model.init_from's G" in ema_warning(cfg(train__steps=200, model__init_from="x"))


@pytest.mark.parametrize("dotted", [
    {"optim__g_ema": 0.99, "train__steps": 1000},  # the search spaces' short-memory EMA
    {"optim__g_ema": 0.999, "train__steps": 3000},
    {"optim__g_ema": 0.0, "train__steps": 200},  # G_ema = G
    {"optim__g_ema_start": 200, "train__steps": 200},  # every update a copy
    {"optim__g_ema_kimg": 10.0, "optim__g_ema_rampup": 0.05, "train__steps": 200},
])
def test_an_ema_that_forgets_its_start_does_not_warn(dotted):
    c = cfg(**dotted)
    assert weight_left(c) <= LEFT_LIMIT and ema_warning(c) is None


def test_a_space_warns_once_per_distinct_warning_naming_its_cells():
    slow, fine = cfg(train__steps=200), cfg(train__steps=200, optim__g_ema=0.9)
    cells = [({"optim.g_ema": 0.999, "regularizer.weight": w}, slow) for w in (0, 1, 2)]
    assert cell_warnings(cells) == [f"{ema_warning(slow)} [every cell]"]
    cells.append(({"optim.g_ema": 0.9, "regularizer.weight": 0}, fine))
    assert cell_warnings(cells) == [f"{ema_warning(slow)} [3 of 4 cells checked, first "
                                    "optim.g_ema=0.999, regularizer.weight=0]"]


def ema_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("tuneable-gan: warning:")
            and "G_ema" in ln]


def test_train_prints_it_once_at_the_start(tmp_path, capsys):
    p = tmp_path / "run.yaml"
    p.write_text(cfg(train__steps=2, train__eval_every=2).to_yaml())
    assert main(["train", str(p), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (line,) = ema_lines(capsys.readouterr().err)
    assert "optim.g_ema=0.999 over train.steps=2 leaves G_ema 0.999^2 = 0.9980" in line
    assert main(["validate", str(p)]) == 0
    assert len(ema_lines(capsys.readouterr().err)) == 1
    p.write_text(cfg(train__steps=2, optim__g_ema=0.0).to_yaml())
    assert main(["validate", str(p)]) == 0
    assert ema_lines(capsys.readouterr().err) == []


def test_validate_and_sweep_print_it_once_per_space_and_smoke_not(tmp_path, capsys, monkeypatch):
    doc = {"name": "ema", "base": TINY | SHIPPED | {"train.steps": 200},
           "space": {"regularizer.weight": {"grid": [0.0, 1.0, 2.0]}},
           "tune": {"storage": str(tmp_path / "results"), "search": "grid"}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(p)]) == 0
    (line,) = ema_lines(capsys.readouterr().err)
    assert line.endswith("train.steps >= 2995 [every cell]")
    from tuneable_gan.tune import launch

    def no_ray(spec, address=None, callbacks=()):
        for c in callbacks:
            c.setup()  # what Tune does when the experiment starts
        raise UserError("stopped before Ray")

    monkeypatch.setattr(launch, "run_sweep", no_ray)
    assert main(["sweep", str(p)]) == 2
    assert len(ema_lines(capsys.readouterr().err)) == 1
    assert main(["sweep", str(p), "--smoke"]) == 2
    assert ema_lines(capsys.readouterr().err) == []
