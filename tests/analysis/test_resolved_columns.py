"""A paper-rule sweep's table shows the value each cell used: resolved config values that
differ between cells (DigGAN's lambda = 1e5/p or 1e5/p^2) appear beside the swept factors."""

from __future__ import annotations

import pandas as pd
from test_analysis import frame

from analysis import stats, tables
from tuneable_gan.config import from_dict
from tuneable_gan.models import DataSpec
from tuneable_gan.resolve import resolve


def paper_weight(fraction: float, policy: str) -> float:
    cfg = from_dict({"regularizer.name": "diggan", "data.fraction": fraction,
                     "augment.diffaugment": policy})
    return resolve(cfg, DataSpec((1, 16, 16), 10)).regularizer.weight


def test_resolve_fills_the_paper_rule_once():
    assert paper_weight(0.1, "") == 1e5 / 10 and paper_weight(0.2, "") == 1e5 / 20
    assert paper_weight(0.1, "translation,cutout") == 1e5 / 10 ** 2
    cfg = resolve(from_dict({"regularizer.name": "diggan", "regularizer.weight": 7.0}),
                  DataSpec((1, 16, 16), 10))
    assert (cfg.regularizer.weight, cfg.regularizer.ema, cfg.regularizer.every) == (7.0, 0.5,
                                                                                     "first")
    assert resolve(cfg, DataSpec((1, 16, 16), 10)) == cfg  # idempotent


def test_table_of_a_paper_rule_sweep_shows_the_lambda_of_each_cell():
    cells = [(f, paper_weight(f, "")) for f in (0.1, 0.2)]
    df = frame([{"cell": {"data.fraction": f, "regularizer.weight": w, "model.conditional": False},
                 "seed": s, "status": "finished", "fids": [10.0 * f + s]}
                for f, w in cells for s in range(2)], factors=("data.fraction",))
    agg = stats.aggregate(df, ["fid"])
    assert agg.attrs["derived"] == ["regularizer.weight"]  # conditional is the same everywhere
    assert agg["regularizer.weight"].tolist() == [10000.0, 5000.0]
    table = tables.ablation_table(agg)
    assert table.columns[:3] == ["fraction", "weight (resolved)", "n (seeds)"]
    assert [r[:2] for r in table.rows] == [["0.1", "10000"], ["0.2", "5000"]]
    csv = pd.DataFrame(table.raw)
    assert csv["regularizer.weight"].tolist() == [10000.0, 5000.0]


def test_a_resolved_value_that_varies_within_a_cell_is_not_shown_as_the_cells():
    df = frame([{"cell": {"data.fraction": 0.1, "regularizer.weight": w}, "seed": s,
                 "status": "finished", "fids": [1.0 + s]}
                for s, w in enumerate((1.0, 2.0))], factors=("data.fraction",))
    agg = stats.aggregate(df, ["fid"])
    assert agg.attrs["derived"] == [] and "regularizer.weight" not in agg
