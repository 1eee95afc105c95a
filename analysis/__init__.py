"""Results of a tuneable-gan sweep -> tidy frame, seed statistics, ablation tables, plots, report.

Reads the experiment directory Ray Tune wrote (local path or a pyarrow URI) file by file; it never
imports ray, so a report can be built on a laptop without a cluster.
"""

from __future__ import annotations

from typing import Any

from analysis.collect import collect, read_collected, trial_table

__all__ = ["build_report", "collect", "read_collected", "trial_table"]


def __getattr__(name: str) -> Any:
    # The report pulls in matplotlib (and torch for sample grids): only when asked for.
    if name == "build_report":
        from analysis.report import build_report

        return build_report
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
