"""Figures and tables of a report: one colour per cell in every figure, the learning curves'
y scale, the real-data grid beside the samples, the t interval of a few seeds' mean and the
tables' n and "—" explanations. On the recorded sweep (tests/fixtures/experiment), with a
checkpoint written into its copy where the sample grids need one, and on hand-made frames."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex
from scipy import stats as st
from test_analysis import RECORDED, _result_rows, frame

from analysis import plot_base, plot_samples, plots, stats, tables
from analysis.collect import collect
from tuneable_gan.checkpoint import write_checkpoint
from tuneable_gan.config import from_dict, valid_keys
from tuneable_gan.data import load_data
from tuneable_gan.models import DataSpec, build_models


@pytest.fixture
def figures(monkeypatch) -> dict[str, Any]:
    """name -> the matplotlib figure each plot function saved (captured as it is saved)."""
    seen: dict[str, Any] = {}
    real = plot_base.save_figure

    def capture(fig: Any, out_dir: Path, name: str, svg: bool = True) -> list[Path]:
        seen[name] = fig
        return real(fig, out_dir, name, svg)

    monkeypatch.setattr(plots, "save_figure", capture)
    monkeypatch.setattr(plot_samples, "save_figure", capture)
    return seen


def _with_checkpoints(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the recorded sweep with a checkpoint (an untrained G_ema, the trial's
    reported config, its last step) in every trial; the configs by trial directory."""
    exp = tmp_path / "tiny"
    shutil.copytree(RECORDED, exp)
    configs = {}
    for d in sorted(exp.glob("trial_*")):
        last = _result_rows(d)[-1]
        cfg = from_dict({k: last[k] for k in valid_keys() if k in last})
        data = load_data(cfg.data, "train")
        torch.manual_seed(0)
        G, _ = build_models(cfg.model, DataSpec(data.shape, data.num_classes))
        write_checkpoint(d / "checkpoint_000000", {"G_ema": G.state_dict(),
                                                   "step": int(last["step"])}, cfg)
        configs[d.name] = cfg
    return exp, configs


