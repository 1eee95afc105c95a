"""analysis/: collect -> stats -> tables -> plots -> report, on a recorded tiny sweep
(tests/fixtures/experiment, rewritten by ``python tests/fixtures/record_experiment.py``), on one
live sweep end to end, and the ablation table on a hand-made frame (the statistics on
hand-made frames: test_stats.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from frames import frame

from analysis import stats, tables
from analysis.checkpoints import last_checkpoint
from analysis.collect import collect, read_collected, trial_table
from analysis.report import build_report, main, parse_baseline
from tuneable_gan.config import load_config
from tuneable_gan.errors import UserError

FIXTURES = Path(__file__).parents[1] / "fixtures"
RECORDED = FIXTURES / "experiment"
_spec = importlib.util.spec_from_file_location("record_experiment",
                                               FIXTURES / "record_experiment.py")
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)  # the sweep's design: one place for the recording and the test
RERECORD = "the recorded experiment is out of date: run python tests/fixtures/record_experiment.py"
SAMPLES = "samples of the best trial per cell (EMA generator, its best checkpoint by fid)"


@pytest.fixture
def experiment(tmp_path) -> str:
    """A copy (tests may change it) of the recorded 4-trial sweep: regularizer.weight 0 and
    10 x 2 seeds, ASHA grace 1, rf 2; no checkpoints."""
    dst = tmp_path / record.NAME
    shutil.copytree(RECORDED, dst)
    return str(dst)


def _result_rows(trial_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines()]


def _files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


# -- collect on the recorded sweep ---------------------------------------------------------------


def test_collect_gives_one_row_per_trial_and_report_with_statuses(experiment):
    df = collect(experiment)
    dirs = sorted(Path(experiment).glob("trial_*"))
    assert len(dirs) == 4
    assert len(df) == sum(len(_result_rows(d)) for d in dirs)
    assert df.groupby("trial_id").size().to_dict() == {
        _result_rows(d)[0]["trial_id"]: len(_result_rows(d)) for d in dirs}
    assert df.attrs["factors"] == ["regularizer.weight"] and df.attrs["seeds"] == 2
    assert {"regularizer.weight", "train.seed", "fid", "fid_best", "dig", "eval_protocol",
            "time_total_s", "status", "stopped_at"} <= set(df.columns)
    steps = df.attrs["base"]["train.steps"]
    assert steps == record.BASE["train.steps"]
    last = trial_table(df)
    assert set(last["status"]) <= {"finished", "stopped"} and (last["status"] == "finished").any()
    for r in last.itertuples():
        if r.status == "finished":
            assert r.step == steps and pd.isna(r.stopped_at)
        else:  # ASHA stopped it: the step it reached is recorded
            assert r.stopped_at == r.step < steps
    assert not df.duplicated(["trial_id", "step"]).any()


def test_collect_keeps_the_last_of_a_duplicated_report(experiment):
    exp = Path(experiment)
    trial = max(exp.glob("trial_*"), key=lambda d: len(_result_rows(d)))
    rows = _result_rows(trial)
    dup = rows[0] | {"fid": 12345.0}  # a restore after a hard kill re-reports a step
    with open(trial / "result.json", "a") as f:
        f.write(json.dumps(dup) + "\n")
    df = collect(exp)
    mine = df[df["trial_id"] == rows[0]["trial_id"]]
    assert len(mine) == len(rows) and mine["step"].is_monotonic_increasing
    assert mine.loc[mine["step"] == rows[0]["step"], "fid"].item() == 12345.0


def _set_state(exp: Path, trial_id: str, status: str) -> None:
    path = max(exp.glob("experiment_state-*.json"))
    doc = json.loads(path.read_text())
    for entry in doc["trial_data"]:
        info = json.loads(entry[0])
        if info["trial_id"] == trial_id:
            entry[0] = json.dumps(info | {"status": status})
    path.write_text(json.dumps(doc))


def test_collect_tells_running_from_interrupted_and_errored(experiment):
    exp = Path(experiment)
    (a, ta), (b, tb) = [(d, _result_rows(d)[0]["trial_id"]) for d in sorted(
        exp.glob("trial_*"))[:2]]
    first = _result_rows(a)[0]["step"]
    (a / "result.json").write_text(json.dumps(_result_rows(a)[0]) + "\n{\"step\": 4, \"fi")
    _set_state(exp, ta, "RUNNING")
    (b / "result.json").write_text(json.dumps(_result_rows(b)[0]) + "\n")  # died at its 1st
    (b / "error.txt").write_text("Failure # 1\nTraceback ...\nRuntimeError: boom\n")
    _set_state(exp, tb, "ERROR")
    live = trial_table(collect(exp, now=time.time())).set_index("trial_id")
    assert live.loc[ta, "status"] == "running" and live.loc[ta, "step"] == first  # half line
    assert live.loc[tb, "status"] == "errored" and "boom" in live.loc[tb, "status_reason"]
    gone = trial_table(collect(exp, now=time.time() + 10_000)).set_index("trial_id")
    assert gone.loc[ta, "status"] == "errored" and "resume" in gone.loc[ta, "status_reason"]


def test_collect_writes_parquet_that_reads_back_with_attrs(experiment, tmp_path):
    df = collect(experiment, out=tmp_path / "r.parquet")
    back = read_collected(tmp_path / "r.parquet")
    assert back.shape == df.shape and back.attrs["factors"] == ["regularizer.weight"]
    pd.testing.assert_series_equal(back["fid"], df["fid"])
    remote = collect(Path(experiment).as_uri())  # a URI goes through pyarrow's filesystems
    assert remote.shape == df.shape and set(remote["status"]) == set(df["status"])


def test_collect_refuses_a_directory_that_is_no_experiment(tmp_path):
    with pytest.raises(UserError, match="not a tuneable-gan experiment"):
        collect(tmp_path)


def test_recorded_experiment_is_what_collect_reads_and_small():
    """The fixture holds no checkpoints, pickles or logs, and no path of the machine that
    recorded it."""
    names = _files(RECORDED)
    assert "tuneable_gan_sweep.yaml" in names and len(names) == 2 + 2 * 4, names
    assert all(n.rsplit("/", 1)[-1] in ("result.json", "params.json", "tuneable_gan_sweep.yaml")
               or n.startswith("experiment_state-") for n in names), names
    assert sum((RECORDED / n).stat().st_size for n in names) < 300_000
    for n in names:
        text = (RECORDED / n).read_text()
        assert "/tmp" not in text and "record-experiment-" not in text, n


# -- the report on the recorded sweep ------------------------------------------------------------


def test_report_writes_html_markdown_tables_parquet_and_plots(experiment, tmp_path):
    t0 = time.perf_counter()
    html = build_report(experiment, out=str(tmp_path / "rep"))
    took = time.perf_counter() - t0
    d = html.parent
    for name in ("report.html", "report.md", "ablation.md", "ablation.tex", "ablation.csv",
                 "results.parquet", "best_config.yaml", "plots/fid_curves.png",
                 "plots/fid_curves.svg"):
        assert (d / name).is_file() and (d / name).stat().st_size > 0, name
    text = html.read_text()
    assert "data:image/png;base64," in text and "<img src='plots" not in text  # self-contained
    md = (d / "report.md").read_text()
    assert "baseline | weight=0" in md and "tuneable-gan train" in md
    assert "\\toprule" in (d / "ablation.tex").read_text()
    assert len(pd.read_csv(d / "ablation.csv")) == 2  # two cells
    df = collect(experiment)
    cfg = load_config(d / "best_config.yaml")  # the command's config loads as a run config
    assert cfg.train.steps == df.attrs["base"]["train.steps"]
    # No checkpoints were recorded: the samples figure says so for every cell, best cell first
    # (the best finished trial's fid; the fixture's ASHA run finished a trial in each cell).
    last = trial_table(df)
    done = last[last["status"] == "finished"]
    assert set(done["regularizer.weight"]) == set(last["regularizer.weight"]), RERECORD
    order = done.groupby("regularizer.weight")["fid"].min().sort_values().index
    why = "; ".join(f"{stats.cell_label({'regularizer.weight': w})}: no checkpoint"
                    for w in order)
    assert f"{SAMPLES}: skipped ({why})." in md.splitlines()
    assert f"<p>{SAMPLES}: skipped ({why}).</p>" in text
    assert not [p for p in _files(d) if "samples" in p]
    assert ("Evaluation noise floor: not measured (the best trial kept no checkpoint)."
            in md.splitlines())
    # ... and the best configuration is the config its best trial reported last.
    best = last.set_index("trial_id").loc[md.split("its best trial ")[1].split()[0]]
    written = yaml.safe_load((d / "best_config.yaml").read_text())
    reported = _result_rows(Path(experiment) / best["trial_dir"])[-1]
    assert written == {k: reported[k] for k in written} and "train.steps" in written
    print(f"build_report on the tiny sweep: {took:.1f} s")


def test_report_cli_and_its_one_line_errors(experiment, tmp_path, capsys):
    assert main([experiment, "--out", str(tmp_path / "r"), "--baseline",
                 "regularizer.weight=10", "--metric", "fid_best"]) == 0
    assert "report:" in capsys.readouterr().out
    assert "Δ fid_best" in (tmp_path / "r" / "ablation.md").read_text()
    for argv, msg in (([experiment, "--baseline", "regularizer.weight=3"], "no cell has"),
                      ([experiment, "--baseline", "model.z_dim=8"], "not a swept factor"),
                      ([experiment, "--baseline", "oops"], "expects key=value"),
                      ([experiment, "--metric", "nope"], "not reported")):
        with pytest.raises(UserError, match=msg) as e:
            main([*argv, "--out", str(tmp_path / "x")])
        assert "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()  # nothing half-written
    assert parse_baseline(["a.b=0.5", "c=none"]) == {"a.b": 0.5, "c": "none"}


def test_analysis_does_not_import_ray():
    code = ("import sys, analysis.report, analysis.stats; analysis.stats.direction('fid'); "
            "print('ray' in sys.modules)")
    root = str(Path(__file__).parents[2])
    env = os.environ | {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=root)
    assert out.stdout.strip() == "False"


# -- one live sweep, end to end ------------------------------------------------------------------


@pytest.mark.slow
def test_live_sweep_collects_and_reports_with_samples(tmp_path):
    """The recorded design run for real (sweep -> collect -> report), with checkpoints: the
    sample grids and the best configuration come from them. Its frame has the recorded
    experiment's columns (else the recording is stale)."""
    import ray

    from tuneable_gan.tune.launch import run_sweep
    from tuneable_gan.tune.space import spec_from_dict

    old = os.environ.get("TUNEABLE_GAN_CACHE")
    os.environ["TUNEABLE_GAN_CACHE"] = str(tmp_path / "cache")  # before ray.init: workers inherit
    owned = not ray.is_initialized()
    if owned:
        ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
    try:
        results = run_sweep(spec_from_dict(record.sweep_doc(tmp_path / "results"),
                                           source=str(tmp_path / "tiny.yaml")))
    finally:
        if owned:
            ray.shutdown()  # other test modules start their own Ray
            shutil.rmtree(ray_tmp, ignore_errors=True)
        if old is None:
            os.environ.pop("TUNEABLE_GAN_CACHE", None)
        else:
            os.environ["TUNEABLE_GAN_CACHE"] = old
    assert results.num_errors == 0
    exp = str(tmp_path / "results" / record.NAME)

    df = collect(exp)
    dirs = sorted(Path(exp).glob("trial_*"))
    assert len(dirs) == 4 and df["trial_id"].nunique() == 4
    assert len(df) == sum(len(_result_rows(d)) for d in dirs)
    last = trial_table(df)
    assert set(last["status"]) <= {"finished", "stopped"} and (last["status"] == "finished").any()
    assert not df.duplicated(["trial_id", "step"]).any()
    assert set(df.columns) == set(collect(RECORDED).columns), RERECORD

    html = build_report(exp, out=str(tmp_path / "rep"))
    d = html.parent
    for name in ("report.html", "report.md", "ablation.csv", "results.parquet",
                 "best_config.yaml", "plots/fid_curves.png", "plots/samples.png"):
        assert (d / name).is_file() and (d / name).stat().st_size > 0, name
    # One grid per cell that has a checkpoint, none skipped. ASHA may stop both seeds of a
    # cell at its first rung (step 2), before the first checkpoint (step 4): the order results
    # arrive in decides, so such a cell has no grid. A finished trial always has one.
    with_ckpt = {w for w, t in zip(last["regularizer.weight"], last["trial_dir"])
                 if last_checkpoint(exp, t) is not None}
    assert with_ckpt >= set(last.loc[last["status"] == "finished", "regularizer.weight"])
    cells = [stats.cell_label({"regularizer.weight": w}) for w in sorted(with_ckpt)]
    assert cells and sorted(p.name for p in (d / "plots" / "samples").iterdir()) == sorted(
        f"{c}.png" for c in cells)
    md = (d / "report.md").read_text()
    assert f"![{SAMPLES}](plots/samples.png)" in md and f"{SAMPLES}: skipped" not in md
    # The best configuration is its trial's last checkpoint's config, which loads as a run
    # config.
    best = md.split("its best trial ")[1].split()[0]
    trial_dir = last.set_index("trial_id").loc[best, "trial_dir"]
    fs, ckpt = last_checkpoint(exp, trial_dir)
    with fs.open_input_stream(f"{ckpt}/config.yaml") as f:
        assert (d / "best_config.yaml").read_bytes() == f.read()
    assert load_config(d / "best_config.yaml").train.steps == record.BASE["train.steps"]
    # With checkpoints, the noise floor is measured at the best trial's best checkpoint.
    assert f"Evaluation noise floor: one fixed generator (trial {best}, step " in md


