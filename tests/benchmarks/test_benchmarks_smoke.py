"""The benchmark scripts run, in their smoke modes and in process, and print what they should;
gpu_check.sh's pieces (its report, its environment and FID steps, its shell syntax) hold.
eval_speed.py and tune_overhead.py have no cheap mode (a fresh digits classifier, a Ray start)
and are not run here.

vs_reference.py against the reference itself needs a checkout of AilsaF/DigGAN
DiffAugment-biggan-cifar, which this repository never holds: that test runs when
TUNEABLE_GAN_REFERENCE names one and is skipped otherwise.
"""

from __future__ import annotations

import importlib
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
# The smoke widths (16) of BigGAN-CIFAR, as built by both implementations.
SMOKE_PARAMS = ("375,683", "265,409")


def bench(name: str) -> ModuleType:
    """A benchmark script imported as a module (the scripts import their neighbours)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def rows(out: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell."""
    return {c[0]: c[1:] for line in out.splitlines() if line.startswith("| ")
            for c in [[x.strip() for x in line.strip("|").split("|")]]}


def test_vs_reference_times_our_side_in_smoke_mode():
    out = bench("vs_reference").main(["--ours-only", "--smoke", "--device", "cpu",
                                      "--threads", "1"])
    r = rows(out)
    assert "reference (fp32)" not in r and "ratio" not in out
    ours = r["this project (fp32)"]
    assert (ours[3], ours[4]) == SMOKE_PARAMS
    median, rate, each = float(ours[0]), float(ours[1]), ours[2].split(", ")
    assert len(each) == 2 and median > 0 and rate == pytest.approx(1 / median, rel=0.01)


@pytest.mark.skipif(not os.environ.get("TUNEABLE_GAN_REFERENCE"),
                    reason="set TUNEABLE_GAN_REFERENCE to a DiffAugment-biggan-cifar checkout")
def test_vs_reference_times_both_sides_and_they_build_the_same_networks():
    out = bench("vs_reference").main(["--reference", os.environ["TUNEABLE_GAN_REFERENCE"],
                                      "--smoke", "--device", "cpu", "--threads", "1"])
    r = rows(out)
    assert (r["this project (fp32)"][3], r["this project (fp32)"][4]) == SMOKE_PARAMS
    assert (r["reference (fp32)"][3], r["reference (fp32)"][4]) == SMOKE_PARAMS
    m = re.search(r"ratio reference / ours \(s per G it\): ([\d.]+)x of the medians, "
                  r"([\d.]+)x median of the paired rounds", out)
    assert float(m[1]) == pytest.approx(float(r["reference (fp32)"][0])
                                        / float(r["this project (fp32)"][0]), abs=0.01)
    ours, ref = ([float(v) for v in r[k][2].split(", ")]
                 for k in ("this project (fp32)", "reference (fp32)"))
    paired = statistics.median(x / y for x, y in zip(ref, ours))
    assert float(m[2]) == pytest.approx(paired, abs=0.01)
    assert {"utils", "BigGAN", "train_fns"}.isdisjoint(sys.modules)  # names given back


