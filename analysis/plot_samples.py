"""The sample-grid figure: EMA-generator samples of the best trial of each cell, from its best
checkpoint by the metric and generated as the run's evaluation does (exact spectral norm,
``eval.g_mode``), beside a grid of as many real images from the run's own training data (its
``data`` config: dataset, fraction subset, resolution), so a reader can tell what the
generator should be producing. Each generated panel names its trial and checkpoint step."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from analysis.checkpoints import best_checkpoint, read_state
from analysis.plot_base import MAX_CELLS, PlotResult, cell_colors, cells, plt, save_figure
from analysis.stats import direction

N_SAMPLES = 64


def _samples(fs: pafs.FileSystem, ckpt: str, n: int = N_SAMPLES,
             cache: dict[Any, Any] | None = None) -> tuple[Any, int, Any]:
    """``n`` samples of the checkpoint's EMA generator (fixed latent seed), its step and the
    run's config. ``cache``: training data already loaded, by data config."""
    import torch

    state, cfg = read_state(fs, ckpt)
    rng = torch.get_rng_state()  # building models draws from the global RNG: give it back
    try:
        # Instance priors need their stored features and fitted density: the trainer's.
        if cfg.prior.network == "none":
            try:
                data = _train_data(cfg.data, cache)
                return _from_ema(state, cfg, n, data), int(state["step"]), cfg
            except (RuntimeError, KeyError):
                pass  # a state G alone cannot load (e.g. pruning masks): the trainer can
        from tuneable_gan.trainer import GANTrainer

        trainer = GANTrainer(cfg, device="cpu")
        trainer.load_state_dict(state)
        return trainer.samples(n), int(state["step"]), cfg
    finally:
        torch.set_rng_state(rng)


def _train_data(data_cfg: Any, cache: dict[Any, Any] | None = None) -> Any:
    """A run's training data, ``load_data(data_cfg, "train")`` (its fraction subset, at its
    resolution); loaded once per data config into ``cache``."""
    from tuneable_gan.data import load_data

    if cache is None:
        return load_data(data_cfg, "train")
    if data_cfg not in cache:
        cache[data_cfg] = load_data(data_cfg, "train")
    return cache[data_cfg]


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


def _from_ema(state: dict[str, Any], cfg: Any, n: int, data: Any = None) -> Any:
    """``n`` samples of ``state["G_ema"]`` as the run's evaluation generates them; ``data``:
    the run's training data when already loaded (it gives G's shape and classes)."""
    # G_ema alone, not a GANTrainer: the trainer pulls in torch-fidelity and torchvision
    # (~4 s of imports) and builds D and optimizers a picture does not need.
    import torch

    from tuneable_gan.models import DataSpec, build_models
    from tuneable_gan.models.spectral import generate

    data = _train_data(cfg.data) if data is None else data
    G, _ = build_models(cfg.model, DataSpec(data.shape, data.num_classes))
    G.load_state_dict(state["G_ema"])
    gen = torch.Generator().manual_seed(0)
    z = G.sample_z(n, gen, torch.device("cpu"))
    # G's own flag: an unresolved config's model.conditional is null even for a conditional G.
    y = torch.arange(n) % data.num_classes if G.conditional else None
    # As the run's evaluation generates: exact spectral norm, the run's BatchNorm mode.
    mode, batch = _g_mode(cfg)
    return generate(G, z, y, mode=mode, batch_size=batch)


def real_samples(data: Any, n: int = N_SAMPLES, seed: int = 0) -> Any:
    """``n`` training images (a seeded choice without replacement; all of them when there are
    fewer), as the generator's samples are laid out: (n, C, H, W) in [-1, 1], or points."""
    import torch

    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.images[idx]


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


