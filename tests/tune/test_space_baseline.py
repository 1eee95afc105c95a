"""The ``baseline:`` of a search space: a grid cell the report compares the others with,
validated when the space loads, stored with the sweep, dropped where a derived spec lost it."""

from __future__ import annotations

import pytest
import yaml

from tuneable_gan.errors import ConfigError
from tuneable_gan.tune.space import load_space, spec_from_dict

DOC = {"name": "b", "base": {"data": {"name": "digits"}, "regularizer": {"name": "diggan"}},
       "space": {"regularizer.weight": {"grid": [0, 10.0, 100.0]},
                 "regularizer.pairing": {"grid": ["random", "magnitude"]},
                 "train.seed": {"seeds": 2}}}


def load(tmp_path, baseline):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(DOC | {"baseline": baseline}, sort_keys=False))
    return load_space(p)


def test_a_declared_baseline_is_normalised_stored_and_read_back(tmp_path):
    spec = load(tmp_path, {"regularizer.weight": 0})
    assert spec.baseline == {"regularizer.weight": 0.0}  # the axis's own value
    assert spec.to_dict()["baseline"] == {"regularizer.weight": 0.0}
    assert spec_from_dict(spec.to_dict(), source="stored").baseline == spec.baseline
    assert load(tmp_path, None).baseline == {}


@pytest.mark.parametrize("baseline, line", [
    ({"regularizer.name": "none"}, "baseline.regularizer.name: must be a grid axis and one of "
     "its values (grid axes: regularizer.weight, regularizer.pairing); got 'none'"),
    ({"regularizer.weight": 5.0}, "baseline.regularizer.weight: must be a grid axis and one of "
     "its values (grid axes: regularizer.weight, regularizer.pairing); got 5.0 (its values: "
     "[0.0, 10.0, 100.0])"),
    ("none", "baseline must be a mapping of grid axes to one of their values"),
])
def test_a_bad_baseline_is_one_line_naming_the_key(tmp_path, baseline, line):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, baseline)
    assert any(p.startswith(f"s.yaml: {line}") for p in e.value.problems), e.value.problems


def test_a_derived_spec_drops_what_it_no_longer_has(tmp_path):
    spec = load(tmp_path, {"regularizer.weight": 100.0, "regularizer.pairing": "random"})
    assert spec.smoke().baseline == {"regularizer.pairing": "random"}  # smoke keeps 0 and 10
    assert spec.with_overrides(["regularizer.pairing=magnitude"]).baseline == {
        "regularizer.weight": 100.0}
