"""'Paper vs this run': a space's published numbers (its ``paper:`` section) validated when it
loads, and set beside the sweep's own numbers for the same cells, each side with its protocol."""

from __future__ import annotations

import pytest
import yaml
from frames import frame

from analysis import paper, stats
from tuneable_gan.errors import ConfigError
from tuneable_gan.tune.space import load_space

PAPER = {"source": "DigGAN Table 5", "protocol": "FID 10k vs test, best checkpoint",
         "metric": "fid_best",
         "values": [{"when": {"regularizer.weight": 0}, "value": 9.74, "column": "none"},
                    {"when": {"regularizer.weight": 10.0}, "value": 8.0, "column": "λ 10"}]}
DOC = {"name": "p", "base": {"data": {"name": "digits"}, "regularizer": {"name": "diggan"}},
       "space": {"regularizer.weight": {"grid": [0.0, 10.0]}, "train.seed": {"seeds": 2}}}


def load(tmp_path, section):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(DOC | {"paper": section}, sort_keys=False))
    return load_space(p)


def test_the_section_is_parsed_normalised_and_stored(tmp_path):
    spec = load(tmp_path, PAPER)
    assert spec.paper.metric == "fid_best" and len(spec.paper.values) == 2
    assert spec.paper.values[0].when == {"regularizer.weight": 0.0}
    assert spec.to_dict()["paper"]["values"][1] == {"when": {"regularizer.weight": 10.0},
                                                    "value": 8.0, "column": "λ 10"}
    # --smoke keeps both weights; pinning the axis leaves no cell to name: no section
    assert spec.smoke().paper == spec.paper
    assert spec.with_overrides(["regularizer.weight=10"]).paper is None


@pytest.mark.parametrize("change, line", [
    ({"metric": "fidd"}, "paper.metric must be a reported metric"),
    ({"protocol": ""}, "paper.protocol must say how it measured (a non-empty string)"),
    ({"values": [{"when": {"regularizer.weight": 5.0}, "value": 1.0}]},
     "paper.values[0].when.regularizer.weight: must be a grid axis and one of its values"),
    ({"values": [{"when": {"regularizer.weight": 0.0}, "value": "9"}]},
     "paper.values[0].value must be a number, got '9'"),
])
def test_a_bad_section_is_one_line_naming_the_key(tmp_path, change, line):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, PAPER | change)
    assert any(p.startswith(f"s.yaml: {line}") for p in e.value.problems), e.value.problems


def test_each_paper_value_is_set_beside_this_runs_cell():
    trials = [{"cell": {"regularizer.weight": w}, "seed": s, "status": "finished",
               "fids": [f]} for w, fs in ((0.0, [11.0, 12.0]), (10.0, [9.0, 9.5]))
              for s, f in enumerate(fs)]
    df = frame(trials)
    df.attrs["paper"] = {**PAPER, "values": [
        {"when": {"regularizer.weight": 0.0}, "value": 9.74, "column": "none"},
        {"when": {"regularizer.weight": 10.0}, "value": 8.0, "column": "λ 10"}]}
    cmp = paper.comparison(df)
    lo, hi = stats.bootstrap_ci([11.0, 12.0])
    assert cmp["cell"].tolist() == ["weight=0", "weight=10"]
    assert cmp["paper"].tolist() == [9.74, 8.0] and cmp["n"].tolist() == [2, 2]
    assert cmp.loc[0, "mean"] == pytest.approx(11.5) and cmp.loc[0, "ci_low"] == pytest.approx(lo)
    assert cmp["delta"].tolist() == pytest.approx([11.5 - 9.74, 9.25 - 8.0])
    blocks = paper.section(df, "digits-n1000")
    assert blocks[0] == ("h2", "Paper vs this run")
    assert blocks[2] == ("kv", [("paper", "FID 10k vs test, best checkpoint"),
                                ("this run", "digits-n1000; fid_best at the last report of "
                                             "each finished trial")])
    assert paper.section(frame(trials), None) == []  # no paper values: no section


@pytest.mark.parametrize("stem, n", [("cifar10_table1", 18), ("cifar100_table2", 18),
                                     ("pairing_table5", 6), ("regularizers_table10", 10)])
def test_the_paper_spaces_carry_their_tables(stem, n):
    from pathlib import Path

    spec = load_space(Path(__file__).parents[2] / "search_spaces" / f"{stem}.yaml")
    assert spec.paper is not None and len(spec.paper.values) == n
    assert spec.paper.metric == spec.tune.metric == "fid_best"
    cells = spec.grid_cells()
    for v in spec.paper.values:  # every number belongs to a cell the sweep runs
        assert any(all(stats.same_value(c[k], x) for k, x in v.when.items()) for c in cells)
