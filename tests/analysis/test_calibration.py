"""The report's proxy-calibration section: rung vs final Spearman correlation with a bootstrap
CI, the final best's rank at each rung, the expected best against trial-hours, and the rungs
themselves, each against an oracle written from the definition."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis import frame  # noqa: F401  (the fixture module's row builder)

from analysis.calibration import best_vs_budget, proxy_calibration, rung_iterations, section
from analysis.report import build_report

FIXTURES = Path(__file__).parents[1] / "fixtures"


def spearman_by_formula(x: list[float], y: list[float]) -> float:
    """1 - 6 sum d^2 / (n (n^2 - 1)), valid without ties."""
    rx = np.argsort(np.argsort(x)) + 1
    ry = np.argsort(np.argsort(y)) + 1
    n = len(x)
    return 1 - 6 * float(((rx - ry) ** 2).sum()) / (n * (n * n - 1))


def trials(rung2: list[float], final: list[float], status: str = "finished") -> list[dict]:
    return [{"cell": {"regularizer.weight": float(i)}, "seed": 0, "status": status,
             "fids": [300.0 + i, a, (a + b) / 2, b]} for i, (a, b) in enumerate(zip(rung2, final))]


def test_spearman_and_best_rank_at_each_rung_match_the_formula():
    rung2, final = [40.0, 35.0, 50.0, 45.0, 30.0], [20.0, 25.0, 28.0, 22.0, 21.0]
    df = frame(trials(rung2, final))
    cal = proxy_calibration(df, "fid", [1, 2, 3]).set_index("rung")
    assert list(cal.index) == [1, 2, 3] and list(cal["step"]) == [100, 200, 300]
    assert (cal["n"] == 5).all()
    want = spearman_by_formula(rung2, final)
    assert cal.loc[2, "spearman"] == pytest.approx(want) and want == pytest.approx(0.5)
    assert cal.loc[2, "ci_low"] <= want <= cal.loc[2, "ci_high"]
    # The final best (trial 0, fid 20) ranked 3rd of 5 at rung 2 (30, 35, 40 ...).
    assert cal.loc[2, "best_rank"] == 3
    assert cal.loc[1, "best_rank"] == 1 and cal.loc[1, "spearman"] == pytest.approx(
        spearman_by_formula([300, 301, 302, 303, 304], final))


def test_a_perfect_proxy_has_rho_one_and_a_degenerate_ci_and_max_metrics_flip():
    df = frame(trials([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]))
    row = proxy_calibration(df, "fid", [2]).iloc[0]
    assert (row["spearman"], row["ci_low"], row["ci_high"]) == pytest.approx((1.0, 1.0, 1.0))
    assert row["best_rank"] == 1
    df["is_mean"] = df["fid"]  # higher is better: the best is now the last trial
    row = proxy_calibration(df, "is_mean", [2]).iloc[0]
    assert row["spearman"] == pytest.approx(1.0) and row["best_rank"] == 1


def test_stopped_trials_do_not_enter_the_correlation():
    rows = trials([1.0, 2.0, 3.0], [10.0, 30.0, 20.0]) + [
        {"cell": {"regularizer.weight": 9.0}, "seed": 0, "status": "stopped", "fids": [1, 0.5]}]
    row = proxy_calibration(frame(rows), "fid", [2]).iloc[0]
    assert row["n"] == 3 and row["spearman"] == pytest.approx(
        spearman_by_formula([1, 2, 3], [10, 30, 20]))


def test_best_vs_budget_pays_every_trial_and_finds_only_finished_ones():
    rows = trials([1.0], [10.0]) + [{"cell": {"regularizer.weight": 5.0}, "seed": 0,
                                     "status": "stopped", "fids": [1.0, 0.5]}]
    df = frame(rows)
    df["time_total_s"] = 3600.0  # one trial-hour each
    curve = best_vs_budget(df, "fid", n_orders=2000, points=3)
    assert list(curve["hours"]) == [0.0, 1.0, 2.0]
    assert list(curve["found"])[0] == 0.0 and list(curve["found"])[2] == 1.0
    assert curve["found"].iloc[1] == pytest.approx(0.5, abs=0.05)  # the finished one first
    # The stopped trial's 0.5 is never "found": only the finished trial's final 10 is.
    assert curve["median"].iloc[2] == 10.0 and math.isnan(curve["median"].iloc[0])


def test_rungs_are_the_report_counts_where_rays_asha_judges():
    from ray.tune.schedulers import ASHAScheduler

    for grace, rf, max_t in [(2, 2, 6), (1, 3, 10), (1, 2, 8), (3, 1.5, 12)]:
        tune = {"scheduler": {"asha": {"grace_period": grace, "reduction_factor": rf,
                                       "max_t": max_t}}}
        ray_rungs = sorted(math.ceil(m) for m, _ in ASHAScheduler(
            grace_period=grace, reduction_factor=rf, max_t=max_t)._brackets[0]._rungs)
        assert rung_iterations(tune, max_t) == [r for r in ray_rungs if r < max_t]
    assert rung_iterations({"scheduler": "fifo"}, 4) == [1, 2, 3]


def test_the_report_has_the_section_and_says_when_trials_are_too_few(tmp_path):
    rung2, final = [40.0, 35.0, 50.0, 45.0, 30.0], [20.0, 25.0, 28.0, 22.0, 21.0]
    df = frame(trials(rung2, final))
    df.attrs["tune"] = {"scheduler": {"asha": {"grace_period": 2, "reduction_factor": 2}}}
    blocks = section(df, "fid", tmp_path)
    assert blocks[0] == ("h2", "Proxy calibration")
    summary = blocks[1][1]
    assert "step 200: rho 0.50" in summary and "final best ranked 3 of 5" in summary
    assert "keeps 2: it would NOT have survived" in summary
    assert (tmp_path / "calibration.csv").is_file()
    assert (tmp_path / "plots" / "calibration.png").is_file()
    assert pd.read_csv(tmp_path / "calibration.csv")["rung"].tolist() == [2]
    # The recorded ASHA experiment finished two trials: the section says why it is empty.
    md = (build_report(str(FIXTURES / "experiment"), out=str(tmp_path / "rep")).parent
          / "report.md").read_text()
    assert ("## Proxy calibration\n\nNeeds at least 3 finished trials with a report before "
            "their last; this sweep has 2.") in md
