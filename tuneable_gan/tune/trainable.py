"""The Ray Tune function trainable: the one training loop (``tuneable_gan.loop``) with a sink
that reports to Tune.

restore from ``tune.get_checkpoint()`` -> run the loop -> at every evaluation (each
``train.eval_every`` G steps and at a phase's end) one ``tune.report`` of a flat dict: the
trial's resolved config flattened (so ``regularizer.weight`` is the lambda the trial used, paper
rule included), the training metrics averaged over the steps since the last report, the
evaluation, the phase's description, ``step``, ``images_seen``, ``sparsity``, ``device``,
``gpu_ids`` and ``node_id``. A checkpoint is attached to the first report at or after each
multiple of ``train.checkpoint_every``, to each report that improves the trial's best sweep
metric (so the best evaluation has one: Tune keeps the ``num_to_keep`` best by the metric and
the newest, ``launch``) and to the last. A diverged trial reports once with
``fid = inf`` and ``diverged = True`` and stops; the sweep goes on.

Each trial gets its ``TrialContext`` once, built by the driver from the validated sweep: the base
document and the cell rules (``space.TrialBase``) and what the trial needs of the Tune settings.
The trial validates only its own config (``space.trial_config``), never the whole sweep spec
again.

Each evaluation also writes its sample grid (64 G_ema samples, the report's fixed latent seed)
as an image into the trial's TensorBoard log (an events file beside Ray's scalars, synced with
the trial's artifacts).

PBT / PB2 (``space_pbt``): a report at each multiple of the perturbation interval carries a
checkpoint, and every checkpoint names the trial that wrote it (``origin.json``). A trial
restored from another trial's checkpoint is a clone: it loads the donor's state under its own
mutated config (learning rates and betas re-applied to the loaded optimizers), folds its random
streams with its id and the donor's step, and reports ``pbt_parent`` and ``pbt_cloned_at``.

Lottery tickets (``sparsity.level > 0``): stage-I reports carry ``stage = ticket``, a ``step``
counting up to 0 and ``ticket_fid`` etc.; the sweep's metric is NaN there, so no stage-I number
can pass for the trial's result (the spaces refuse ASHA for this reason, see ``space``). Tickets
are shared through ``<storage>/<name>/tickets`` (``ticket_root``).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from tuneable_gan import loop
from tuneable_gan.checkpoint import restore_first, write_checkpoint
from tuneable_gan.config import Config
from tuneable_gan.constants import SEED_KEY
from tuneable_gan.device import cap_memory
from tuneable_gan.errors import Diverged
from tuneable_gan.loop import Events
from tuneable_gan.tickets import default_root
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.tune.space import SweepSpec, TrialBase, trial_config
from tuneable_gan.tune.space_pbt import MUTABLE, PBT_SCHEDULERS

# Training metrics a report averages over its interval (the rest are states, not rates).
NOT_AVERAGED = frozenset({"step", "images_seen", "sparsity"})
SAMPLE_GRID = 64  # samples in each evaluation's TensorBoard image
ORIGIN_FILE = "origin.json"  # in a trial's checkpoint: which trial wrote it, at which step


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


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares, resolved once by the driver: ``base`` builds each
    trial's config from its params (the base document, the cell rules, the base seed)."""

    base: TrialBase
    search: str
    metric: str
    mode: str
    cpus: int
    tickets: str
    tickets_warning: str = ""
    gpu: float = 0.0  # tune.resources.gpu, what Tune gives each trial
    pbt_interval: int = 0  # PBT/PB2's perturbation interval in G steps (0: no PBT)

    @classmethod
    def of(cls, sweep: SweepSpec) -> TrialContext:
        """The context of ``sweep``'s trials."""
        root, warning = ticket_root(sweep)
        t = sweep.tune
        pbt = t.scheduler.params.get("perturbation_interval", 0) if t.scheduler.name in (
            PBT_SCHEDULERS) else 0
        return cls(base=sweep.trial_base(), search=t.search, metric=t.metric, mode=t.mode,
                   cpus=max(1, int(t.resources.get("cpu", 1))), tickets=str(root),
                   tickets_warning=warning, gpu=float(t.resources.get("gpu", 0)),
                   pbt_interval=int(pbt))


