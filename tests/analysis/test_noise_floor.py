"""``analysis.noise_floor``: one generator re-scored on independent evaluation latent sets, the
threshold a difference must pass, and where the report states it."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow.fs as pafs
import pytest
import torch
from conftest import TINY

from analysis import noise_floor, tables
from analysis.noise_floor import SEED_BASE, Floor
from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.config import from_dict
from tuneable_gan.trainer import GANTrainer


def floor(values=(10.0, 11.0, 12.0, 13.0, 14.0)) -> Floor:
    return Floor("fid", tuple(values), "t0", 100, 1000)


def test_threshold_is_196_sd_sqrt_2_over_n():
    f = floor()  # sd of 10..14 (ddof 1) = sqrt(2.5)
    torch.testing.assert_close(f.sd, math.sqrt(2.5))
    for n in (1, 2, 5):
        torch.testing.assert_close(f.threshold(n), 1.96 * math.sqrt(2.5) * math.sqrt(2 / n))
    t5 = f.threshold(5)
    assert f.swamps(t5 * 0.99, 5) and f.swamps(-t5 * 0.99, 5)
    assert not f.swamps(t5 * 1.01, 5) and not f.swamps(math.nan, 5)
    assert f.swamps(t5 * 1.01, 1)  # one seed: the same difference is within the noise


def test_the_sentence_names_the_generator_the_spread_and_the_thresholds():
    text = Floor("fid", (2.0, 2.5), "abc_00003", 700, 1000, own=1.9).sentence()
    assert "trial abc_00003, step 700" in text and "2 independent latent sets of 1000" in text
    assert "range 2 to 2.5" in text and "own latent set gave 1.9" in text
    assert f"({floor((2.0, 2.5)).threshold(1):.3g} for one seed" in text


def comparison(deltas: list[float], n_pairs: int) -> pd.DataFrame:
    cmp = pd.DataFrame({"w": [0.0, *range(1, len(deltas) + 1)],
                        "is_baseline": [True] + [False] * len(deltas),
                        "n_pairs": [0] + [n_pairs] * len(deltas),
                        "delta": [math.nan, *deltas]})
    cmp.attrs = {"factors": ["w"]}
    return cmp


def test_swamped_names_exactly_the_differences_within_the_noise():
    f = floor()  # threshold(4) = 1.96 * sqrt(2.5) * sqrt(0.5) = 2.19
    said = noise_floor.swamped(f, comparison([1.0, -2.0, 3.0], 4))
    assert "w=1 (fid +1)" in said and "w=2 (fid -2)" in said and "w=3" not in said
    assert noise_floor.swamped(f, comparison([3.0], 4)).startswith("Every difference")
    assert noise_floor.swamped(f, None) == ""


def test_the_ablation_table_marks_a_swamped_difference():
    agg = pd.DataFrame({"w": [0.0, 1.0, 2.0], "n": [4, 4, 4], "n_seeds": [4, 4, 4],
                        "fid_mean": [10.0, 11.0, 14.0], "fid_std": [1.0, 1.0, 1.0],
                        "stopped": ["", "", ""], "note": ["", "", ""]})
    agg.attrs = {"factors": ["w"], "values": ["fid"]}
    cmp = comparison([1.0, 4.0], 4)
    cmp["test"], cmp["p"], cmp["p_holm"] = "paired t", 0.5, 0.5
    cmp.attrs |= {"value": "fid", "baseline_label": "w=0"}
    t = tables.ablation_table(agg, cmp, noise=floor().swamps)
    delta = [row[t.columns.index("Δ fid")] for row in t.rows]
    assert delta == ["baseline", "+1.00 (noise)", "+4.00"]
    assert "(noise)" in t.caption
    plain = tables.ablation_table(agg, cmp)
    assert [row[plain.columns.index("Δ fid")] for row in plain.rows][1] == "+1.00"


@pytest.fixture
def checkpoint(tmp_path):
    cfg = from_dict({**TINY, "eval.num_samples": 64, "eval.batch_size": 32})
    trainer = GANTrainer(cfg, device="cpu")
    for _ in range(3):
        trainer.train_step()
    path = tmp_path / "trial_a" / "checkpoint_000000"
    write_checkpoint(path, trainer.state_dict(), trainer.cfg)
    trainer.close()
    return path, trainer.cfg


def test_measure_equals_the_runs_own_evaluation_at_each_latent_seed(checkpoint):
    path, cfg = checkpoint
    values, step, n = noise_floor.measure(pafs.LocalFileSystem(), str(path), "fid_best", 3)
    assert step == 3 and n == 64 and len(set(values)) == 3  # three sets, three numbers
    rng = torch.get_rng_state()
    for i, v in enumerate(values):
        # The oracle: the run's own evaluation, had its eval.seed been this set's seed.
        t = GANTrainer(cfg.replace(**{"eval.seed": SEED_BASE + i}), device="cpu")
        t.load_state_dict(read_checkpoint(path)[0])
        assert t.evaluate()["fid"] == v
        t.close()
    torch.set_rng_state(rng)


def test_measure_leaves_the_global_rng_as_it_was(checkpoint):
    path, _ = checkpoint
    before = torch.get_rng_state()
    noise_floor.measure(pafs.LocalFileSystem(), str(path), "fid", 2)
    assert torch.equal(torch.get_rng_state(), before)


def test_noise_floor_says_why_not_when_it_cannot_measure(tmp_path, checkpoint):
    path, _ = checkpoint
    exp = str(path.parents[1])
    df = pd.DataFrame([{"trial_id": "a", "trial_dir": "trial_a", "step": 3, "fid": 5.0,
                        "dig": 0.1, "checkpoint_dir_name": "checkpoint_000000"}])
    best = df.iloc[0]
    f, why = noise_floor.noise_floor(exp, best, df, "fid", 2)
    assert why == "" and f.own == 5.0 and f.step == 3 and len(f.values) == 2
    assert noise_floor.noise_floor(exp, best, df, "fid", 0) == (None, "off (--noise-floor "
                                                                "below 2 sets)")
    assert noise_floor.noise_floor(exp, None, df, "fid")[1] == "no trial with a kept checkpoint"
    assert "not a metric the evaluator computes" in noise_floor.noise_floor(
        exp, best, df, "dig", 2)[1]
