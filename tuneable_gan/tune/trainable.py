"""The Ray Tune function trainable: a thin adapter over GANTrainer.

restore from ``tune.get_checkpoint()`` -> per Tune iteration train ``train.eval_every`` G steps,
evaluate, report one flat dict -> attach a checkpoint to the first report at or after each
multiple of ``train.checkpoint_every`` and to the last one. A diverged trial reports once with
``fid = inf`` and ``diverged = True`` and stops; the sweep goes on.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.config import Config
from tuneable_gan.errors import Diverged
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.tune.space import spec_from_dict


def trial_device(cfg: Config) -> str:
    """The device Ray assigned: a trial that asked for no GPU still sees every GPU in Ray 2.60,
    so the choice comes from ``ray.get_gpu_ids()``, never from CUDA availability alone."""
    if cfg.train.device == "cpu" or not ray.get_gpu_ids() or not torch.cuda.is_available():
        return "cpu"
    return "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the assigned ids, so it is always 0


class _Window:
    """Means of the per-step training metrics over one report interval."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.t0 = time.perf_counter()

    def add(self, m: dict[str, float]) -> None:
        self.n += 1
        for k, v in m.items():
            if k not in ("step", "images_seen", "sparsity"):
                self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self) -> dict[str, float]:
        out = {k: s / self.n for k, s in self.sums.items()}
        out["steps_per_s"] = self.n / max(time.perf_counter() - self.t0, 1e-9)
        return out


def _report(metrics: dict[str, Any], trainer: GANTrainer | None, cfg: Config,
            with_checkpoint: bool) -> None:
    if not with_checkpoint or trainer is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = write_checkpoint(Path(tmp) / "checkpoint", trainer.state_dict(), cfg)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(path)))


def train_gan(config: dict[str, Any], spec: dict[str, Any], source: str = "") -> None:
    """Tune trainable. ``config`` holds a trial's swept keys; ``spec`` is the sweep
    (``SweepSpec.to_dict()``), which gives the base config, the resources and the metric."""
    sweep = spec_from_dict(spec, source)
    # Match the CPUs the trial asked for, else every trial spawns a thread per core.
    torch.set_num_threads(max(1, int(sweep.tune.resources.get("cpu", 1))))
    metric, mode = sweep.tune.metric, sweep.tune.mode
    cfg = sweep.trial_config(config)
    trainer = GANTrainer(cfg, device=trial_device(cfg))
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state, _ = read_checkpoint(d, map_location=trainer.device)
        trainer.load_state_dict(state)
    tc = cfg.train
    static = trainer.cfg.flat() | {"reg_weight": trainer.reg.weight, "device": str(trainer.device),
                           "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),
                           "node_id": ray.get_runtime_context().get_node_id()}
    while trainer.step < tc.steps:
        window, start = _Window(), trainer.step
        try:
            for _ in range(min(tc.eval_every, tc.steps - trainer.step)):
                m = trainer.train_step()
                window.add(m)
        except Diverged as e:
            worst = math.inf if mode == "min" else -math.inf
            tune.report(static | e.values | {
                "step": e.step, "images_seen": trainer.images_seen, "fid": math.inf,
                "fid_best": math.inf, metric: worst, "diverged": True})
            return
        metrics = static | window.means() | trainer.evaluate() | {
            "step": trainer.step, "images_seen": trainer.images_seen, "sparsity": m["sparsity"],
            "diverged": False}
        crossed = trainer.step // tc.checkpoint_every > start // tc.checkpoint_every
        _report(metrics, trainer, cfg, crossed or trainer.step >= tc.steps)
