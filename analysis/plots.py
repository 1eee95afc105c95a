"""Figures of a sweep (matplotlib Agg; each written as PNG and SVG), each made only when the data
supports it; otherwise the result says why not.

* ``metric_vs_factor``: FID against regularization strength (log x, the DigGAN paper's Fig. 10)
  when ``regularizer.weight`` is swept, or against ``sparsity.level``;
* ``learning_curves``: FID over training per cell, mean ± std over seeds;
* ``dig_curves``: the discriminator gradient gap over training per data fraction or cell (log y;
  the paper's Fig. 1 and 6);
* ``sample_grids``: 64 EMA-generator samples of the best trial of each cell, from its best
  checkpoint by the metric, generated as the run's evaluation does (exact spectral norm,
  ``eval.g_mode``);
* ``importance_bars``: fANOVA importance of the swept factors.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402

from analysis import output  # noqa: E402
from analysis.checkpoints import best_checkpoint  # noqa: E402
from analysis.stats import cell_label, direction  # noqa: E402

MAX_CELLS = 8  # more lines or grids than this stop being readable


@dataclass
class PlotResult:
    """One figure: its name, the files written (PNG first) and, if it was skipped, why."""

    name: str
    title: str
    paths: list[Path] = field(default_factory=list)
    reason: str = ""

    @property
    def png(self) -> Path | None:
        """The PNG file, if the figure was made."""
        return next((p for p in self.paths if p.suffix == ".png"), None)


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


def _others(factors: list[str], key: str) -> list[str]:
    return [f for f in factors if f != key]


def _cells(df: pd.DataFrame, factors: list[str]) -> list[tuple[str, pd.DataFrame]]:
    if not factors:
        return [("all", df)]
    keyed = df.assign(_cell=[cell_label(dict(zip(factors, r)))
                             for r in df[factors].itertuples(index=False)])
    return [(str(k), g.drop(columns="_cell")) for k, g in keyed.groupby("_cell", sort=True)]


def metric_vs_factor(tv: pd.DataFrame, out_dir: str | Path, key: str = "regularizer.weight",
                     value: str = "fid", reading: str = "") -> PlotResult:
    """``value`` (per-cell mean ± std, seeds as dots) against factor ``key``: log x for
    ``regularizer.weight`` (a weight of 0 drawn as a dashed level), one line per combination
    of the other factors. Needs ``key`` swept with >= 2 usable values."""
    name = {"regularizer.weight": "fid_vs_weight",
            "sparsity.level": "fid_vs_sparsity"}.get(key, f"{value}_vs_{key}")
    res = PlotResult(name, f"{value} against {key}" + (f" ({reading})" if reading else ""))
    factors = list(tv.attrs.get("factors", []))
    if key not in factors:
        res.reason = f"{key} is not swept"
        return res
    log = key == "regularizer.weight"
    use = tv[tv["usable"] & tv[value].notna() & tv[key].notna()]
    use = use[np.isfinite(use[value].astype(float))]
    xs = {float(x) for x in use[key] if not log or float(x) > 0}
    if len(xs) < 2:
        pos = "positive " if log else ""
        res.reason = f"fewer than two {pos}values of {key} with usable trials"
        return res
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, g) in enumerate(_cells(use, _others(factors, key))):
        color = f"C{i % 10}"
        stats = g.groupby(key)[value].agg(["mean", "std"]).reset_index()
        pos = stats[stats[key] > 0] if log else stats
        ax.errorbar(pos[key], pos["mean"], yerr=pos["std"].fillna(0), marker="o", capsize=3,
                    color=color, label=label if label != "all" else None)
        dots = g[g[key] > 0] if log else g
        ax.scatter(dots[key], dots[value], s=10, alpha=0.4, color=color)
        for _, z in stats[stats[key] == 0].iterrows() if log else ():
            ax.axhline(z["mean"], ls="--", color=color, lw=1, label=f"{label} (weight 0)"
                       if label != "all" else "weight 0")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(key + (" (log)" if log else ""))
    ax.set_ylabel(value)
    ax.set_title(res.title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    res.paths = save_figure(fig, Path(out_dir), name)
    return res


def _curve_cells(df: pd.DataFrame, metric: str, factors: list[str]) -> list[tuple[str, Any]]:
    rows = df[df["step"].notna()]
    if "diverged" in rows:  # a diverged report carries fid = inf, not a point on the curve
        rows = rows[~rows["diverged"].fillna(False).astype(bool)]
    rows = rows[np.isfinite(pd.to_numeric(rows[metric], errors="coerce"))]
    out = []
    for label, g in _cells(rows, factors):
        curve = g.groupby("step")[metric].agg(["mean", "std", "count"])
        if not curve.empty:
            out.append((label, curve))
    return out


def _top(cells: list[tuple[str, Any]], metric: str) -> tuple[list[tuple[str, Any]], str]:
    if len(cells) <= MAX_CELLS:
        return cells, ""
    better = direction(metric) or "min"
    score = [(c["mean"].min() if better == "min" else -c["mean"].max()) for _, c in cells]
    keep = sorted(range(len(cells)), key=lambda i: score[i])[:MAX_CELLS]
    return [cells[i] for i in sorted(keep)], f" (best {MAX_CELLS} of {len(cells)} cells)"


def learning_curves(df: pd.DataFrame, out_dir: str | Path, metric: str = "fid") -> PlotResult:
    """``metric`` against step, one line per cell (mean over its seeds) with a ± std band
    where two or more seeds report that step."""
    res = PlotResult(f"{metric}_curves", f"{metric} over training per cell (mean ± std over "
                                         "seeds; dotted: fewer seeds, the others stopped)")
    if metric not in df.columns:
        res.reason = f"{metric} is not reported"
        return res
    cells, more = _top(_curve_cells(df, metric, list(df.attrs.get("factors", []))), metric)
    if not cells or all(len(c) < 2 for _, c in cells):
        res.reason = f"fewer than two reports of {metric} per cell"
        return res
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, c) in enumerate(cells):
        color = f"C{i % 10}"
        # Where seeds have stopped, the mean is over the survivors only: draw that part dotted.
        full = c[c["count"] == c["count"].max()]
        ax.plot(c.index, c["mean"], ls=":", color=color)
        ax.plot(full.index, full["mean"], marker=".", color=color, label=label)
        band = c[c["count"] >= 2]
        ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"],
                        color=color, alpha=0.15, lw=0)
    ax.set_xlabel("step (G updates)")
    ax.set_ylabel(metric)
    res.title += more
    ax.set_title(res.title, fontsize=10)
    ax.legend(fontsize=7, ncol=1 if len(cells) <= 4 else 2)
    res.paths = save_figure(fig, Path(out_dir), res.name)
    return res


def dig_curves(df: pd.DataFrame, out_dir: str | Path) -> PlotResult:
    """DIG (discriminator gradient gap) against step on a log scale, per data fraction when
    ``data.fraction`` is swept, else per cell."""
    res = PlotResult("dig_curves", "discriminator gradient gap over training")
    if "dig" not in df.columns:
        res.reason = "dig is not reported"
        return res
    factors = list(df.attrs.get("factors", []))
    by = ["data.fraction"] if "data.fraction" in factors else factors
    rows = df[pd.to_numeric(df["dig"], errors="coerce") > 0]  # log scale: positive gaps only
    cells, more = _top(_curve_cells(rows, "dig", by), "dig")
    if not cells or all(len(c) < 2 for _, c in cells):
        res.reason = "fewer than two positive dig reports per group"
        return res
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, c) in enumerate(cells):
        ax.plot(c.index, c["mean"], marker=".", color=f"C{i % 10}", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step (G updates)")
    ax.set_ylabel("DIG (log)")
    res.title += (" per data fraction" if by == ["data.fraction"] else " per cell") + more
    ax.set_title(res.title, fontsize=10)
    ax.legend(fontsize=7)
    res.paths = save_figure(fig, Path(out_dir), res.name)
    return res


def importance_bars(importances: dict[str, float], out_dir: str | Path,
                    reason: str = "", metric: str = "fid") -> PlotResult:
    """Horizontal bars of fANOVA importances (skipped with ``reason`` when there are none)."""
    res = PlotResult("importance", f"fANOVA importance of the swept factors for {metric}")
    if not importances:
        res.reason = reason or "no importances"
        return res
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(items)))
    ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of variance explained")
    ax.set_title(res.title, fontsize=10)
    res.paths = save_figure(fig, Path(out_dir), res.name)
    return res


def _samples(fs: pafs.FileSystem, ckpt: str, n: int = 64) -> tuple[Any, int]:
    """``n`` samples of the checkpoint's EMA generator (fixed latent seed) and its step."""
    import torch

    from tuneable_gan.checkpoint import read_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        for f in ("state.pt", "config.yaml"):  # works for remote checkpoints too
            with fs.open_input_stream(f"{ckpt}/{f}") as src, open(os.path.join(tmp, f),
                                                                   "wb") as dst:
                dst.write(src.read())
        state, cfg = read_checkpoint(tmp, map_location="cpu")
    rng = torch.get_rng_state()  # building models draws from the global RNG: give it back
    try:
        # Instance priors need their stored features and fitted density: the trainer's.
        if cfg.prior.network == "none":
            try:
                return _from_ema(state, cfg, n), int(state["step"])
            except (RuntimeError, KeyError):
                pass  # a state G alone cannot load (e.g. pruning masks): the trainer can
        from tuneable_gan.trainer import GANTrainer

        trainer = GANTrainer(cfg, device="cpu")
        trainer.load_state_dict(state)
        return trainer.samples(n), int(state["step"])
    finally:
        torch.set_rng_state(rng)