def _real_panels(configs: list[Any], cache: dict[Any, Any], n: int,
                 problems: list[str]) -> list[tuple[str, Any]]:
    """One real-data panel per distinct training set among the runs' ``configs`` (usually
    one), titled by what it is and, when there are several, by what tells them apart."""
    from tuneable_gan.errors import UserError

    datas = list(dict.fromkeys(c.data for c in configs))
    differ = [f.name for f in fields(datas[0]) if len({getattr(d, f.name) for d in datas}) > 1] \
        if datas else []
    out = []
    for d in datas:
        try:
            data = _train_data(d, cache)
            x = real_samples(data, n)
        except (UserError, OSError, RuntimeError, KeyError, ValueError) as e:
            problems.append(f"real data: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        size = "×".join(map(str, data.shape[1:])) if x.dim() == 4 else "points"
        extra = "".join(f", {k}={getattr(d, k)}" for k in differ)
        out.append((f"real training data\n{d.name} {size}{extra}: {len(x)} of {len(data)}", x))
    return out


def sample_grids(tv: pd.DataFrame, experiment: str, out_dir: str | Path,
                 value: str = "fid", reports: pd.DataFrame | None = None, *,
                 colors: dict[str, str] | None = None, n: int = N_SAMPLES) -> PlotResult:
    """``n`` samples of the best trial (by ``value``) of each cell from its best checkpoint by
    ``value`` (``checkpoints.best_checkpoint`` over the trial's ``reports``), one panel per
    cell titled with its trial and checkpoint step (best cells first when there are more than
    ``MAX_CELLS``), after one panel of ``n`` real images per distinct training set
    (``load_data(cfg.data, "train")`` of the checkpoints' configs). Cell titles take the
    cell's colour (``colors``, default ``plot_base.cell_colors(tv)``). Each generated panel
    is also written alone under ``samples/`` (PNG; 1-D toy samples as
    ``viz.save_samples``'s histogram)."""
    from tuneable_gan.errors import UserError
    from tuneable_gan.viz import save_samples

    res = PlotResult("samples", "samples of the best trial per cell (EMA generator, its best "
                                f"checkpoint by {value})")
    factors = list(tv.attrs.get("factors", []))
    colors = cell_colors(tv) if colors is None else colors
    better = direction(value) or "min"
    picks = []
    for label, g in cells(tv, factors):
        g = g.assign(_v=g[value].where(g["usable"])).sort_values(
            "_v", ascending=better == "min", na_position="last")
        picks.append((label, g.iloc[0]))
    picks.sort(key=lambda p: (pd.isna(p[1]["_v"]), p[1]["_v"] if better == "min"
                              else -p[1]["_v"] if pd.notna(p[1]["_v"]) else 0))
    panels, problems, configs, cache = [], [], [], {}
    for label, row in picks[:MAX_CELLS]:
        mine = (reports[reports["trial_id"] == row["trial_id"]] if reports is not None
                else pd.DataFrame([row]))
        found = best_checkpoint(experiment, mine, value) if row.get("trial_dir") else None
        if found is None:
            problems.append(f"{label}: no checkpoint")
            continue
        try:
            x, step, cfg = _samples(found.fs, found.path, n, cache)
        except (UserError, OSError, RuntimeError, KeyError) as e:
            problems.append(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        configs.append(cfg)
        safe = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in label)
        if x.dim() != 4:  # viz draws 1-D points as a histogram with matplotlib
            save_samples(x, Path(out_dir) / "samples" / f"{safe}.png")
        else:
            Path(out_dir, "samples").mkdir(parents=True, exist_ok=True)
            plt.imsave(Path(out_dir) / "samples" / f"{safe}.png", _grid(x).squeeze(-1)
                       if x.shape[1] == 1 else _grid(x), cmap="gray", vmin=0, vmax=1)
        panels.append((f"{label}\n{row['trial_id']} @ step {step}", x, colors.get(label)))
        res.colors[label] = colors.get(label, "black")
    if not panels:
        res.reason = "; ".join(problems) or "no trials"
        return res
    real = [(t, x, "black") for t, x in _real_panels(configs, cache, n, problems)]
    shown = real + panels
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, x, color) in zip(axes.flat, shown):
        _panel(ax, x, "C7" if color == "black" else color or "C0")
        ax.set_title(title, fontsize=7, color=color or "black")
    # Sample pictures are raster data: an SVG would only wrap the same pixels, 4x larger.
    res.paths = save_figure(fig, Path(out_dir), res.name, svg=False)
    if problems:
        res.reason = "skipped " + "; ".join(problems)
    return res


def _panel(ax: Any, x: Any, color: str = "C0") -> None:
    if x.dim() == 4:
        grid = _grid(x)
        ax.imshow(grid[..., 0] if x.shape[1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    else:  # the 1-D toy: a histogram of the points
        ax.axis("on")
        ax.hist(x.flatten().numpy(), bins=40, color=color)
        ax.set_yticks([])
