"""The verdict at the top of a report: generated from the statistics, it names the best cell,
its paired difference from the baseline with a 95% t interval, the test and its Holm p, says
in words whether anything is significant, what early stopping removed, and warns when a
conclusion rests on one seed or when protocols differ."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from frames import frame
from scipy import stats as st

from analysis import importance, stats, verdict
from analysis.report import build_report

RECORDED = Path(__file__).parents[1] / "fixtures" / "experiment"


def _say(df, baseline, seeds=3, stopped=0, conditioning=("none",)):
    agg = stats.aggregate(df, ["fid"])
    cmp = stats.compare(df, baseline, "fid")
    return verdict.verdict(agg, cmp, "fid", "finished trials", seeds, stopped, len(df),
                           list(conditioning))


def _trials(fids: dict[float, list[float]], status: str = "finished") -> list[dict]:
    return [{"cell": {"regularizer.weight": w}, "seed": s, "status": status, "fids": [v]}
            for w, vs in fids.items() for s, v in enumerate(vs)]


def test_t_interval_is_the_textbook_one():
    d = np.array([-1.0, -0.4, -0.7])
    half = st.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert stats.t_interval(d) == pytest.approx((d.mean() - half, d.mean() + half))
    assert all(math.isnan(v) for v in stats.t_interval([1.0]))


def test_a_clear_win_is_named_with_its_interval_test_and_holm_p():
    base, diggan = [5.0, 5.2, 5.1, 5.3], [3.0, 3.3, 3.1, 3.2]
    df = frame(_trials({0.0: base, 1e3: diggan}))
    said = _say(df, {"regularizer.weight": 0.0}, seeds=4)
    d = np.subtract(diggan, base)
    lo, hi = stats.t_interval(d)
    p = st.ttest_rel(diggan, base).pvalue
    # The answer first: who beat the baseline, by how much, how sure.
    assert said[0] == (f"Answer: yes, weight=1000 beat the baseline (weight=0) on this run: fid "
                       f"{d.mean():+.3g} (95% CI [{lo:.3g}, {hi:.3g}]) over 4 matched seed(s); "
                       f"Holm-corrected p = {p:.3g}, significant at 0.05.")
    assert said[1] == ("Best cell by mean fid (finished trials, lower is better): weight=1000, "
                       f"fid {np.mean(diggan):.3g} over 4 of 4 seed(s).")
    assert said[2] == (f"Against the baseline (weight=0) over 4 matched seed(s): fid "
                       f"{d.mean():+.3g}, 95% CI [{lo:.3g}, {hi:.3g}]; paired t test p = "
                       f"{p:.3g}, Holm-corrected p = {p:.3g}.")
    assert said[3].startswith("Significant at 0.05 after Holm's correction over the 1 cell(s) "
                              "tested: weight=1000 is better than the baseline (fid -2, p_holm")
    assert len(said) == 4  # no warnings: 4 seeds, nothing stopped, one protocol


def test_noise_is_called_noise():
    base, diggan = [5.0, 4.0, 6.0], [4.9, 4.2, 5.6]
    df = frame(_trials({0.0: base, 1e3: diggan}))
    said = _say(df, {"regularizer.weight": 0.0})
    d = np.subtract(diggan, base)
    lo, hi = stats.t_interval(d)
    p = st.ttest_rel(diggan, base).pvalue
    assert said[0] == ("Answer: no cell beat the baseline (weight=0) beyond seed-to-seed noise; "
                       f"the best, weight=1000, is fid {d.mean():+.3g} (95% CI [{lo:.3g}, "
                       f"{hi:.3g}]) over 3 matched seed(s); Holm-corrected p = {p:.3g}, not "
                       "significant at 0.05.")
    assert said[-1] == ("No difference from the baseline is significant at 0.05 after Holm's "
                        "correction over the 1 cell(s) tested: at this number of seeds the "
                        "differences are within seed-to-seed noise.")


def test_holm_corrects_over_the_cells_tested():
    fids = {0.0: [5.0, 5.2, 5.1], 10.0: [4.0, 4.3, 4.1], 100.0: [4.9, 5.3, 5.0]}
    df = frame(_trials(fids))
    cmp = stats.compare(df, {"regularizer.weight": 0.0}, "fid").set_index("regularizer.weight")
    ps = [st.ttest_rel(fids[w], fids[0.0]).pvalue for w in (10.0, 100.0)]
    assert cmp.loc[10.0, "p_holm"] == pytest.approx(min(1.0, 2 * min(ps)))


def test_one_seed_and_early_stopping_are_said_plainly():
    trials = _trials({0.0: [5.0, 5.1], 1e3: [3.0]}) + [
        {"cell": {"regularizer.weight": 1e3}, "seed": 1, "status": "stopped", "fids": [9.0]}]
    df = frame(trials)
    said = _say(df, {"regularizer.weight": 0.0}, seeds=2, stopped=1)
    assert said[0].endswith("over 1 matched seed(s); no test (fewer than 2 matched seeds), "
                            "not significant at 0.05.")
    assert "over 1 of 2 seed(s)" in said[1]
    assert said[2].endswith("(one matched seed: no interval); no test (fewer than 2 matched "
                            "seeds).")
    assert any(s.startswith("Early stopping removed 1 of 4 trials") for s in said)
    assert said[-1].startswith("Warning: the best cell's fid rests on one seed")


def test_the_baseline_winning_and_different_conditioning_are_said():
    df = frame(_trials({0.0: [3.0, 3.1, 3.2], 1e3: [5.0, 5.2, 5.1]}))
    said = _say(df, {"regularizer.weight": 0.0}, conditioning=("none", "prior=digits"))
    assert said[0].startswith("Answer: no, no cell beat the baseline (weight=0) on this run; the "
                              "closest, weight=1000, is worse by fid +2 (95% CI [")
    assert said[0].endswith("(significantly worse).")
    assert said[2] == "The best cell is the baseline (weight=0): no other cell beats it."
    assert said[3].startswith("Significant at 0.05 after Holm's correction over the 1 cell(s) "
                              "tested: weight=1000 is worse than the baseline (fid +2, p_holm")
    assert said[-1].startswith("Note: the cells' protocols differ in their conditioning "
                               "(none; prior=digits)")


def test_a_report_opens_with_its_verdict_and_uses_the_declared_baseline(tmp_path):
    exp = tmp_path / "tiny"
    shutil.copytree(RECORDED, exp)
    spec = exp / "tuneable_gan_sweep.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["baseline"] = {"regularizer.weight": 10.0}  # declared: the report takes it over 0
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    md = (build_report(str(exp)).parent / "report.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "# Sweep report: tiny" and lines[2] == "## Verdict"
    assert lines[4].startswith("Answer: ") and "baseline (weight=10)" in lines[4]
    assert lines[6].startswith("Best cell by mean fid (finished trials, lower is better): ")
    assert "| baseline | weight=10 |" in md


def test_importance_is_refused_where_the_design_cannot_support_it():
    # the old quickstart's design: an EMA factor drawn once per (weight, pairing) cell
    ema = {(1e2, "random"): 0.9, (1e2, "magnitude"): 0.0, (1e3, "random"): 0.5,
           (1e3, "magnitude"): 0.5}
    trials = [{"cell": {"regularizer.weight": w, "regularizer.pairing": p,
                        "regularizer.ema": e}, "seed": s, "status": "finished",
               "fids": [3.0 + s + (w > 500)]}
              for (w, p), e in ema.items() for s in range(2)]
    df = frame(trials, ("regularizer.weight", "regularizer.pairing", "regularizer.ema"))
    df.attrs["axes"]["regularizer.ema"] = {"choice": [0.0, 0.5, 0.9]}
    imp, why = importance.importance(df, "fid", min_cells=4)
    assert imp == {} and why.startswith("regularizer.ema is confounded with "
                                        "regularizer.weight, regularizer.pairing")
    imp, why = importance.importance(df, "fid")
    assert why == ("needs at least 6 distinct cells among the usable trials, has 4: too few "
                   "to apportion variance")


def test_memorisation_names_the_cells_whose_whole_interval_is_below_one():
    df = frame(_trials({0.0: [5.0, 5.2, 5.1], 1e3: [6.0, 6.1, 6.2], 1e4: [6.0, 6.1, 6.3]}))
    ratios = {0.0: [0.70, 0.80, 0.75], 1e3: [0.90, 1.05, 1.00], 1e4: [1.1, 1.2, 1.3]}
    df["nn_ratio"] = [ratios[w][s] for w, s in zip(df["regularizer.weight"], df["train.seed"])]
    agg = stats.aggregate(df, ["fid", "nn_ratio"])
    said = verdict.verdict(agg, None, "fid", "finished trials", 3, 0, len(df), ["none"])
    hi = stats.t_interval(ratios[1e3])[1]
    assert hi > 1.0  # 1e3's mean is below 1, its interval is not: not named
    line = [x for x in said if x.startswith("Memorisation")]
    assert line == ["Memorisation (eval.nn): the samples of weight=0 (nn_ratio 0.75) sit closer "
                    "to the training images than held-out real images do (nn_ratio below 1 "
                    "with its 95% interval): part of a low FID there is copying."]
    df["nn_ratio"] = 1.2
    said = verdict.verdict(stats.aggregate(df, ["fid", "nn_ratio"]), None, "fid",
                           "finished trials", 3, 0, len(df), ["none"])
    assert [x for x in said if x.startswith("Memorisation")][0].startswith(
        "Memorisation (eval.nn): no cell's samples")
    assert not [x for x in _say(frame(_trials({0.0: [5.0, 5.1]})), {"regularizer.weight": 0.0})
                if x.startswith("Memorisation")]
