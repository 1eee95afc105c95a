"""Which of a trial's kept checkpoints the report uses.

A sweep keeps, per trial, the ``tune.num_to_keep`` best checkpoints by the sweep metric plus the
newest (for resume; ``tuneable_gan.tune.launch``). Each report that carried a checkpoint names
it in its ``checkpoint_dir_name`` column, so the checkpoint of the best evaluation is found from
the trial's own reports: the sample grids and ``best_config.yaml`` come from it, at its step.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from analysis.collect import filesystem
from analysis.stats import direction


@dataclass(frozen=True)
class Found:
    """A checkpoint directory on ``fs``, the step it was written at (None if unknown) and
    whether it is the best by the metric (else it is the newest, the fallback)."""

    fs: pafs.FileSystem
    path: str
    step: int | None
    best: bool


def kept(experiment: str, trial_dir: str) -> tuple[pafs.FileSystem, list[str]]:
    """(filesystem, the trial's ``checkpoint_*`` directories oldest first); none if unreadable."""
    fs, root = filesystem(experiment)
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{trial_dir}", allow_not_found=True))
    except OSError:
        return fs, []
    # Tune names them checkpoint_<zero-padded index>: the name order is the age order.
    return fs, sorted(i.path for i in infos if i.type == pafs.FileType.Directory
                      and i.base_name.startswith("checkpoint_"))


def last_checkpoint(experiment: str, trial_dir: str) -> tuple[pafs.FileSystem, str] | None:
    """(filesystem, path) of a trial's newest ``checkpoint_*`` directory, or None."""
    fs, paths = kept(experiment, trial_dir)
    return (fs, paths[-1]) if paths else None


def best_checkpoint(experiment: str, rows: pd.DataFrame, metric: str) -> Found | None:
    """The kept checkpoint of the trial's best ``metric`` among the reports that carried one
    (the first of equal ones); the newest kept one when no such report has a finite value
    (e.g. a lottery-ticket stage, whose reports have no sweep metric); None without any."""
    if rows.empty or "trial_dir" not in rows:
        return None
    fs, paths = kept(experiment, str(rows["trial_dir"].iloc[0]))
    if not paths:
        return None
    names = {p.rsplit("/", 1)[-1]: p for p in paths}
    sign = -1.0 if direction(metric) == "max" else 1.0
    best: tuple[float, int, str] | None = None
    if "checkpoint_dir_name" in rows and metric in rows:
        for name, value, step in zip(rows["checkpoint_dir_name"], rows[metric], rows["step"]):
            v = pd.to_numeric(value, errors="coerce")
            if name in names and pd.notna(v) and math.isfinite(v):
                key = (sign * float(v), int(step), names[name])
                if best is None or key[:2] < best[:2]:
                    best = key
    if best is not None:
        return Found(fs, best[2], best[1], True)
    last = rows[rows.get("checkpoint_dir_name") == paths[-1].rsplit("/", 1)[-1]] \
        if "checkpoint_dir_name" in rows else rows.iloc[0:0]
    step = int(last["step"].iloc[0]) if not last.empty else None
    return Found(fs, paths[-1], step, False)


def read_state(fs: pafs.FileSystem, ckpt: str) -> tuple[dict[str, Any], Any]:
    """(state, config) of a kept checkpoint on ``fs`` (local or remote), checksums verified
    by ``tuneable_gan.checkpoint.read_checkpoint``; tensors on the CPU."""
    from tuneable_gan.checkpoint import read_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        for f in ("state.pt", "config.yaml"):  # a remote checkpoint is copied to read it
            with fs.open_input_stream(f"{ckpt}/{f}") as src, open(os.path.join(tmp, f),
                                                                   "wb") as dst:
                dst.write(src.read())
        return read_checkpoint(tmp, map_location="cpu")