# -- tables ------------------------------------------------------------------------------------


def test_table_bolds_the_best_per_column_and_writes_three_formats(tmp_path):
    df = frame([{"cell": {"regularizer.weight": w}, "seed": s, "status": "finished",
                 "fids": [f + s], "is_mean": m + s / 10}
                for w, f, m in ((0.0, 30.0, 2.0), (1.0, 20.0, 1.0)) for s in range(3)])
    agg = stats.aggregate(df, ["fid", "is_mean"])
    table = tables.ablation_table(agg, stats.compare(df, {"regularizer.weight": 0.0}, "fid"))
    md = tables.to_markdown(table)
    assert "| 1 | 3/3 | **21.00 ± 1.00** |" in md  # min FID is bold
    assert "**2.10 ± 0.10**" in md  # max IS is bold
    assert "baseline" in md and "-10.00" in md
    paths = tables.write_tables(table, tmp_path)
    tex = paths["tex"].read_text()
    assert all(k in tex for k in ("\\toprule", "\\midrule", "\\bottomrule", "\\textbf{21.00"))
    csv = pd.read_csv(paths["csv"])
    assert list(csv["fid_mean"]) == pytest.approx([31.0, 21.0]) and "p_holm" in csv


# -- as a person sees it -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(experiment, tmp_path):
    from PIL import Image

    html = build_report(experiment, out=str(tmp_path / "rep"))
    png = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                    "--window-size=1200,2000", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 20  # text, tables and plots, not a blank page
    dark = (pixels < 128).mean()
    assert 0.01 < dark < 0.6


def test_precision_recall_density_coverage_join_the_tables_when_reported(experiment, tmp_path):
    """eval.prc / eval.dc values a sweep reported become columns of the ablation table."""
    for result in Path(experiment).glob("trial_*/result.json"):
        rows = [json.loads(ln) for ln in result.read_text().splitlines() if ln.strip()]
        for r in rows:
            r.update(precision=0.5, recall=0.25, density=1.5, coverage=0.75)
        result.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = build_report(experiment, out=str(tmp_path / "rep"))
    header = (html.parent / "ablation.md").read_text().splitlines()
    columns = next(ln for ln in header if ln.startswith("| weight"))
    assert all(f" {k} " in columns for k in ("precision", "recall", "density", "coverage"))
    assert "(resolved)" not in columns  # a swept factor is not repeated as a resolved value
    row = next(ln for ln in header if ln.startswith("| 10 "))
    assert "| 0.500 " in row or "| 0.50 " in row, row
