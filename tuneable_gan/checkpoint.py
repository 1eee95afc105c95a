"""Checkpoints: one directory (``state.pt`` + ``config.yaml``), atomic, versioned, and loadable
with ``torch.load(weights_only=True)`` (tensors and plain containers only).

A directory rather than a file so Ray Tune can wrap it as a ``tune.Checkpoint`` unchanged.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from tuneable_gan.config import Config, from_dict, read_yaml
from tuneable_gan.errors import CheckpointError, ConfigError

SCHEMA_VERSION = 1
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(directory: str | Path, state: dict[str, Any], config: Config) -> Path:
    """Write ``state`` and ``config`` into ``directory`` atomically and return it.

    Everything goes into a temporary sibling first (fsynced), which is then renamed into place:
    a reader sees either the old directory or the complete new one, never a partial write.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save({"schema": SCHEMA_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / CONFIG_FILE, "w") as f:
            f.write(config.to_yaml())
            f.flush()
            os.fsync(f.fileno())
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


def read_checkpoint(directory: str | Path,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Config]:
    """(state, config) from a checkpoint directory; CheckpointError (one line) if unusable."""
    d = Path(directory)
    state_path, cfg_path = d / STATE_FILE, d / CONFIG_FILE
    if not state_path.is_file() or not cfg_path.is_file():
        raise CheckpointError(f"no checkpoint in {d} (expected {STATE_FILE} and {CONFIG_FILE})")
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
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
    return state, config


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
        tmp.write_text(path.name + "\n")
        os.replace(tmp, self.root / "LATEST")
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def save_best(self, state: dict[str, Any], config: Config) -> Path:
        """Write (replace) the best checkpoint."""
        return write_checkpoint(self.root / "best", state, config)

    def latest(self) -> Path | None:
        """The newest complete checkpoint directory, or None if the run has none."""
        pointer = self.root / "LATEST"
        if not pointer.is_file():
            return None
        return self.root / pointer.read_text().strip()
