"""Synthetic collected frames for the statistics tests: rows as ``analysis.collect`` makes
them, without running a sweep."""

from __future__ import annotations

import pandas as pd


def frame(trials: list[dict], factors: tuple[str, ...] = ("regularizer.weight",)) -> pd.DataFrame:
    """Rows as collect makes them. Each trial: cell values, seed, fids (one per report, every
    100 steps), status (finished/stopped/...), optional protocol and is_mean."""
    rows = []
    for i, t in enumerate(trials):
        fids = t["fids"]
        for j, fid in enumerate(fids):
            rows.append({**t["cell"], "trial_id": f"t{i}", "trial_dir": f"trial_t{i}",
                         "train.seed": t["seed"], "step": 100 * (j + 1), "fid": fid,
                         "fid_best": min(fids[:j + 1]), "is_mean": t.get("is_mean", 1.0),
                         "eval_protocol": t.get("protocol", "p1"), "diverged": False,
                         "status": t["status"], "time_total_s": 10.0,
                         "stopped_at": 100 * len(fids) if t["status"] == "stopped" else None,
                         "last_report": j == len(fids) - 1})
    df = pd.DataFrame(rows)
    df["stopped_at"] = df["stopped_at"].astype("Int64")
    df.attrs.update(factors=list(factors), axes={f: {"grid": sorted({t["cell"][f]
                                                                      for t in trials})}
                                                  for f in factors})
    return df
