"""analysis.stats on hand-made frames whose statistics are known: intervals, Holm, the paired
tests, stopped trials, protocol checks and baselines within slices."""

from __future__ import annotations

import numpy as np
import pytest
from frames import frame
from scipy import stats as st

from analysis import stats
from tuneable_gan.errors import UserError


def test_bootstrap_ci_covers_the_true_mean_in_most_repeats():
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(100):
        lo, hi = stats.bootstrap_ci(rng.normal(5.0, 2.0, size=30), seed=rep, n_resamples=2000)
        hits += lo <= 5.0 <= hi
    assert hits >= 85
    assert stats.bootstrap_ci([1.0, 2.0, 3.0], seed=1) == stats.bootstrap_ci([1.0, 2.0, 3.0],
                                                                             seed=1)
    assert all(np.isnan(stats.bootstrap_ci([1.0])))


def test_holm_against_a_hand_computation():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    got = stats.holm([0.5, np.nan, 0.001, 0.2])  # NaN is no hypothesis: m = 3
    np.testing.assert_allclose(got, [0.5, np.nan, 0.003, 0.4])


def test_paired_test_p_value_is_scipys():
    x, y = [3.1, 2.4, 5.0, 4.2], [2.0, 2.5, 3.9, 3.0]
    p, name = stats.paired_test(x, y)
    assert name == "paired t" and p == pytest.approx(st.ttest_rel(x, y).pvalue, rel=1e-12)
    x8, y8 = np.arange(8.0), np.arange(8.0) + [0.5, 1, -0.2, 2, 1.5, 0.1, 3, 0.7]
    p, name = stats.paired_test(x8, y8)
    assert name == "Wilcoxon" and p == pytest.approx(st.wilcoxon(x8, y8).pvalue, rel=1e-12)
    assert np.isnan(stats.paired_test([1.0], [2.0])[0])


def test_stopped_trials_are_counted_not_averaged():
    df = frame([{"cell": {"regularizer.weight": 0.0}, "seed": s, "status": "finished",
                 "fids": [90.0, 80.0, 70.0 + 2 * s]} for s in range(4)]
               + [{"cell": {"regularizer.weight": 10.0}, "seed": s, "status": "finished",
                   "fids": [80.0, 60.0, 50.0 + s]} for s in range(2)]
               + [{"cell": {"regularizer.weight": 10.0}, "seed": s, "status": "stopped",
                   "fids": [200.0, 190.0]} for s in (2, 3)])
    agg = stats.aggregate(df, ["fid"]).set_index("regularizer.weight")
    assert agg.loc[10.0, "stopped"] == "2/4 seeds stopped at 200"
    assert agg.loc[10.0, "n"] == 2 and agg.loc[10.0, "fid_mean"] == pytest.approx(50.5)
    assert agg.loc[0.0, "stopped"] == "" and agg.loc[0.0, "fid_mean"] == pytest.approx(73.0)
    assert agg.loc[0.0, "fid_std"] == pytest.approx(np.std([70, 72, 74, 76], ddof=1))
    at = stats.aggregate(df, ["fid"], at_step=stats.common_step(df)).set_index(
        "regularizer.weight")  # the common budget: step 200, every trial counts
    assert stats.common_step(df) == 200 and at.loc[10.0, "n"] == 4
    assert at.loc[10.0, "fid_mean"] == pytest.approx((60 + 60 + 190 + 190) / 4)
    cmp = stats.compare(df, None, "fid").set_index("regularizer.weight")
    assert cmp.loc[0.0, "is_baseline"]  # default baseline: weight 0
    assert cmp.loc[10.0, "n_pairs"] == 2  # seeds 0 and 1 finished in both cells
    assert cmp.loc[10.0, "delta"] == pytest.approx(-20.5)
    assert cmp.loc[10.0, "p"] == pytest.approx(st.ttest_rel([50, 51], [70, 72]).pvalue)
    assert cmp.loc[10.0, "test"] == "paired t"


def test_mixed_eval_protocols_are_refused_in_one_line():
    df = frame([{"cell": {"regularizer.weight": w}, "seed": 0, "status": "finished",
                 "fids": [1.0], "protocol": p} for w, p in ((0.0, "a-n1000"), (1.0, "b-n50"))])
    with pytest.raises(UserError, match="eval_protocol") as e:
        stats.aggregate(df)
    assert "\n" not in str(e.value) and "a-n1000" in str(e.value)
    with pytest.raises(UserError):
        stats.compare(df, {"regularizer.weight": 0.0})


def test_conditioning_may_differ_between_cells_but_not_within_one():
    """An instance prior swept against none: one measurement, conditioning per cell."""
    m = "digits-ab12-n1000-train-r16-digits-geval"
    cells = [(0.0, m), (1.0, f"{m} + prior=digits,sampler=gmm(K=10,diag)")]
    df = frame([{"cell": {"regularizer.weight": w}, "seed": s, "status": "finished",
                 "fids": [1.0 + s], "protocol": p} for w, p in cells for s in (0, 1)])
    assert stats.check_protocol(df) == (
        f"{m} (conditioning per cell: none; prior=digits,sampler=gmm(K=10,diag))")
    assert len(stats.aggregate(df)) == 2
    df.loc[df["train.seed"] == 1, "eval_protocol"] = m  # one cell, two conditionings
    with pytest.raises(UserError, match="one cell evaluated with different conditioning"):
        stats.aggregate(df)
    df["eval_protocol"] = [m, m, f"{m.replace('n1000', 'n50')} + prior=digits", m]
    with pytest.raises(UserError, match="2 different eval_protocol fingerprints"):
        stats.aggregate(df)


def test_a_baseline_that_leaves_factors_free_is_compared_within_each_slice():
    """--baseline prior.network=none over two fractions: each cell against the none cell of
    its own fraction, seed by seed."""
    fids = {("none", 0.1): [3.0, 3.2, 3.1], ("digits", 0.1): [6.0, 5.9, 6.4],
            ("none", 0.02): [11.0, 11.5, 11.1], ("digits", 0.02): [12.0, 12.9, 12.2]}
    df = frame([{"cell": {"prior.network": n, "data.fraction": f}, "seed": s,
                 "status": "finished", "fids": [v[s]]} for (n, f), v in fids.items()
                for s in range(3)], factors=("prior.network", "data.fraction"))
    cmp = stats.compare(df, {"prior.network": "none"}).set_index(
        ["prior.network", "data.fraction"])
    for f in (0.1, 0.02):
        diff = np.subtract(fids[("digits", f)], fids[("none", f)])
        assert cmp.loc[("digits", f), "delta"] == pytest.approx(diff.mean())
        assert cmp.loc[("digits", f), "p"] == pytest.approx(
            st.ttest_rel(fids[("digits", f)], fids[("none", f)]).pvalue)
        assert cmp.loc[("none", f), "is_baseline"]
    assert cmp.attrs["baseline_label"] == "network=none with the same fraction"
    assert cmp.attrs["note"] == ""
    # Keys that pin one cell keep the single baseline.
    one = stats.compare(df, {"prior.network": "none", "data.fraction": 0.1})
    assert one["is_baseline"].sum() == 1