def trial_device(cfg: Config) -> str:
    """The device Ray assigned: a trial that asked for no GPU still sees every GPU in Ray 2.60,
    so the choice comes from ``ray.get_gpu_ids()``, never from CUDA availability alone."""
    if cfg.train.device == "cpu" or not ray.get_gpu_ids() or not torch.cuda.is_available():
        return "cpu"
    return "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the assigned ids, so it is always 0


class TuneSink:
    """``loop.Sink`` of a Tune trial: one report per evaluation, training metrics averaged over
    the iterations of its interval that were read (the ``train.log_every`` cadence, the
    evaluation's own and a phase's last: each key over those that recorded it), a checkpoint
    attached when one fell due in the interval or the run ended.

    The trainer reads nothing from the device between those iterations (``record_every_step``
    off, set here), so a trial pays no host synchronisation and no DIG probe there, as the
    reference's own training loop pays none."""

    def __init__(self, trainer: GANTrainer, metric: str, mode: str, pbt_interval: int = 0,
                 lineage: dict[str, Any] | None = None) -> None:
        trainer.record_every_step = False
        self.static = trainer.cfg.flat() | {
            "device": str(trainer.device),
            "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),
            "node_id": ray.get_runtime_context().get_node_id()} | (lineage or {})
        self.metric, self.mode = metric, mode
        self.pbt_interval, self.lineage = pbt_interval, dict(lineage or {})
        self.images: Any = None  # the trial's TensorBoard writer of sample grids, when opened
        self.best: float | None = None  # the trial's best metric so far (this attempt)
        self._start_interval()

    def _start_interval(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.n = 0
        self.t0 = time.perf_counter()
        self.checkpoint = False

    def on_step(self, trainer: GANTrainer, metrics: dict[str, float],
                row: dict[str, Any] | None, due: Events) -> None:
        self.n += 1
        for k, v in metrics.items():
            if k not in NOT_AVERAGED:
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1
        self.checkpoint = self.checkpoint or due.checkpoint
        if not due.eval:
            return
        assert row is not None
        means = {k: s / self.counts[k] for k, s in self.sums.items()}
        means["steps_per_s"] = self.n / max(time.perf_counter() - self.t0, 1e-9)
        self._sample_grid(trainer)
        report = self.static | row | means | {"diverged": False}
        report.setdefault(self.metric, math.nan)  # stage I: Tune needs the key, there is none
        improved = self._improves(report[self.metric])  # before the or: it keeps the best
        # PBT clones a donor's newest checkpoint at a perturbation: one at each, or a clone
        # of a trial without one would silently restart from scratch (Ray issue 27170).
        perturbs = self.pbt_interval > 0 and row["step"] % self.pbt_interval == 0
        if self.checkpoint or trainer.finished or improved or perturbs:
            with tempfile.TemporaryDirectory() as tmp:
                path = write_checkpoint(Path(tmp) / "checkpoint", trainer.state_dict(),
                                        trainer.cfg)
                write_origin(path, trainer.step, self.lineage)
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(path)))
        else:
            tune.report(report)
        self._start_interval()

    def _sample_grid(self, trainer: GANTrainer) -> None:
        """The evaluation's sample grid (G_ema, the fixed latent seed of the report's grids) as
        an image in the trial's TensorBoard log, beside Ray's scalars; none for 1-D toy data
        or outside a Tune session."""
        where = _trial_dir()
        if where is None:
            return
        x = trainer.samples(SAMPLE_GRID)
        if x.dim() != 4:
            return
        from tensorboardX import SummaryWriter
        from torchvision.utils import make_grid

        if self.images is None:
            self.images = SummaryWriter(logdir=where, filename_suffix=".samples")
        grid = make_grid((x.clamp(-1, 1) + 1) / 2, nrow=round(SAMPLE_GRID ** 0.5), padding=1)
        self.images.add_image("samples", grid, global_step=trainer.step)
        if trainer.finished:  # closed before the last report, whose sync takes the file whole
            self.images.close()
            self.images = None
        else:
            self.images.flush()

    def _improves(self, value: Any) -> bool:
        """Whether ``value`` is finite and better than the best so far (then it is the best)."""
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.best is not None and (value >= self.best if self.mode == "min"
                                      else value <= self.best):
            return False
        self.best = float(value)
        return True

    def on_diverged(self, trainer: GANTrainer, error: Diverged) -> None:
        worst = math.inf if self.mode == "min" else -math.inf
        tune.report(self.static | error.values | trainer.phase.describe() | {
            "step": error.step, "images_seen": trainer.images_seen, "fid": math.inf,
            "fid_best": math.inf, self.metric: worst, "diverged": True})


