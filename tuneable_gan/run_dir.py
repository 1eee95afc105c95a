"""A command-line run's directory: checks of ``--out`` and ``--resume``, ``config.yaml``,
``run.json``, ``metrics.jsonl``, checkpoints and samples, and ``RunDirSink``, the loop's sink
that writes them (``tuneable_gan.loop``).

Reliability rules of a run directory:

* Ctrl-C asks the loop to stop at the next step boundary (``Interrupt``), then one checkpoint of
  that step is saved (exit 130): ``--resume`` continues bitwise as the run would have. A second
  Ctrl-C quits at once without saving; ``--resume`` then starts from the last checkpoint.
* ``--resume`` takes the newest checkpoint that verifies (checksum, same run, state fitting
  this run's shapes); a bad newest one is one warning line and the previous one is used.
* A torn last line of ``metrics.jsonl`` (a kill during the append) is dropped with a warning; a
  bad line before it is an error.
* Every write goes through ``disk.writing``: a full disk is one line naming the path, exit 2,
  and what was on disk before (checkpoints, LATEST, the log's complete rows) stays intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from tuneable_gan import loop
from tuneable_gan.checkpoint import (
    RESUMABLE_KEYS,
    CheckpointStore,
    foreign_keys,
    restore_first,
)
from tuneable_gan.clip import clip_line
from tuneable_gan.config import from_dict, load_config, read_yaml
from tuneable_gan.disk import blocked, write_atomic, writing
from tuneable_gan.errors import CheckpointError, ConfigError, Diverged, UserError
from tuneable_gan.loop import Events
from tuneable_gan.resolve import resolve
from tuneable_gan.trainer import GANTrainer

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class Interrupt:
    """Ctrl-C as a stop request (``loop.run``'s ``should_stop``) while inside ``with``.

    The first SIGINT only sets the flag, so the step in flight finishes and the checkpoint is
    of a step boundary; it also puts Python's default handler back, so a second Ctrl-C raises
    KeyboardInterrupt (quit without saving). Outside the main thread signals cannot be
    handled: then it never asks to stop.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # os.write, not print: a handler may run inside a print (tqdm's), and a buffered
        # stream entered twice raises.
        with contextlib.suppress(OSError):
            os.write(2, b"\ntuneable-gan: interrupt: finishing this step, then saving a "
                        b"checkpoint (press Ctrl-C again to quit without saving)\n")

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


@contextlib.contextmanager
def _out_write(path: Path, need: int | None = None) -> Iterator[None]:
    """A write into the run directory: full disk -> DiskFullError, and any other refusal (a
    read-only file system, a permission) one UserError line naming the path."""
    try:
        with writing(path, need):
            yield
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; choose another --out") from None


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` (``disk.write_atomic``: never half-written)."""
    with _out_write(path, len(data)):
        write_atomic(path, data)


def _append(path: Path, text: str) -> None:
    """Append ``text``; on a failed write the file is cut back to its old length, so a full
    disk leaves no torn line (a kill still can: ``_kept_log`` drops that one)."""
    data = text.encode()
    with _out_write(path, len(data)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def _check_writable(out: Path) -> None:
    """``--out`` must be a directory we can create or write: the nearest existing path on its
    way must be a writable directory."""
    why = blocked(out)
    if why and why[1] == "file":
        at = "" if why[0] == out.absolute() else f": {why[0]}"
        raise UserError(f"--out {out}{at} is a file, not a directory; choose another --out")
    if why:
        raise UserError(f"--out {out}: {why[0]} is not writable; choose another --out")


def _check_out_dir(out: Path, trainer: GANTrainer, resume: bool) -> list[Path]:
    """Validate --out against --resume; the checkpoints to resume from, best first (empty for
    a new run). The stored config is compared after resolving both (paper defaults filled), so
    ``weight: null`` and the value it stands for are the same run."""
    _check_writable(out)
    stored = out / "config.yaml"
    if not resume:
        if stored.exists():
            raise UserError(f"--out {out} holds a run already; pass --resume to continue it, "
                            "or choose another --out")
        if out.exists() and any(out.iterdir()):
            raise UserError(f"--out {out} is not an empty directory; choose another --out")
        return []
    if not stored.is_file():
        raise CheckpointError(f"--resume: {out} holds no run (no config.yaml); "
                              "drop --resume to start one")
    try:
        old = resolve(from_dict(read_yaml(stored)), trainer.spec)
    except ConfigError as e:
        raise CheckpointError(f"--resume: stored {stored} is invalid: {e.problems[0]}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"--resume: stored {stored} is not text") from None
    changed = foreign_keys(old, trainer.cfg)
    if changed:
        raise UserError(f"--resume: {out} holds a different run; these keys differ from its "
                        f"config: {', '.join(changed)} (only {', '.join(sorted(RESUMABLE_KEYS))} "
                        "may change)")
    found = CheckpointStore(out).candidates()
    if not found:
        raise CheckpointError(f"--resume: {out} has no checkpoint to resume from")
    return found


def _kept_log(path: Path, step: int) -> bytes | None:
    """The rows of ``metrics.jsonl`` logged up to ``step`` (those after the checkpoint we
    resume from go, so the log matches the state), or None if there is no log. A torn last
    line is dropped with a warning; any other line that is not a JSON row is an error."""
    if not path.exists():
        return None
    lines = [(i, ln) for i, ln in enumerate(path.read_bytes().split(b"\n"), 1) if ln.strip()]
    keep = []
    for n, (i, ln) in enumerate(lines):
        try:
            row = json.loads(ln)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            if n == len(lines) - 1:
                print(f"tuneable-gan: warning: {path} line {i} was cut off mid-write "
                      f"({len(ln)} bytes, {ln[:32]!r}...); dropped it", file=sys.stderr)
                break
            raise CheckpointError(f"--resume: {path} line {i} is not a JSON row ({e}); only a "
                                  "torn last line is dropped: repair or delete that line, then "
                                  "rerun") from None
        if row.get("step", 0) <= step:
            keep.append(ln + b"\n")
    return b"".join(keep)


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
        self.saved_at: int | None = None
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
            _append(self.log, json.dumps(row | {"diverged": False}) + "\n")
            self.bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}",
                                 dig=f"{row.get('dig', float('nan')):.3g}")
        if due.checkpoint:
            self.save(trainer)

    def save(self, trainer: GANTrainer) -> Path:
        """A checkpoint of the trainer's state now."""
        self.saved_at = trainer.step + trainer.phase.lead
        return self.store.save(self.saved_at, trainer.state_dict(), trainer.cfg)

    def on_diverged(self, trainer: GANTrainer, error: Diverged) -> None:
        _append(self.log, json.dumps({"step": error.step, "diverged": True, **error.values})
                + "\n")
        print(f"tuneable-gan: {error}; the run stopped (last checkpoint: "
              f"{self.store.latest()})", file=sys.stderr)
        self.code = EXIT_DIVERGED


def _interrupted(trainer: GANTrainer, sink: RunDirSink) -> None:
    """After a Ctrl-C stopped the loop at a step boundary: checkpoint that step (unless the
    loop's own checkpoint just did)."""
    at = trainer.step + trainer.phase.lead
    where = sink.store.root / f"step_{at:07d}" if sink.saved_at == at else sink.save(trainer)
    print(f"tuneable-gan: interrupted at step {trainer.step}; checkpoint saved ({where}), "
          "continue with --resume", file=sys.stderr)
    sink.code = EXIT_INTERRUPTED


def train(config: str, overrides: list[str], out: Path, resume: bool = False,
          quiet: bool = False, warnings: Sequence[str] = ()) -> int:
    """``tuneable-gan train``: run (or resume) one run in ``out``; the exit code (0 done, 3
    diverged, 130 interrupted). User errors raise before anything is written; ``warnings`` are
    printed after every check passed, just before the run starts."""
    from tqdm import tqdm

    from tuneable_gan.viz import save_samples

    cfg = load_config(config, overrides)
    trainer = GANTrainer(cfg)  # lottery tickets: tickets.default_root()
    # A run directory keeps only the logged rows: the steps between them need no probe or read.
    trainer.record_every_step = False
    candidates = _check_out_dir(out, trainer, resume)
    trainer.evaluator  # noqa: B018  (built now: its errors must come before anything is written)
    for w in warnings:
        print(clip_line(f"tuneable-gan: warning: {w}"), file=sys.stderr)
    if candidates:
        restore_first(trainer, candidates, "--resume")
    log = _kept_log(out / "metrics.jsonl", trainer.step)
    stop = Interrupt()
    with stop:
        with _out_write(out):
            out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "config.yaml", trainer.cfg.to_yaml().encode())
        _write_atomic(out / "run.json", json.dumps({
            "regularizer": trainer.cfg.to_dict()["regularizer"],
            "device": str(trainer.device), "precision": trainer.cfg.train.precision},
            indent=1).encode())
        if log is not None:
            _write_atomic(out / "metrics.jsonl", log)
        store = CheckpointStore(out)
        bar = tqdm(total=trainer.phase.total, initial=trainer.step + trainer.phase.lead,
                   disable=quiet, unit="step", dynamic_ncols=True)
        sink = RunDirSink(out, store, bar)
        try:
            loop.run(trainer, [sink], should_stop=stop)
            if stop.requested and not trainer.finished and sink.code == 0:
                _interrupted(trainer, sink)
        except KeyboardInterrupt:
            print(f"tuneable-gan: interrupted again at step {trainer.step}: quit without saving "
                  f"(--resume continues from {store.latest()})", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            bar.close()
            trainer.close()
        samples = out / "samples.png"
        tmp = out / ".samples.tmp.png"  # the suffix tells the writer the format
        with _out_write(samples):
            try:
                save_samples(trainer.samples(64), tmp,
                             real=trainer.data.images if trainer.data.images.dim() == 2 else None)
                os.replace(tmp, samples)
            finally:
                tmp.unlink(missing_ok=True)
    return sink.code