def _g_mode(cfg: Any) -> tuple[str, int | None]:
    """(eval.g_mode, sampling batch) the run evaluated with. Runs store their resolved config;
    one saved before these keys existed gets what resolution gives it now (the arch's
    reference mode; in train mode the G batch)."""
    from tuneable_gan.models import reference_setting

    mode = cfg.eval.g_mode or reference_setting(cfg.model.arch, "eval.g_mode")
    if mode != "train":
        return mode, None
    o = cfg.optim
    return mode, cfg.eval.g_batch_size or getattr(o, "g_batch_size", None) or o.batch_size


def _from_ema(state: dict[str, Any], cfg: Any, n: int) -> Any:
    # G_ema alone, not a GANTrainer: the trainer pulls in torch-fidelity and torchvision
    # (~4 s of imports) and builds D and optimizers a picture does not need.
    import torch

    from tuneable_gan.data import load_data
    from tuneable_gan.models import DataSpec, build_models
    from tuneable_gan.models.spectral import generate

    data = load_data(cfg.data, "train")
    G, _ = build_models(cfg.model, DataSpec(data.shape, data.num_classes))
    G.load_state_dict(state["G_ema"])
    gen = torch.Generator().manual_seed(0)
    z = G.sample_z(n, gen, torch.device("cpu"))
    # G's own flag: an unresolved config's model.conditional is null even for a conditional G.
    y = torch.arange(n) % data.num_classes if G.conditional else None
    # As the run's evaluation generates: exact spectral norm, the run's BatchNorm mode.
    mode, batch = _g_mode(cfg)
    return generate(G, z, y, mode=mode, batch_size=batch)


