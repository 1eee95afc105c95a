"""Bad search spaces through ``tuneable-gan validate``: one line and exit 2 each (issue 17, items
7 and 10): a misspelt top-level section, a bad ``base:`` file, a cell ``train`` would refuse, a
key no cell reads; a key only some cells read is a warning; every shipped space validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from space_docs import BASE, GRID

from tuneable_gan.cli import main

ROOT = Path(__file__).resolve().parents[2]
ERROR, WARNING = "tuneable-gan: error: ", "tuneable-gan: warning: "
TOP = "valid: name, description, base, space, cells, baseline, paper, tune"


def run(capsys, *argv: str) -> tuple[int, list[str], str]:
    """(exit code, the error lines, all of stderr)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.startswith(ERROR)], err


def write(tmp_path: Path, doc: dict, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def renamed(doc: dict, old: str, new: str) -> dict:
    return {new if k == old else k: v for k, v in doc.items()}


@pytest.mark.parametrize("doc, line", [
    (renamed(GRID, "space", "spce"),
     f"spce: unknown top-level key (did you mean 'space'?); {TOP}"),
    (renamed(GRID, "tune", "tunes"),
     f"tunes: unknown top-level key (did you mean 'tune'?); {TOP}"),
    ({k: v for k, v in GRID.items() if k != "space"},
     "space: missing; a search space needs its axes under space: (space: {} for a single "
     f"configuration); valid top-level keys: {TOP[7:]}"),
], ids=["spce", "tunes", "no-space"])
@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_misspelt_section_is_not_read_as_a_run_config(tmp_path, capsys, doc, line, command):
    path = write(tmp_path, doc)
    out = tmp_path / "out"
    code, lines, err = run(capsys, command, str(path), *(["--out", str(out)] * (
        command == "train")))
    expect = (f"{path} is a search space, not a run config; run it with tuneable-gan sweep (or "
              "train its base)" if command == "train" else f"s.yaml: {line}")
    assert code == 2 and lines == [f"{ERROR}{expect}"], err
    assert not out.exists()


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(bytes(range(256)) * 4), " is a binary file, not YAML text"),
    (lambda p: p.mkdir(), " is a directory, not a YAML file"),
    (lambda p: p.write_text("- 1\n"), ": expected a mapping of config sections, got list"),
], ids=["binary", "directory", "list"])
def test_a_bad_base_file_is_one_line_naming_it(tmp_path, capsys, make, says):
    base = tmp_path / "base.yaml"
    make(base)
    path = write(tmp_path, GRID | {"base": "base.yaml"})
    code, lines, err = run(capsys, "validate", str(path))
    assert code == 2 and lines == [f"{ERROR}s.yaml: base: {base}{says}"], err


@pytest.mark.parametrize("doc, line", [
    ({"base": BASE | {"model": {"arch": "dcgan", "conditional": True}},
      "space": {"regularizer.name": {"grid": ["diggan", "gp", "dragan"]},
                "optim.d_steps": {"grid": [1, 2]}}},
     "cells: regularizer.name='gp', optim.d_steps=1 (and 1 more): regularizer.name=gp is not "
     "available for a conditional D (model.conditional=true): GP interpolates between images "
     "of different classes; valid: none, diggan, lecam, r1, r2, dragan"),
    ({"base": BASE, "space": {"data.resolution": {"grid": [16, 64]}}},
     "cells: data.resolution=64: data.resolution must be one of 8, 16, 32 for model.arch=dcgan; "
     "got 64x64"),
    ({"base": {**BASE, "preset": "biggan_cifar", "data": {"name": "cifar10"},
               "model": {"arch": "biggan"}},
      "space": {"regularizer.name": {"grid": ["diggan", "gp"]}}},
     "cells: regularizer.name='gp': regularizer.name=gp is not available for a conditional D "
     "(model.conditional=true): GP interpolates between images of different classes; valid: "
     "none, diggan, lecam, r1, r2, dragan"),
], ids=["gp-conditional", "dcgan-64", "gp-biggan-cifar-without-the-data"])
def test_validate_refuses_a_cell_train_would_refuse(tmp_path, capsys, doc, line):
    path = write(tmp_path, doc | {"tune": {"search": "grid"}})
    code, lines, err = run(capsys, "validate", str(path))
    assert code == 2 and lines == [f"{ERROR}s.yaml: {line}"], err


def test_sweep_refuses_what_validate_refuses_before_ray_starts(tmp_path, capsys, monkeypatch):
    import tuneable_gan.tune.launch as launch

    def no_ray(*a, **k):
        raise AssertionError("the sweep started")

    monkeypatch.setattr(launch, "run_sweep", no_ray)
    doc = {"base": BASE | {"model": {"conditional": True}, "regularizer": {"name": "gp"}},
           "space": {"regularizer.weight": {"grid": [1.0, 10.0]}}, "tune": {"search": "grid"}}
    path = write(tmp_path, doc)
    code, lines, err = run(capsys, "sweep", str(path), "--storage", str(tmp_path / "r"))
    assert code == 2 and len(lines) == 1 and "GP interpolates" in lines[0], err
    assert not (tmp_path / "r").exists()


def test_a_key_no_cell_reads_is_refused(tmp_path, capsys):
    base = BASE | {"regularizer": {"name": "diggan", "start": 5}}
    path = write(tmp_path, GRID | {"base": base})
    code, lines, _ = run(capsys, "validate", str(path))
    assert code == 2 and lines == [
        f"{ERROR}s.yaml: base.regularizer.start: no cell reads it (regularizer.name=diggan); it "
        "is read with regularizer.name=lecam (remove it, or change regularizer.name)"]
    axis = GRID | {"space": {"regularizer.start": {"grid": [1, 2]}}}
    code, lines, _ = run(capsys, "validate", str(write(tmp_path, axis)))
    assert code == 2 and lines == [
        f"{ERROR}s.yaml: space.regularizer.start: no cell reads it (regularizer.name=diggan); "
        "it is read with regularizer.name=lecam (remove it, or change regularizer.name)"]


def test_a_key_some_cells_read_is_a_warning(tmp_path, capsys):
    doc = {"base": BASE | {"regularizer": {"name": "diggan", "ema": 0.5}},
           "space": {"regularizer.name": {"grid": ["none", "diggan", "lecam"]}},
           "tune": {"search": "grid"}}
    code, lines, err = run(capsys, "validate", str(write(tmp_path, doc)))
    assert code == 0 and lines == []
    assert (f"{WARNING}s.yaml: base.regularizer.ema: ignored in 1 of 3 cells "
            "(regularizer.name=none); it is read with regularizer.name=diggan or lecam") in err
    # --set pinning the method leaves the weight axis unread: a warning, the switch is the user's.
    code, lines, err = run(capsys, "validate", str(write(tmp_path, GRID)), "--set",
                           "regularizer.name=none")
    assert code == 0 and lines == [] and f"{WARNING}s.yaml: space.regularizer.weight: " in err


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_space_validates(path, capsys):
    code, lines, err = run(capsys, "validate", str(path))
    assert code == 0 and lines == [], err
    assert f"# {path}: valid" in err
