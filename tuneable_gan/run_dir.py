"""A command-line run's directory: checks of ``--out`` and ``--resume``, ``config.yaml``,
``run.json``, ``metrics.jsonl``, checkpoints and samples, and ``RunDirSink``, the loop's sink
that writes them (``tuneable_gan.loop``)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tuneable_gan import loop
from tuneable_gan.checkpoint import CheckpointStore, read_checkpoint
from tuneable_gan.config import Config, from_dict, load_config, read_yaml
from tuneable_gan.errors import CheckpointError, ConfigError, Diverged, UserError
from tuneable_gan.loop import Events
from tuneable_gan.resolve import resolve
from tuneable_gan.trainer import GANTrainer

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

# What --resume may change: none of these alters the run's mathematics.
RESUMABLE_KEYS = frozenset({"train.steps", "train.eval_every", "train.checkpoint_every",
                            "train.log_every"})


def config_diff(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = old.flat(), new.flat()
    return sorted(k for k in a if a[k] != b[k])


def _check_out_dir(out: Path, trainer: GANTrainer, resume: bool) -> Path | None:
    """Validate --out against --resume; the checkpoint to resume from, if any. The stored
    config is compared after resolving both (paper defaults filled), so ``weight: null`` and
    the value it stands for are the same run."""
    stored = out / "config.yaml"
    if not resume:
        if stored.exists():
            raise UserError(f"--out {out} holds a run already; pass --resume to continue it, "
                            "or choose another --out")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"--out {out} is not an empty directory; choose another --out")
        return None
    if not stored.is_file():
        raise CheckpointError(f"--resume: {out} holds no run (no config.yaml); "
                              "drop --resume to start one")
    try:
        old = resolve(from_dict(read_yaml(stored)), trainer.spec)
    except ConfigError as e:
        raise CheckpointError(f"--resume: stored {stored} is invalid: {e.problems[0]}") from None
    changed = [k for k in config_diff(old, trainer.cfg) if k not in RESUMABLE_KEYS]
    if changed:
        raise UserError(f"--resume: {out} holds a different run; these keys differ from its "
                        f"config: {', '.join(changed)} (only {', '.join(sorted(RESUMABLE_KEYS))} "
                        "may change)")
    latest = CheckpointStore(out).latest()
    if latest is None:
        raise CheckpointError(f"--resume: {out} has no checkpoint to resume from")
    return latest


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from, so the log matches the state."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


def _eval_line(m: dict[str, Any], prefix: str = "") -> str:
    shown = [k for k in ("fid", "fid_best", "is_mean", "kid", "modes_covered", "w1", "w1_best")
             if prefix + k in m]
    where = f"{prefix.rstrip('_')} round {m['round']}, " if prefix else ""
    return f"{where}step {m['step']}: " + "  ".join(f"{k}={m[prefix + k]:.4g}" for k in shown)


class RunDirSink:
    """``loop.Sink`` of a command-line run: a ``metrics.jsonl`` row at every log or eval step
    (the step's own values), a progress bar, checkpoints in ``<out>/checkpoints`` (named by G
    steps on the whole schedule, ``step + phase.lead``; ``best`` at each new best FID)."""

    def __init__(self, out: Path, store: CheckpointStore, bar: Any) -> None:
        self.log = out / "metrics.jsonl"
        self.store = store
        self.bar = bar
        self.code = 0
        self.t0, self.ran = time.perf_counter(), 0

    def on_step(self, trainer: GANTrainer, metrics: dict[str, float],
                row: dict[str, Any] | None, due: Events) -> None:
        self.ran += 1
        self.bar.update(trainer.step + trainer.phase.lead - self.bar.n)  # reused rounds skip
        if row is not None:
            now = time.perf_counter()
            row["steps_per_s"] = self.ran / max(now - self.t0, 1e-9)
            self.t0, self.ran = now, 0
            if due.eval:
                if trainer.best.get("step") == trainer.step:
                    self.store.save_best(trainer.state_dict(), trainer.cfg)
                self.bar.write(_eval_line(row, trainer.phase.metric_prefix))
            _append_jsonl(self.log, [row | {"diverged": False}])
            self.bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}",
                                 dig=f"{row.get('dig', float('nan')):.3g}")
        if due.checkpoint:
            self.save(trainer)

    def save(self, trainer: GANTrainer) -> Path:
        """A checkpoint of the trainer's state now."""
        return self.store.save(trainer.step + trainer.phase.lead, trainer.state_dict(),
                               trainer.cfg)

    def on_diverged(self, trainer: GANTrainer, error: Diverged) -> None:
        _append_jsonl(self.log, [{"step": error.step, "diverged": True, **error.values}])
        print(f"tuneable-gan: {error}; the run stopped (last checkpoint: "
              f"{self.store.latest()})", file=sys.stderr)
        self.code = EXIT_DIVERGED


def train(config: str, overrides: list[str], out: Path, resume: bool = False,
          quiet: bool = False) -> int:
    """``tuneable-gan train``: run (or resume) one run in ``out``; the exit code (0 done, 3
    diverged, 130 interrupted). User errors raise before anything is written."""
    from tqdm import tqdm

    from tuneable_gan.viz import save_samples

    cfg = load_config(config, overrides)
    trainer = GANTrainer(cfg)  # lottery tickets: tickets.default_root()
    ckpt = _check_out_dir(out, trainer, resume)
    trainer.evaluator  # noqa: B018  (built now: its errors must come before anything is written)
    if ckpt is not None:
        state, old = read_checkpoint(ckpt, map_location=trainer.device)
        problem = trainer.phase.resume_problem(old)
        if problem:
            raise UserError(f"--resume: {problem}")
        trainer.load_state_dict(state)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(trainer.cfg.to_yaml())
    (out / "run.json").write_text(json.dumps({
        "regularizer": trainer.cfg.to_dict()["regularizer"], "device": str(trainer.device)},
        indent=1))
    _truncate_log(out / "metrics.jsonl", trainer.step)
    store = CheckpointStore(out)
    bar = tqdm(total=trainer.phase.total, initial=trainer.step + trainer.phase.lead,
               disable=quiet, unit="step", dynamic_ncols=True)
    sink = RunDirSink(out, store, bar)
    try:
        loop.run(trainer, [sink])
    except KeyboardInterrupt:
        sink.save(trainer)
        print(f"tuneable-gan: interrupted at step {trainer.step}; checkpoint saved, "
              f"continue with --resume", file=sys.stderr)
        sink.code = EXIT_INTERRUPTED
    finally:
        bar.close()
        trainer.close()
    save_samples(trainer.samples(64), out / "samples.png",
                 real=trainer.data.images if trainer.data.images.dim() == 2 else None)
    return sink.code