def _grid(x: Any) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one (rows*H, cols*W, C) image in [0, 1], 1 px gaps."""
    x = ((x.clamp(-1, 1) + 1) / 2).numpy()
    n, c, h, w = x.shape
    cols = max(1, int(round(n ** 0.5)))
    rows = math.ceil(n / cols)
    img = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        img[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = \
            x[i].transpose(1, 2, 0)
    return img


def sample_grids(tv: pd.DataFrame, experiment: str, out_dir: str | Path,
                 value: str = "fid", reports: pd.DataFrame | None = None) -> PlotResult:
    """Samples of the best trial (by ``value``) of each cell from its best checkpoint by
    ``value`` (``checkpoints.best_checkpoint`` over the trial's ``reports``), one panel
    per cell (best cells first when there are more than ``MAX_CELLS``); each panel is also
    written alone under ``samples/`` (PNG; 1-D toy samples as ``viz.save_samples``'s
    histogram)."""
    from tuneable_gan.errors import UserError
    from tuneable_gan.viz import save_samples

    res = PlotResult("samples", "samples of the best trial per cell (EMA generator, its best "
                                f"checkpoint by {value})")
    factors = list(tv.attrs.get("factors", []))
    better = direction(value) or "min"
    picks = []
    for label, g in _cells(tv, factors):
        g = g.assign(_v=g[value].where(g["usable"])).sort_values(
            "_v", ascending=better == "min", na_position="last")
        picks.append((label, g.iloc[0]))
    picks.sort(key=lambda p: (pd.isna(p[1]["_v"]), p[1]["_v"] if better == "min"
                              else -p[1]["_v"] if pd.notna(p[1]["_v"]) else 0))
    panels, problems = [], []
    for label, row in picks[:MAX_CELLS]:
        mine = (reports[reports["trial_id"] == row["trial_id"]] if reports is not None
                else pd.DataFrame([row]))
        found = best_checkpoint(experiment, mine, value) if row.get("trial_dir") else None
        if found is None:
            problems.append(f"{label}: no checkpoint")
            continue
        try:
            x, step = _samples(found.fs, found.path)
        except (UserError, OSError, RuntimeError, KeyError) as e:
            problems.append(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        safe = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in label)
        if x.dim() != 4:  # viz draws 1-D points as a histogram with matplotlib
            save_samples(x, Path(out_dir) / "samples" / f"{safe}.png")
        else:
            Path(out_dir, "samples").mkdir(parents=True, exist_ok=True)
            plt.imsave(Path(out_dir) / "samples" / f"{safe}.png", _grid(x).squeeze(-1)
                       if x.shape[1] == 1 else _grid(x), cmap="gray", vmin=0, vmax=1)
        panels.append((f"{label}\n{row['trial_id']} @ step {step}", x))
    if not panels:
        res.reason = "; ".join(problems) or "no trials"
        return res
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, x) in zip(axes.flat, panels):
        _panel(ax, x)
        ax.set_title(title, fontsize=7)
    # Sample pictures are raster data: an SVG would only wrap the same pixels, 4x larger.
    res.paths = save_figure(fig, Path(out_dir), res.name, svg=False)
    if problems:
        res.reason = "skipped " + "; ".join(problems)
    return res


def _panel(ax: Any, x: Any) -> None:
    if x.dim() == 4:
        grid = _grid(x)
        ax.imshow(grid[..., 0] if x.shape[1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    else:  # the 1-D toy: a histogram of the generated points
        ax.axis("on")
        ax.hist(x.flatten().numpy(), bins=40, color="C0")
        ax.set_yticks([])


def make_plots(df: pd.DataFrame, tv: pd.DataFrame, out_dir: str | Path, *, metric: str = "fid",
               importances: dict[str, float] | None = None, importance_reason: str = "",
               reading: str = "", samples: bool = True) -> list[PlotResult]:
    """Every figure the data supports (``tv``: ``stats.trial_values`` of the reading used for
    the per-cell plots, described by ``reading``); skipped ones carry their reason."""
    out = Path(out_dir)
    results = [learning_curves(df, out, metric),
               metric_vs_factor(tv, out, "regularizer.weight", metric, reading),
               metric_vs_factor(tv, out, "sparsity.level", metric, reading),
               dig_curves(df, out),
               importance_bars(importances or {}, out, importance_reason, metric)]
    if samples:
        results.append(sample_grids(tv, str(df.attrs.get("experiment", "")), out, metric, df))
    return results

