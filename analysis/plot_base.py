"""What every figure module shares: ``PlotResult``, ``save_figure``, the grouping of trials into
cells and the one colour registry, ``cell_colors``.

One colour per cell across all figures: the learning curves, the DIG curves, the per-cell
points of metric-vs-factor and the sample-grid titles all take a cell's colour from
``cell_colors`` of the whole experiment, so a cell looks the same in every figure of a report
and a figure that draws only some cells (the best ``MAX_CELLS``) does not shift the others.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from analysis import output  # noqa: E402
from analysis.stats import cell_label  # noqa: E402

MAX_CELLS = 8  # more lines or grids than this stop being readable
# A fixed qualitative palette: tab10 (tab20's dark halves) first, then tab20's light halves,
# then tab20b and tab20c; 60 distinct colours before the assignment wraps around.
PALETTE: tuple[str, ...] = tuple(dict.fromkeys(
    to_hex(c) for c in (*plt.get_cmap("tab20").colors[0::2], *plt.get_cmap("tab20").colors[1::2],
                        *plt.get_cmap("tab20b").colors, *plt.get_cmap("tab20c").colors)))
GROUP_STYLES: tuple[tuple[str, str], ...] = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"),
                                             ("-", "v"), ("--", "P"), (":", "X"), ("-.", "*"))


@dataclass
class PlotResult:
    """One figure: its name, the files written (PNG first), if it was skipped why, and the
    colour it drew each cell in (cell label -> hex colour; empty where it colours no cells)."""

    name: str
    title: str
    paths: list[Path] = field(default_factory=list)
    reason: str = ""
    colors: dict[str, str] = field(default_factory=dict)

    @property
    def png(self) -> Path | None:
        """The PNG file, if the figure was made."""
        return next((p for p in self.paths if p.suffix == ".png"), None)


def place_legend(ax: Any) -> None:
    """The legend inside the axes for up to 4 short entries, else below them in two columns:
    cell labels with three factors are long, and inside they cover the curves and the y
    label (the figure is saved with a tight bounding box, so the legend below stays in)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(labels) <= 4 and max(len(x) for x in labels) <= 40:
        ax.legend(fontsize=7)
    else:
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                  frameon=False)


def save_figure(fig: Any, out_dir: Path, name: str, svg: bool = True) -> list[Path]:
    """Write ``fig`` as ``name``.png (and .svg) into ``out_dir``, close it; the paths."""
    output.make_dir(out_dir)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"][:2 if svg else 1]
    fig.tight_layout()
    try:
        for p in paths:
            buf = io.BytesIO()
            fig.savefig(buf, format=p.suffix[1:], dpi=100, bbox_inches="tight")
            output.write_bytes(p, buf.getvalue())
    finally:
        plt.close(fig)
    return paths


def labels_of(df: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    """Each row's cell label (``stats.cell_label`` of its ``factors`` values); "all" without
    factors."""
    if not factors:
        return ["all"] * len(df)
    return [cell_label(dict(zip(factors, r))) for r in df[list(factors)].itertuples(index=False)]


def cells(df: pd.DataFrame, factors: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of ``factors``, sorted by label; one ("all", df) without
    factors."""
    if not factors:
        return [("all", df)]
    keyed = df.assign(_cell=labels_of(df, factors))
    return [(str(k), g.drop(columns="_cell")) for k, g in keyed.groupby("_cell", sort=True)]


def cell_colors(cells_or_df: pd.DataFrame | Iterable[str],
                factors: Sequence[str] | None = None) -> dict[str, str]:
    """Cell label -> hex colour: the sorted distinct labels take ``PALETTE`` in order (wrapping
    after 60). Given a frame (reports or ``stats.trial_values``), its cells over ``factors``
    (default ``attrs["factors"]``: every swept factor, the seed is none); else the labels.
    Pass every cell of the experiment, not only those a figure draws: the same label then
    gets the same colour in every figure."""
    if isinstance(cells_or_df, pd.DataFrame):
        fs = list(cells_or_df.attrs.get("factors", []) if factors is None else factors)
        names: Iterable[str] = labels_of(cells_or_df, fs) if len(cells_or_df) else []
    else:
        names = cells_or_df
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(sorted(set(map(str, names))))}


def y_scale(values: Iterable[float] | np.ndarray, ratio: float = 3.0) -> str:
    """The y scale for ``values``: "log" when every finite value is positive and the largest
    is more than ``ratio`` times the smallest (an FID falling from 300 to 30 would flatten
    the last steps, where the answer is, into a line), else "linear". Non-finite values are
    ignored; fewer than two values are "linear"."""
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2 or (x <= 0).any():
        return "linear"
    return "log" if x.max() > ratio * x.min() else "linear"
