"""Checkpoints: one directory (``state.pt`` + ``config.yaml`` + ``checksum.json``), atomic,
versioned, verified on load, and loadable with ``torch.load(weights_only=True)`` (tensors and
plain containers only).

A directory rather than a file so Ray Tune can wrap it as a ``tune.Checkpoint`` unchanged.
``checksum.json`` holds the sha256 of the other two files, written inside the temporary
directory before the atomic rename, so a checkpoint whose bytes changed afterwards (bit rot, a
truncated copy) is refused instead of loading garbage weights. Checkpoints written before the
checksum existed have none and load as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tuneable_gan.config import Config, from_dict, read_yaml
from tuneable_gan.disk import writing
from tuneable_gan.errors import CheckpointError, ConfigError, UserError

SCHEMA_VERSION = 1
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
CHECKSUM_FILE = "checksum.json"

# What a resume may change: none of these alters the run's mathematics.
RESUMABLE_KEYS = frozenset({"train.steps", "train.eval_every", "train.checkpoint_every",
                            "train.log_every"})

_STEP_RE = re.compile(r"^step_(\d+)$")


def config_diff(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = old.flat(), new.flat()
    return sorted(k for k in a if a[k] != b[k])


def foreign_keys(stored: Config, run: Config) -> list[str]:
    """The keys outside ``RESUMABLE_KEYS`` in which ``stored`` differs from ``run`` (both
    resolved): empty when a checkpoint stored with ``stored`` may continue ``run``."""
    return [k for k in config_diff(stored, run) if k not in RESUMABLE_KEYS]


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_checkpoint(directory: str | Path, state: dict[str, Any], config: Config) -> Path:
    """Write ``state`` and ``config`` (and their checksums) into ``directory`` atomically and
    return it; a full disk is one ``DiskFullError`` line and leaves what was there intact.

    Everything goes into a temporary sibling first (fsynced), which is then renamed into place:
    a reader sees either the old directory or the complete new one, never a partial write.
    """
    target = Path(directory)
    buf = io.BytesIO()
    torch.save({"schema": SCHEMA_VERSION, **state}, buf)
    # Serialized up front: the checksum and the size a full disk is told about need the bytes.
    files = {STATE_FILE: buf.getvalue(), CONFIG_FILE: config.to_yaml().encode()}
    files[CHECKSUM_FILE] = json.dumps(
        {"algorithm": "sha256", **{n: _sha256(b) for n, b in files.items()}}, indent=1).encode()
    with writing(target / STATE_FILE, need=sum(len(b) for b in files.values())):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for name, data in files.items():
                _write_synced(tmp / name, data)
            fsync_dir(tmp)
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
            fsync_dir(target.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _verify(d: Path, files: dict[str, bytes]) -> None:
    """Compare ``files`` with ``checksum.json`` when the checkpoint has one."""
    path = d / CHECKSUM_FILE
    if not path.is_file():
        return  # written before checksums existed
    try:
        sums = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        sums = None
    if not isinstance(sums, dict) or sums.get("algorithm") != "sha256":
        raise CheckpointError(f"corrupt checkpoint {path}: not a sha256 checksum file")
    for name, data in files.items():
        stored, found = sums.get(name), _sha256(data)
        if stored != found:
            raise CheckpointError(f"corrupt checkpoint {d / name}: checksum mismatch (sha256 "
                                  f"{found[:16]}..., {CHECKSUM_FILE} says {str(stored)[:16]}...)")


def read_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu",
                    expect: Config | None = None,
                    may_differ: frozenset[str] = frozenset()) -> tuple[dict[str, Any], Config]:
    """(state, config) from a checkpoint directory, checksums verified; CheckpointError (one
    line) if it is missing, corrupt or of another schema, or, given the resolved config of the
    run that will load it (``expect``), of another run: stored configs are resolved too (the
    trainer's), and only ``RESUMABLE_KEYS`` and ``may_differ`` (a PBT clone's mutated keys)
    may differ."""
    d = Path(directory)
    state_path, cfg_path = d / STATE_FILE, d / CONFIG_FILE
    if not state_path.is_file() or not cfg_path.is_file():
        raise CheckpointError(f"no checkpoint in {d} (expected {STATE_FILE} and {CONFIG_FILE})")
    try:
        files = {STATE_FILE: state_path.read_bytes(), CONFIG_FILE: cfg_path.read_bytes()}
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {d}: {e.strerror}") from None
    _verify(d, files)
    try:
        state = torch.load(io.BytesIO(files[STATE_FILE]), map_location=map_location,
                           weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError,
            ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"corrupt checkpoint {state_path}: {first}") from None
    if not isinstance(state, dict) or state.get("schema") != SCHEMA_VERSION:
        found = state.get("schema") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {state_path} has schema {found}; this version reads "
                              f"schema {SCHEMA_VERSION}")
    try:
        config = from_dict(read_yaml(cfg_path))
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config {cfg_path} is invalid: {e.problems[0]}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"checkpoint config {cfg_path} is not text") from None
    foreign = ([k for k in foreign_keys(config, expect) if k not in may_differ]
               if expect is not None else [])
    if foreign:
        raise CheckpointError(f"checkpoint {d} is of another run: {', '.join(foreign)} "
                              f"differ from this run's config")
    return state, config


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(n) for n in t.shape) + ")"


def state_problem(expected: Any, found: Any, path: str = "", strict: bool = True) -> str | None:
    """The first place where ``found`` does not fit ``expected`` (a state dict of the run that
    will load it): a key of ``expected`` missing from ``found`` (only when ``strict``), a
    container where a tensor belongs, or a tensor of another shape. None if it fits. Plain
    values and containers that ``expected`` has empty (an optimizer before its first step) are
    not checked."""
    if isinstance(expected, Mapping):
        if not isinstance(found, Mapping):
            return f"{path or 'state'}: expected a dict, found {type(found).__name__}"
        for k, v in expected.items():
            at = f"{path}/{k}" if path else str(k)
            if k not in found:
                if strict:
                    return f"missing key {at}"
                continue
            problem = state_problem(v, found[k], at, strict)
            if problem:
                return problem
        return None
    if isinstance(expected, torch.Tensor):
        if not isinstance(found, torch.Tensor):
            return f"{path}: expected a tensor of shape {_shape(expected)}, found " \
                   f"{type(found).__name__}"
        if found.shape != expected.shape:
            return f"{path}: expected shape {_shape(expected)}, found {_shape(found)}"
    return None


def optimizer_problem(name: str, optimizer: torch.optim.Optimizer, found: Any) -> str | None:
    """The first problem of an optimizer state ``found`` for ``optimizer``: its groups must
    hold as many parameters, and each per-parameter tensor (Adam's moments, SGD's momentum)
    the shape of its parameter."""
    if not isinstance(found, Mapping) or "state" not in found or "param_groups" not in found:
        return f"{name}: expected an optimizer state with 'state' and 'param_groups'"
    params = [p for g in optimizer.param_groups for p in g["params"]]
    counts = [len(g["params"]) for g in optimizer.param_groups]
    got = [len(g.get("params", [])) for g in found["param_groups"]]
    if got != counts:
        return f"{name}/param_groups: expected {counts} parameters, found {got}"
    for idx, entry in found["state"].items():
        if not 0 <= int(idx) < len(params):
            return f"{name}/state/{idx}: no such parameter (this run has {len(params)})"
        p = params[int(idx)]
        for k, v in entry.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                return f"{name}/state/{idx}/{k}: expected shape {_shape(p)}, found {_shape(v)}"
    return None


def trainer_state_problem(mine: dict[str, Any], state: Any, opt_g: torch.optim.Optimizer,
                          opt_d: torch.optim.Optimizer) -> str | None:
    """The first problem of a trainer state ``state`` for the trainer whose own state is
    ``mine`` (``GANTrainer.state_dict``): a missing key or a tensor of another shape."""
    if not isinstance(state, Mapping):
        return f"expected a mapping, found {type(state).__name__}"
    # The phase's keys vary with its stage (lottery: init weights only in stage I), so only
    # its tensors' shapes are checked; optimizers hold per-parameter entries.
    return (state_problem({**mine, "phase": {}}, state)
            or state_problem(mine["phase"], state["phase"], "phase", strict=False)
            or optimizer_problem("opt_g", opt_g, state["opt_g"])
            or optimizer_problem("opt_d", opt_d, state["opt_d"]))


class CheckpointStore:
    """A run directory's checkpoints: ``checkpoints/step_XXXXXXX`` plus ``best``.

    ``LATEST`` names the newest complete step directory and is replaced atomically after that
    directory is in place, so a crash mid-save leaves the previous checkpoint usable.
    """

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    def save(self, step: int, state: dict[str, Any], config: Config) -> Path:
        """Write the checkpoint of ``step``, point LATEST at it, drop all but ``keep`` newest."""
        path = write_checkpoint(self.root / f"step_{step:07d}", state, config)
        tmp = self.root / ".LATEST.tmp"
        with writing(self.root / "LATEST", need=len(path.name) + 1):
            try:
                tmp.write_text(path.name + "\n")
                os.replace(tmp, self.root / "LATEST")
            finally:
                tmp.unlink(missing_ok=True)
        for old in self.steps()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def save_best(self, state: dict[str, Any], config: Config) -> Path:
        """Write (replace) the best checkpoint."""
        return write_checkpoint(self.root / "best", state, config)

    def steps(self) -> list[Path]:
        """The step directories, oldest first."""
        found = [(int(m.group(1)), p) for p in self.root.glob("step_*")
                 if (m := _STEP_RE.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The checkpoint directory LATEST names (it may have gone: ``read_checkpoint`` says so),
        or None if the run has no LATEST; CheckpointError if LATEST is not a step name."""
        pointer = self.root / "LATEST"
        if not pointer.is_file():
            return None
        raw = pointer.read_bytes()
        try:
            name = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            name = ""
        if not _STEP_RE.match(name):
            have = ", ".join(p.name for p in self.steps()) or "none"
            raise CheckpointError(
                f"{pointer} does not name a checkpoint (holds {len(raw)} bytes: "
                f"{raw[:24]!r}); write the name of one of its step directories into it "
                f"(found: {have})")
        return self.root / name

    def candidates(self) -> list[Path]:
        """Where a resume looks, best first: LATEST's directory, then the older step
        directories that ``keep`` left, newest first (empty if the run has no LATEST)."""
        latest = self.latest()
        if latest is None:
            return []
        n = int(_STEP_RE.match(latest.name).group(1))  # type: ignore[union-attr]
        older = [p for p in self.steps() if int(p.name.split("_")[1]) < n]
        return [latest, *reversed(older)]


