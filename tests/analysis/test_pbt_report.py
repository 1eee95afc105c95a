"""The report's PBT section from hand-made reports: lineage rows, the best trial's chain of
donors, the schedules figure; nothing for other schedulers."""

from __future__ import annotations

import pandas as pd

from analysis.pbt import lineage, mutated_keys, section

PBT = {"scheduler": {"pbt": {"perturbation_interval": 10,
                             "mutations": {"optim.g_lr": {"loguniform": [1e-5, 1e-3]}}}}}


def reports() -> pd.DataFrame:
    # a: 3 reports, never exploited. b: cloned a at step 10 (first report 20), then again at 20.
    rows = [("a", 10, 2e-4, 50.0, None, None), ("a", 20, 2e-4, 40.0, None, None),
            ("a", 30, 2e-4, 30.0, None, None),
            ("b", 10, 9e-4, 60.0, None, None), ("b", 20, 2.4e-4, 45.0, "a", 10),
            ("b", 30, 1.6e-4, 25.0, "a", 20)]
    df = pd.DataFrame(rows, columns=["trial_id", "step", "optim.g_lr", "fid", "pbt_parent",
                                     "pbt_cloned_at"])
    df.attrs["tune"] = PBT
    return df


def test_lineage_lists_each_exploit_in_step_order():
    lin = lineage(reports())
    assert lin.to_dict("records") == [
        {"trial_id": "b", "parent": "a", "cloned_at": 10, "first_step": 20},
        {"trial_id": "b", "parent": "a", "cloned_at": 20, "first_step": 30}]
    assert mutated_keys(reports().attrs) == ["optim.g_lr"]
    assert mutated_keys({"tune": {"scheduler": {"asha": {"grace_period": 1}}}}) == []


def test_the_section_names_the_best_trials_donors_and_draws_the_schedules(tmp_path):
    blocks = section(reports(), "fid", tmp_path)
    assert blocks[0] == ("h2", "Population-based training")
    assert blocks[1][1] == ("2 exploit(s) across 1 of 2 trials; mutated: optim.g_lr. The final "
                            "best trial, b (fid 25): b cloned a at step 20.")
    assert (tmp_path / "lineage.csv").is_file()
    assert blocks[-1][0] == "img" and (tmp_path / "plots" / "pbt_schedules.png").is_file()
    df = reports()
    df.attrs["tune"] = {"scheduler": "fifo"}
    assert section(df, "fid", tmp_path) == []
