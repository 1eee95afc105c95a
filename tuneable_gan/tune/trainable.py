"""The Ray Tune function trainable: a thin adapter over GANTrainer.

restore from ``tune.get_checkpoint()`` -> per Tune iteration train ``train.eval_every`` G steps,
evaluate, report one flat dict -> attach a checkpoint to the first report at or after each
multiple of ``train.checkpoint_every`` and to the last one. A diverged trial reports once with
``fid = inf`` and ``diverged = True`` and stops; the sweep goes on.

Lottery tickets (``sparsity.level > 0``): the same loop runs the ticket rounds (stage I) and then
the ticket (stage II); the cadence restarts in every round and every round's end is reported
with a checkpoint. Every report carries ``stage`` (ticket | train), ``round``, ``stage_step``,
``rounds_computed``, ``rounds_reused`` and the measured ``sparsity`` of G's conv weights. A
stage-I report's ``step`` counts up to 0 (-K*L+1 .. 0) and its evaluation of the round's G_ema is
named ``ticket_fid`` etc.; the sweep's metric is NaN there, so no stage-I number can pass for the
trial's result (the spaces refuse ASHA for this reason, see ``space``). Tickets are shared
through ``<storage>/<name>/tickets`` (``ticket_root``).
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.config import Config
from tuneable_gan.errors import Diverged
from tuneable_gan.tickets import default_root
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.tune.space import SweepSpec, spec_from_dict


def ticket_root(sweep: SweepSpec) -> tuple[Path, str]:
    """(root, warning) of the ticket store a sweep's trials share: ``<storage>/<name>/tickets``
    for local storage (on a cluster it must be a shared mount with a working ``flock``);
    for a remote URI, ``tickets.default_root()`` ($TUNEABLE_GAN_TICKETS or the user cache) and
    a warning, since tickets need a file system that every trial can lock."""
    storage = sweep.tune.storage
    if storage.startswith("file://"):
        storage = storage[len("file://"):]
    if "://" not in storage:
        return Path(storage) / sweep.name / "tickets", ""
    root = default_root()
    return root, (f"tune.storage={storage} is remote: lottery tickets are shared through {root} "
                  "instead; on a cluster set TUNEABLE_GAN_TICKETS on every node to one shared "
                  "mount, else each node finds its own tickets")


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
    root, warning = ticket_root(sweep)
    if warning and cfg.sparsity.level > 0:
        warnings.warn(warning, stacklevel=1)
    trainer = GANTrainer(cfg, device=trial_device(cfg), tickets=root)
    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                state, _ = read_checkpoint(d, map_location=trainer.device)
            trainer.load_state_dict(state)
        _train(trainer, cfg, metric, mode)
    finally:
        trainer.close()  # a trial stopped mid-round must not keep its ticket lock


def _train(trainer: GANTrainer, cfg: Config, metric: str, mode: str) -> None:
    tc = cfg.train
    static = trainer.cfg.flat() | {"reg_weight": trainer.reg.weight, "device": str(trainer.device),
                           "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),
                           "node_id": ray.get_runtime_context().get_node_id()}
    while not trainer.finished:
        window, checkpoint = _Window(), False
        try:
            while True:
                window.add(trainer.train_step())
                checkpoint = checkpoint or trainer.at_boundary(tc.checkpoint_every)
                if trainer.at_boundary(tc.eval_every):
                    break
        except Diverged as e:
            worst = math.inf if mode == "min" else -math.inf
            tune.report(static | e.values | trainer.describe_stage() | {
                "step": e.step, "images_seen": trainer.images_seen, "fid": math.inf,
                "fid_best": math.inf, metric: worst, "diverged": True})
            return
        metrics = static | window.means() | trainer.evaluate() | trainer.describe_stage() | {
            "step": trainer.log_step, "images_seen": trainer.images_seen,
            "sparsity": trainer.sparsity(), "diverged": False}
        metrics.setdefault(metric, math.nan)  # stage I: Tune needs the key, there is no value
        _report(metrics, trainer, cfg, checkpoint or trainer.finished)
