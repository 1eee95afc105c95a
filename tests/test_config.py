"""Config schema: loading, overrides, validation messages."""

from __future__ import annotations

import pytest

from tuneable_gan.config import Config, from_dict, load_config, parse_override, valid_keys
from tuneable_gan.errors import ConfigError


def problems(d: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        from_dict(d)
    return e.value.problems


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = Config()
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg


def test_nested_and_dotted_keys_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {fraction: 0.1}\nregularizer.name: diggan\neval: {is: false}\n")
    cfg = load_config(p, ["regularizer.weight=100", "optim.betas=[0.5, 0.9]", "train.steps=2e3"])
    assert cfg.data.fraction == 0.1 and cfg.regularizer.name == "diggan"
    assert cfg.regularizer.weight == 100.0 and isinstance(cfg.regularizer.weight, float)
    assert cfg.optim.betas == (0.5, 0.9)
    assert cfg.train.steps == 2000 and cfg.eval.is_ is False
    assert cfg.flat()["eval.is"] is False and "eval.is" in valid_keys()


def test_unknown_key_suggests_the_closest():
    (msg,) = problems({"regularizer.wieght": 3})
    assert msg == "unknown key 'regularizer.wieght' (did you mean 'regularizer.weight'?)"
    (msg,) = problems({"data": {"fractoin": 0.5}})
    assert "did you mean 'data.fraction'" in msg


@pytest.mark.parametrize("key,value,expect", [
    ("data.fraction", 0, "data.fraction must be in (0.0, 1.0], got 0.0"),
    ("data.fraction", 1.5, "data.fraction must be in (0.0, 1.0], got 1.5"),
    ("regularizer.weight", -1, "regularizer.weight must be in [0.0, inf], got -1.0"),
    ("regularizer.ema", 1.0, "regularizer.ema must be in [0.0, 1.0), got 1.0"),
    ("optim.batch_size", 0, "optim.batch_size must be in [1, inf], got 0"),
    ("optim.batch_size", 2.5, "optim.batch_size must be an integer, got 2.5"),
    ("data.name", "mnist", "data.name must be one of digits, toy2pt, faces100, cifar10, "
                           "cifar100, folder; got 'mnist'"),
    ("model.arch", "resnet", "model.arch must be one of dcgan, toy, sngan, biggan, "
                           "stylegan2; got 'resnet'"),
    ("regularizer.pairing", "x", "regularizer.pairing must be one of random, same_class, "
                                 "magnitude; got 'x'"),
    ("data.flip", "yes", "data.flip must be true or false, got 'yes'"),
    ("optim.betas", [0.5], "optim.betas must be two numbers in [0, 1), got [0.5]"),
])
def test_each_bad_value_names_key_and_valid_values(key, value, expect):
    assert problems({key: value}) == [expect]


def test_every_problem_is_reported_once():
    msgs = problems({"data.fraction": 0, "regularizer.ema": 2.0, "nope.x": 1})
    assert len(msgs) == 3


def test_cross_field_checks():
    assert "needs model.conditional=true" in problems({"regularizer.pairing": "same_class"})[0]
    assert from_dict({"regularizer.pairing": "same_class", "model.arch": "biggan"})
    assert "unknown op 'zoom'" in problems({"augment.diffaugment": "translation,zoom"})[0]
    assert "go together" in problems({"model.arch": "toy"})[0]


def test_replace_validates():
    cfg = Config().replace(**{"train.steps": 7})
    assert cfg.train.steps == 7
    with pytest.raises(ConfigError):
        Config().replace(**{"train.steps": 0})


def test_parse_override():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("augment.diffaugment=") == ("augment.diffaugment", "")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("nokey")


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(lst)