def restore_first(trainer: Any, candidates: list[Path], what: str,
                  may_differ: frozenset[str] = frozenset()) -> Path:
    """Load into ``trainer`` (a ``GANTrainer``) the first checkpoint of ``candidates`` (newest
    first) that verifies, is of this run and fits its shapes; one warning line per one skipped;
    CheckpointError (one line) if none does. ``what`` names the action in messages
    (``--resume``, ``trial restore``); ``may_differ``: config keys the checkpoint may have
    other values of (``read_checkpoint``)."""
    skipped: list[str] = []
    for ckpt in candidates:
        try:
            state, old = read_checkpoint(ckpt, map_location=trainer.device, expect=trainer.cfg,
                                         may_differ=may_differ)
            problem = trainer.phase.resume_problem(old)
            if problem:
                raise UserError(f"{what}: {problem}")
            try:
                trainer.load_state_dict(state)
            except CheckpointError as e:
                raise CheckpointError(f"checkpoint {ckpt / STATE_FILE}: {e.problems[0]}") from None
        except CheckpointError as e:
            skipped.append(e.problems[0])
            continue
        for why in skipped:
            print(f"tuneable-gan: warning: skipped a bad checkpoint: {why}; resuming from "
                  f"{ckpt}", file=sys.stderr)
        return ckpt
    if len(skipped) == 1:
        raise CheckpointError(f"{what}: {skipped[0]}")
    raise CheckpointError(f"{what}: no usable checkpoint in {candidates[0].parent}: "
                          + "; ".join(skipped))