def _line_colors(fig: Any) -> dict[str, str]:
    """Legend label -> colour of the labelled lines of a figure's first axes."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    return {lab: to_hex(h.get_color()) for h, lab in zip(handles, labels)}


def _hand_sweep() -> pd.DataFrame:
    """weight 0/1/10 x pairing x 2 seeds, finished; fid falls from 50 to 5 or less, dig > 0."""
    trials = [{"cell": {"regularizer.weight": w, "regularizer.pairing": p}, "seed": s,
               "status": "finished",
               "fids": [50.0 + s, 20.0 - i - j, 5.0 - i - j + 0.1 * s]}
              for i, w in enumerate((0.0, 1.0, 10.0)) for j, p in enumerate(("random", "mag"))
              for s in range(2)]
    df = frame(trials, ("regularizer.weight", "regularizer.pairing"))
    df["dig"] = 0.01 * (1 + df["step"] / 100) * (1 + df["regularizer.weight"])
    return df


# -- one colour per cell -------------------------------------------------------------------------


def test_cell_colors_are_a_stable_assignment_by_sorted_label():
    a = plot_base.cell_colors(["weight=10", "weight=0", "weight=1", "weight=0"])
    assert list(a) == ["weight=0", "weight=1", "weight=10"]
    assert list(a.values()) == list(plot_base.PALETTE[:3])
    assert plot_base.PALETTE[:3] == ("#1f77b4", "#ff7f0e", "#2ca02c")  # tab10 first
    assert len(set(plot_base.PALETTE)) == len(plot_base.PALETTE) == 60
    # A frame gives its cells over the swept factors (the seed is none of them).
    df = _hand_sweep()
    got = plot_base.cell_colors(df)
    assert len(got) == 6 and "weight=1, pairing=mag" in got
    assert got == plot_base.cell_colors(stats.trial_values(df, ["fid"]))


def test_every_figure_draws_a_cell_in_the_same_colour(tmp_path, figures):
    """The recorded sweep (with checkpoints): curves, DIG and the sample-grid titles."""
    exp, _ = _with_checkpoints(tmp_path)
    df = collect(exp)
    tv = stats.trial_values(df, ["fid"])
    want = plot_base.cell_colors(df)
    assert set(want) == {"weight=0", "weight=10"}
    res = {r.name: r for r in plots.make_plots(df, tv, tmp_path / "plots")}
    assert res["samples"].png is not None and not res["samples"].reason, res["samples"].reason
    for name in ("fid_curves", "dig_curves", "samples"):
        assert res[name].colors == want, name
    for name in ("fid_curves", "dig_curves"):
        assert _line_colors(figures[name]) == want, name
    titles = {a.get_title().split("\n")[0]: to_hex(a.title.get_color())
              for a in figures["samples"].axes if a.get_title()}
    assert {k: v for k, v in titles.items() if k in want} == want


def test_metric_vs_factor_colours_each_cell_as_the_curves_do(tmp_path, figures):
    df = _hand_sweep()
    tv = stats.trial_values(df, ["fid"])
    want = plot_base.cell_colors(df)
    res = {r.name: r for r in plots.make_plots(df, tv, tmp_path, samples=False)}
    assert res["fid_vs_weight"].png is not None
    assert res["fid_vs_weight"].colors == res["fid_curves"].colors == want
    assert res["dig_curves"].colors == want and _line_colors(figures["dig_curves"]) == want
    assert _line_colors(figures["fid_curves"]) == want
    ax = figures["fid_vs_weight"].axes[0]
    means = tv.groupby(["regularizer.weight", "regularizer.pairing"])["fid"].mean()
    drawn = {}
    for c in ax.containers:  # one error bar per cell with a positive weight
        x, y = c.lines[0].get_xdata()[0], c.lines[0].get_ydata()[0]
        (w, p), = [k for k, m in means.items() if k[0] == x and math.isclose(m, y)]
        drawn[stats.cell_label({"regularizer.weight": w, "regularizer.pairing": p})] = \
            to_hex(c.lines[0].get_color())
    assert len(drawn) == 4 and drawn == {k: v for k, v in want.items() if k in drawn}
    levels = {ln.get_label(): to_hex(ln.get_color()) for ln in ax.lines
              if ln.get_label().endswith("(dashed)")}  # weight 0: a dashed level per cell
    assert levels == {f"weight=0, pairing={p} (dashed)": want[f"weight=0, pairing={p}"]
                      for p in ("mag", "random")}
    # Only some cells drawn (a factor's other values): the colours stay the sweep's.
    part = plots.learning_curves(df[df["regularizer.weight"] == 10.0], tmp_path / "p",
                                 colors=want)
    assert part.colors == {k: v for k, v in want.items() if k.startswith("weight=10,")}


# -- the learning curves' y scale ----------------------------------------------------------------


def test_y_scale_is_log_only_for_positive_values_spanning_more_than_three_times():
    assert plot_base.y_scale([55.0, 20.0, 9.0, 5.0]) == "log"
    assert plot_base.y_scale([461.0, 460.2, 459.1]) == "linear"
    assert plot_base.y_scale([3.0, 1.0]) == "linear"  # a factor of exactly 3: linear
    assert plot_base.y_scale([3.01, 1.0, math.inf, math.nan]) == "log"
    assert plot_base.y_scale([10.0, 0.0]) == "linear" and plot_base.y_scale([-1.0, 9.0]) == \
        "linear"
    assert plot_base.y_scale([5.0]) == "linear"


def test_learning_curves_take_log_y_for_a_wide_range_and_linear_for_a_narrow_one(
        tmp_path, figures):
    wide = plots.learning_curves(_hand_sweep(), tmp_path)  # fid 50 -> 3
    ax = figures["fid_curves"].axes[0]
    assert wide.png is not None and ax.get_yscale() == "log" and ax.get_ylabel() == "fid (log)"
    df = collect(RECORDED)  # the recorded sweep: fid 461 -> 459
    vals = df["fid"].dropna()
    assert vals.max() < 3 * vals.min(), "the recording is no longer a narrow-range case"
    plots.learning_curves(df, tmp_path)
    ax = figures["fid_curves"].axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "fid"


# -- the sample grids: real data beside the generated ----------------------------------------


def test_sample_grids_show_the_runs_training_data_beside_the_samples(tmp_path, figures):
    exp, configs = _with_checkpoints(tmp_path)
    df = collect(exp)
    tv = stats.trial_values(df, ["fid"])
    res = plot_samples.sample_grids(tv, str(exp), tmp_path / "plots", "fid", df)
    assert res.png is not None and not res.reason, res.reason
    axes = [a for a in figures["samples"].axes if a.get_title()]
    real, *generated = axes
    cfg = next(iter(configs.values()))
    assert len({c.data for c in configs.values()}) == 1  # one training set: one real panel
    data = load_data(cfg.data, "train")
    res_px = cfg.data.resolution
    assert real.get_title().startswith("real training data\ndigits")
    assert real.get_title().endswith(f"{res_px}×{res_px}: 64 of {len(data)}")
    # One panel per cell, each naming its trial and the checkpoint's step.
    steps = {r["trial_id"]: r["step"] for r in (_result_rows(d)[-1]
                                                 for d in sorted(exp.glob("trial_*")))}
    assert len(generated) == 2
    for a in generated:
        trial, step = a.get_title().split("\n")[1].split(" @ step ")
        assert int(step) == steps[trial]
    # The real grid is laid out as the generated ones: same count, same size of tile ...
    img_real = real.get_images()[0].get_array()
    img_gen = generated[0].get_images()[0].get_array()
    assert img_real.shape == img_gen.shape
    # ... and each of its 64 tiles is a distinct image of the run's training split.
    train = ((data.images.clamp(-1, 1) + 1) / 2)[:, 0].numpy()
    tiles = [img_real[1 + r * (res_px + 1):1 + r * (res_px + 1) + res_px,
                      1 + q * (res_px + 1):1 + q * (res_px + 1) + res_px]
             for r in range(8) for q in range(8)]
    found = [int(np.argmin(np.abs(train - t[None]).reshape(len(train), -1).max(1)))
             for t in tiles]
    assert all(np.abs(train[i] - t).max() < 1e-6 for i, t in zip(found, tiles))
    assert len(set(found)) == 64
    # Only the generated panels are written alone under samples/.
    assert sorted(p.name for p in (tmp_path / "plots" / "samples").iterdir()) == [
        "weight=0.png", "weight=10.png"]


def test_real_samples_are_all_the_images_when_fewer_than_asked():
    data = load_data(from_dict({"data.name": "digits", "data.fraction": 0.01,
                                "data.resolution": 8}).data, "train")
    assert len(data) < 64
    x = plot_samples.real_samples(data, 64)
    assert x.shape == (len(data), 1, 8, 8)
    assert sorted(map(bytes, x.numpy())) == sorted(map(bytes, data.images.numpy()))


# -- the interval of a cell's mean ---------------------------------------------------------------


@pytest.mark.parametrize("x", [[30.0, 32.0], [1.0, 4.0, 2.5], [10.0, 11.0, 13.0, 9.5],
                               [5.0, 6.0, 5.5, 7.0, 6.2], [3.0, 1.0, 2.0, 8.0, 4.0, 2.0, 5.0]])
def test_the_interval_of_a_few_seeds_mean_is_the_t_interval(x):
    n, m, sd = len(x), float(np.mean(x)), float(np.std(x, ddof=1))
    half = st.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert stats.bootstrap_ci(x) == pytest.approx((m - half, m + half), rel=1e-12)
    h90 = st.t.ppf(0.95, n - 1) * sd / math.sqrt(n)
    assert stats.bootstrap_ci(x, 0.90) == pytest.approx((m - h90, m + h90), rel=1e-12)


def test_two_seeds_get_the_t_interval_not_their_min_and_max():
    lo, hi = stats.bootstrap_ci([30.0, 32.0])
    # mean 31, sd sqrt(2), t_{0.975, 1} = 12.7062: 31 -+ 12.7062 * sqrt(2) / sqrt(2)
    assert (lo, hi) == pytest.approx((31 - 12.7062047, 31 + 12.7062047), rel=1e-7)
    assert lo < 30.0 and hi > 32.0
    assert all(np.isnan(stats.bootstrap_ci([30.0])))  # one seed: no interval
    assert all(np.isnan(stats.bootstrap_ci([])))
    assert all(np.isnan(stats.bootstrap_ci([1.0, math.inf])))
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_auto_bootstraps_only_from_six_values():
    five, six = [1.0, 2.0, 4.0, 3.0, 7.0], [1.0, 2.0, 4.0, 3.0, 7.0, 5.0]
    assert stats.bootstrap_ci(five, method="auto") == stats.bootstrap_ci(five)
    lo, hi = stats.bootstrap_ci(six, method="auto", seed=3)
    assert min(six) <= lo < hi <= max(six) and (lo, hi) != stats.bootstrap_ci(six)
    assert (lo, hi) == stats.bootstrap_ci(six, method="auto", seed=3)
    with pytest.raises(Exception, match="method must be t or auto"):
        stats.bootstrap_ci(six, method="percentile")


# -- tables: n, the interval, and "—" explained --------------------------------------------------


def _small_sweep() -> pd.DataFrame:
    """weight 0 (seeds 0, 1), weight 1 (seeds 0, 1), weight 10 (seed 0 only)."""
    fids = {0.0: [30.0, 32.0], 1.0: [20.0, 23.0], 10.0: [25.0]}
    return frame([{"cell": {"regularizer.weight": w}, "seed": s, "status": "finished",
                   "fids": [v]} for w, vs in fids.items() for s, v in enumerate(vs)])


def test_ci_table_shows_the_t_interval_and_a_dash_for_one_seed(tmp_path):
    df = _small_sweep()
    agg = stats.aggregate(df, ["fid"])
    table = tables.ablation_table(agg, spread="ci")
    assert table.columns[:3] == ["weight", "n (seeds)", "fid"]
    half = {0.0: st.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2),
            1.0: st.t.ppf(0.975, 1) * math.sqrt(4.5) / math.sqrt(2)}
    assert table.rows[0][:3] == ["0", "2/2", f"31.00 [{31 - half[0.0]:.2f}, {31 + half[0.0]:.2f}]"]
    assert table.rows[1][:3] == ["1", "2/2",
                                 f"21.50 [{21.5 - half[1.0]:.2f}, {21.5 + half[1.0]:.2f}]"]
    assert table.rows[2][:3] == ["10", "1/1", "25.00 [—]"]  # one seed: no interval
    assert "95% CI: t interval of the mean" in table.caption
    assert "n (seeds) = seeds averaged / seeds run in the cell" in table.caption
    csv = pd.read_csv(tables.write_tables(table, tmp_path)["csv"])
    assert "fid_ci_low" not in csv  # named by what it is
    assert csv["fid_ci95_t_low"].tolist()[:2] == pytest.approx([31 - half[0.0],
                                                                21.5 - half[1.0]])
    assert csv["fid_ci95_t_high"].tolist()[:2] == pytest.approx([31 + half[0.0],
                                                                 21.5 + half[1.0]])
    assert np.isnan(csv["fid_ci95_t_low"].iloc[2]) and np.isnan(csv["fid_ci95_t_high"].iloc[2])
    assert "mean ± std over seeds" in tables.ablation_table(agg).caption
    tex = tables.to_latex(table)
    assert "25.00 [--]" in tex and "sqrt(n)" in tex


def test_a_dash_p_value_is_explained_in_the_caption():
    df = _small_sweep()
    cmp = stats.compare(df, {"regularizer.weight": 0.0}, "fid")
    table = tables.ablation_table(stats.aggregate(df, ["fid"]), cmp)
    p = table.columns.index("p (Holm)")
    assert table.rows[2][p] == "—" and table.rows[1][p] != "—"  # seed 0 alone is matched
    assert ("p: — where the cell has fewer than 2 seeds matched with the baseline's "
            "(no paired test possible).") in table.caption
    full = frame([{"cell": {"regularizer.weight": w}, "seed": s, "status": "finished",
                   "fids": [w + s]} for w in (0.0, 1.0) for s in range(3)])
    clean = tables.ablation_table(stats.aggregate(full, ["fid"]),
                                  stats.compare(full, {"regularizer.weight": 0.0}, "fid"))
    assert "—" not in clean.caption


def test_a_slice_without_a_baseline_cell_is_explained():
    cells = [("none", 0.1), ("none", 0.02), ("digits", 0.1), ("digits", 0.02), ("digits", 0.5)]
    df = frame([{"cell": {"prior.network": n, "data.fraction": f}, "seed": s,
                 "status": "finished", "fids": [f + s + (n == "digits")]}
                for n, f in cells for s in range(3)], factors=("prior.network", "data.fraction"))
    cmp = stats.compare(df, {"prior.network": "none"})
    table = tables.ablation_table(stats.aggregate(df, ["fid"]), cmp)
    row = next(r for r in table.rows if r[:2] == ["digits", "0.5"])
    d = table.columns.index("Δ fid")
    assert row[d:d + 2] == ["—", "—"]
    assert "Δ and p: — where no baseline cell shares the cell's other factors" in table.caption


def test_the_trials_table_has_every_trial_with_its_last_and_best_metric(tmp_path):
    from analysis.report import build_report

    df = collect(RECORDED)
    t = tables.trials_table(df, "fid")
    assert t.columns == ["trial", "weight", "seed", "status", "step", "fid", "best fid",
                         "time (s)"]
    assert [r[0] for r in t.rows] == sorted(df["trial_id"].unique())
    for row, (_, raw) in zip(t.rows, t.raw.iterrows()):
        rows = [json for json in _result_rows(RECORDED / f"trial_{row[0]}") if "fid" in json]
        # The oracle: the trial's own result.json lines.
        assert row[4] == str(rows[-1]["step"]) or row[3] != "finished"
        torch.testing.assert_close(raw["best fid"], min(r["fid"] for r in rows))
        torch.testing.assert_close(raw["fid"], rows[-1]["fid"])
    html = build_report(str(RECORDED), out=str(tmp_path / "rep")).read_text()
    assert "<h2>Trials</h2>" in html and (tmp_path / "rep" / "trials.csv").is_file()
    assert len(pd.read_csv(tmp_path / "rep" / "trials.csv")) == df["trial_id"].nunique()