def _session(what: str) -> str | None:
    """``tune.get_context().<what>()``; None outside a Tune session (a test driving the sink)."""
    try:
        return getattr(tune.get_context(), what)()
    except (RuntimeError, AttributeError):
        return None


def _trial_dir() -> str | None:
    return _session("get_trial_dir")


def _trial_id() -> str | None:
    return _session("get_trial_id")


def write_origin(checkpoint: Path, step: int, lineage: dict[str, Any]) -> None:
    """Name the trial (and step) a checkpoint comes from, so a restore can tell its own
    checkpoint from a PBT donor's, and the trial's latest exploit (``lineage``), which a
    restart from its own checkpoint keeps reporting."""
    trial = _trial_id()
    if trial is not None:
        (checkpoint / ORIGIN_FILE).write_text(json.dumps(
            {"trial_id": trial, "step": step, "lineage": lineage}))


def read_origin(checkpoint: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the donor's origin if another trial wrote ``checkpoint``, a PBT exploit; else None,
    the lineage this trial reports from here on)."""
    try:
        origin = json.loads((checkpoint / ORIGIN_FILE).read_text())
    except (OSError, ValueError):
        return None, {}
    if origin.get("trial_id") in (None, _trial_id()):
        return None, dict(origin.get("lineage") or {})
    return origin, {"pbt_parent": str(origin["trial_id"]),
                    "pbt_cloned_at": int(origin["step"])}


def older_checkpoints(ckpt: tune.Checkpoint) -> list[Path]:
    """The trial's kept checkpoints older than ``ckpt``, newest first, where the storage is a
    local (or mounted) file system; none on remote storage, where only ``ckpt`` is fetched."""
    import pyarrow.fs

    if not isinstance(ckpt.filesystem, pyarrow.fs.LocalFileSystem):
        return []
    here = Path(ckpt.path)
    # Tune names them checkpoint_<zero-padded index>: the name order is the age order.
    return sorted((p for p in here.parent.glob("checkpoint_*")
                   if p.is_dir() and p.name < here.name), reverse=True)


def train_gan(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune trainable. ``config`` holds a trial's swept keys; ``ctx`` the sweep's shared
    context (``TrialContext.of(spec)``)."""
    # Match the CPUs the trial asked for, else every trial spawns a thread per core.
    torch.set_num_threads(ctx.cpus)
    cfg = trial_config(ctx.base, ctx.search, config)
    if ctx.tickets_warning and cfg.sparsity.level > 0:
        warnings.warn(ctx.tickets_warning, stacklevel=1)
    device = trial_device(cfg)
    # Trials Ray packs onto one GPU each keep to their share of its memory, set before the
    # trainer allocates anything there (tuneable_gan.device).
    cap_memory(device, ctx.gpu)
    trainer = GANTrainer(cfg, device=device, tickets=ctx.tickets)
    lineage: dict[str, Any] = {}
    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                donor, lineage = read_origin(Path(d)) if ctx.pbt_interval else (None, {})
                # A PBT clone continues its donor's run with its own mutated values and seed.
                may = frozenset({*MUTABLE, SEED_KEY}) if donor else frozenset()
                # Verified (checksums, same run, shapes); a bad newest one falls back to the older
                # ones num_to_keep kept beside it, as a command-line resume does.
                restore_first(trainer, [Path(d), *older_checkpoints(ckpt)], "trial restore",
                              may_differ=may)
            if donor:
                me = _trial_id() or ""
                salt = hashlib.sha256(f"{me}:{donor['step']}".encode()).digest()
                trainer.fold_rng(int.from_bytes(salt[:7], "little"))
        loop.run(trainer, [TuneSink(trainer, ctx.metric, ctx.mode, ctx.pbt_interval, lineage)])
    finally:
        trainer.close()  # a trial stopped mid-round must not keep its ticket lock
