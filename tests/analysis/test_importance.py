"""analysis.importance: fANOVA credits the factor that moves the metric."""

from __future__ import annotations

import numpy as np
from frames import frame

from analysis import importance


def test_fanova_importance_finds_the_factor_that_matters():
    rng = np.random.default_rng(0)
    trials = [{"cell": {"regularizer.weight": w, "regularizer.pairing": p}, "seed": s,
               "status": "finished", "fids": [100.0 * i + rng.normal(0, 0.1)]}
              for i, w in enumerate((1.0, 10.0, 100.0)) for p in ("random", "magnitude")
              for s in range(2)]
    df = frame(trials, ("regularizer.weight", "regularizer.pairing"))
    imp, why = importance.importance(df, "fid")
    assert why == "" and imp["regularizer.weight"] > 0.9
    one = frame(trials[:4])
    assert importance.importance(one, "fid")[1].startswith("needs at least two swept factors")
