"""Search-space documents and loaders shared by test_space.py and test_space_rules.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuneable_gan.errors import ConfigError
from tuneable_gan.tune.space import load_space

BASE = {"data": {"name": "digits", "fraction": 0.1}, "model": {"arch": "dcgan"},
        "regularizer": {"name": "diggan"},
        "train": {"steps": 300, "eval_every": 100, "checkpoint_every": 100}}
VALID = {
    "name": "t",
    "base": BASE,
    "space": {"regularizer.weight": {"loguniform": [1.0, 1.0e5]},
              "regularizer.pairing": {"grid": ["random", "magnitude"]},
              "regularizer.ema": {"choice": [0.0, 0.5, 0.9]},
              "optim.g_lr": {"uniform": [1.0e-4, 4.0e-4]},
              "optim.d_steps": {"randint": [1, 4]},
              "train.seed": {"seeds": 3}},
    "tune": {"search": "random", "num_samples": 4,
             "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 3}}},
}
GRID = {"name": "g", "base": BASE,
        "space": {"regularizer.weight": {"grid": [10.0, 100.0]},
                  "regularizer.pairing": {"grid": ["random", "magnitude"]},
                  "train.seed": {"seeds": 2}},
        "tune": {"search": "grid"}}


def write(tmp_path: Path, doc: dict, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def load(tmp_path: Path, doc: dict):
    return load_space(write(tmp_path, doc))


def problems(tmp_path: Path, doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, doc)
    return e.value.problems