def test_step_speed_runs_every_regularizer(capsys):
    bench("step_speed").main(["--smoke", "--threads", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    for reg in ("none", "diggan", "r1", "lecam"):
        assert re.search(rf"dcgan\W+{reg}\W+[\d.]+", out), (reg, out)


def test_pack_runs_one_and_two_processes_together():
    out = bench("pack").main(["--smoke", "--counts", "1,2", "--device", "cpu", "--timeout", "60"])
    r = rows(out)
    one, two = r["1"], r["2"]
    assert one[0] == two[0] == "none"  # no CUDA device: nothing to cap
    assert one[3] == "1.00x" and float(two[2]) == pytest.approx(2 * float(two[1]), abs=0.002)
    assert float(two[3][:-1]) == pytest.approx(float(two[2]) / float(one[2]), rel=0.03)


def test_pack_sums_the_rates_of_the_packed_processes():
    res = [{"steps": 10, "seconds": 2.0, "share": 0.5, "peak_mib": 100.0},
           {"steps": 6, "seconds": 2.0, "share": 0.5, "peak_mib": 120.4}]
    line, total = bench("pack").row(2, res, base=4.0)
    assert total == 8.0
    assert line == "| 2 | 0.5 | 4.000 | 8.000 | 2.00x | 120 |"
    line, total = bench("pack").row(2, [*res[:1], {"rank": 1, "error": "OutOfMemoryError: x"}],
                                    base=4.0)
    assert total is None and line == "| 2 | 0.5 | error: OutOfMemoryError: x | | | |"


def test_a_pack_worker_caps_its_memory_at_one_over_the_count(monkeypatch, tmp_path):
    import queue

    pack = bench("pack")
    calls = []
    monkeypatch.setattr(pack, "cap_memory", lambda device, gpu: calls.append((device, gpu)) or gpu)

    class NoBarrier:
        def wait(self, timeout: float) -> None:
            pass

    root = bench("noise_cifar").write_noise_cifar(tmp_path, train_rows=50, test_rows=2)
    job = {"config": bench("vs_reference").ours_config(root, "cpu", smoke=True), "device": "cpu",
           "threads": 1, "seconds": 0.0, "warmup": 0, "min_steps": 1}
    results: queue.Queue = queue.Queue()
    pack.worker(0, 4, job, NoBarrier(), results)
    out = results.get_nowait()
    assert calls == [("cpu", 0.25)] and out["share"] == 0.25 and out["steps"] == 1, out


def test_gpu_check_fid_times_two_evaluations_with_random_inception_weights(monkeypatch,
                                                                           tmp_path):
    import torch_fidelity.metrics

    monkeypatch.delenv("INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no hub cache: the random weights
    # FID's 2048 x 2048 eigvals costs ~25 s on one loaded core whatever the sample count;
    # it is torch-fidelity's, and this test is about the step around it.
    monkeypatch.setattr(torch_fidelity.metrics, "fid_statistics_to_metric",
                        lambda *a, **k: {"frechet_inception_distance": 1.0})
    cache = os.environ.get("TUNEABLE_GAN_CACHE")
    out = bench("gpu_check").fid(2, "cpu", smoke=True)
    assert "RANDOM weights" in out and os.environ.get("TUNEABLE_GAN_CACHE") == cache
    r = rows(out)
    first = r["first: 2 fakes + 2 reals"]
    second = r["call 2: 2 fakes, reference cached"]
    assert first[1] == second[1] == "n/a (random weights)"
    assert float(first[0]) > 0 and float(second[0]) > 0


def test_gpu_check_env_says_the_project_imports():
    r = rows(bench("gpu_check").env())
    assert all(r[m] == ["imports"] for m in ("tuneable_gan.trainer", "tuneable_gan.cli"))


def test_gpu_report_makes_one_table_of_every_step(tmp_path):
    logs = {
        "vs": "noise\ndevice: X\n\n| implementation | s / G it |\n|---|---|\n| ours | 0.5 |\n"
              "\nratio reference / ours (s per G it): 1.20x (above 1: ours is faster)\n",
        "ss": "device: CPU\narch    regularizer    G it/s  cost vs none\n"
              "dcgan   none           18.10         1.00x\n\n"
              "speed against fp32\narch    regularizer    bf16\ndcgan   r1     0.80x\n",
        "bad": "Traceback (most recent call last):\nRuntimeError: CUDA out | of memory\n",
        "slow": "",
    }
    steps = []
    for name, text in logs.items():
        (tmp_path / f"{name}.log").write_text(text)
        status = {"bad": "error (exit 1)", "slow": "timeout after 45 s"}.get(name, "ok")
        steps.append(f"{name}\t{status}\t1.5\t{tmp_path / name}.log")
    (tmp_path / "steps.tsv").write_text("\n".join(steps) + "\n")
    table = bench("gpu_report").report(tmp_path / "steps.tsv", tmp_path / "out.md")
    assert (tmp_path / "out.md").read_text() == table
    assert table.splitlines() == [
        "| step | case | result | status | seconds |",
        "|---|---|---|---|---|",
        "| vs |  | device: X | ok | 1.5 |",
        "|  | ours | 0.5 |  |  |",
        "|  |  | ratio reference / ours (s per G it): 1.20x (above 1: ours is faster) |  |  |",
        "| ss |  | device: CPU | ok | 1.5 |",
        "|  | dcgan none | G it/s: 18.10; cost vs none: 1.00x |  |  |",
        "|  |  | speed against fp32 |  |  |",
        "|  | dcgan r1 | bf16: 0.80x |  |  |",
        "| bad |  | Traceback (most recent call last):<br>RuntimeError: CUDA out \\| of memory "
        "| error (exit 1) | 1.5 |",
        "| slow |  | (no output) | timeout after 45 s | 1.5 |",
    ]


@pytest.mark.parametrize("script", ["gpu_check.sh", "fetch_wheels.sh"])
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(BENCH / script)], check=True)


def test_seed_asha_replay_gives_the_decisions_worked_out_by_hand():
    """Two configurations x two seeds, all four running at once, no jitter; rungs at reports
    1 and 2. B's seeds report first (0.9 s a report, 5 at both rungs); A's seeds follow (1 s;
    10 and 1 at rung 1, final 1 each) and A is the grid's best (mean final 1 against 3).
    Plain ASHA stops A's seed 0 at rung 1 (10 is worse than B's 5) and keeps seed 1: A still
    finishes and wins, at 1 + 4 + 2 x 3.6 = 12.2 of 15.2 s. Seed-group ASHA sees A's mean 5.5
    against B's 5 once A's seed 1 is in, and stops both seeds: seed 1 at once, seed 0 (told to
    continue while its sibling was out) at its next report; B wins, at 2 + 1 + 7.2 = 10.2 s."""
    from ray.tune.schedulers import ASHAScheduler

    from tuneable_gan.tune.launch import configuration_of
    from tuneable_gan.tune.seed_asha import SeedGroupASHA

    m = bench("seed_asha_vs_asha")
    trials = [m.Recorded(f"{g}{s}", {"w": g, "train.seed": s}, (g,), vals, [dur] * 4)
              for g, dur, runs in (("A", 1.0, ([10, 1, 1, 1], [1, 1, 1, 1])),
                                   ("B", 0.9, ([5, 5, 5, 3], [5, 5, 5, 3])))
              for s, vals in enumerate(runs)]
    settings = {"metric": "fid", "mode": "min", "max_t": 4, "grace_period": 1,
                "reduction_factor": 2}
    build = {"asha": lambda: ASHAScheduler(time_attr="training_iteration", **settings),
             "seed_asha": lambda: SeedGroupASHA(group_of=configuration_of, group_size=2,
                                                **settings)}
    rows = m.compare(trials, lambda name: build[name](), "fid", "min", reps=3, concurrency=4,
                     jitter=0.0)
    assert [r[:3] for r in rows] == [("asha", 3, 3), ("seed_asha", 0, 0)]
    assert [r[3] for r in rows] == pytest.approx([12.2 / 15.2, 10.2 / 15.2])