def load_init_weights(source: str | Path, arch: str, G: torch.nn.Module,
                      D: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """``model.init_from``: load G and D from a checkpoint of this system (a checkpoint
    directory, or a run directory: its LATEST), trained on any data; returns its G_ema state
    (None if it has none) for the caller's G_ema. ConfigError (one line) when the checkpoint is
    of another arch or its tensors do not fit these models; CheckpointError when it is not a
    readable checkpoint."""
    d = Path(source)
    if not (d / STATE_FILE).is_file() and (d / "checkpoints" / "LATEST").is_file():
        d = CheckpointStore(d).latest() or d
    try:
        state, old = read_checkpoint(d)
    except CheckpointError as e:
        raise CheckpointError(f"model.init_from: {e.problems[0]}") from None
    if old.model.arch != arch:
        raise ConfigError(f"model.init_from: {d} holds a model.arch={old.model.arch} checkpoint "
                          f"and this run has model.arch={arch}; valid: a {arch} checkpoint")
    nets = {"G": G, "D": D}
    for name, net in nets.items():
        mine = net.state_dict()
        # Both ways: a key the checkpoint lacks, or one these models lack (other conditioning).
        problem = (state_problem(mine, state.get(name), name)
                   or state_problem(state.get(name), mine, name))
        if problem:
            raise ConfigError(f"model.init_from: {d} does not fit this run's models: {problem} "
                              "(widths, z_dim, resolution and conditioning must match)")
    for name, net in nets.items():
        net.load_state_dict(state[name])
    ema = state.get("G_ema")
    return ema if isinstance(ema, dict) and not state_problem(G.state_dict(), ema) else None
