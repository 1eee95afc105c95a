"""Lottery tickets found once and shared by every trial of a sweep that needs them.

A ticket is keyed by ``ticket_key(cfg)``: a hash of every config field that shapes stage I (the
IMP rounds), so trials differing only in ``sparsity.level``, AdvAug or evaluation settings share
it. A trial asking for round k reuses stored rounds and computes only the missing ones, and
concurrent trials on the same key compute each round once (the others wait on a lock).

Layout under ``root`` (a local path; a sweep spread over several machines needs ``root`` on a
shared mount whose ``flock`` works across hosts, e.g. NFSv4 or Lustre mounted with ``flock``)::

    <root>/<key>/fields.json     the fields hashed into the key (for humans)
    <root>/<key>/init.pt         {"init_G": state_dict, "init_D": state_dict} (rewind target)
    <root>/<key>/round_003.pt    {"round": 3, "masks": {name: bool tensor}, ...}
    <root>/<key>/.lock           flock'ed by the trial computing a round

Every file is written to a temporary name, fsynced and then linked into place without
overwriting (first writer wins), so a reader sees a complete file or none, and a round, once
stored, never changes under the trials that have read it. A full disk is one ``DiskFullError``
line (``disk.writing``) and leaves no temporary file behind. All files load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from tuneable_gan.checkpoint import fsync_dir
from tuneable_gan.config import Config
from tuneable_gan.disk import FULL, writing

# Bumped when the stage-I procedure or the file format changes: old tickets then stop matching.
TICKET_FORMAT = 1

INIT_KEYS = ("init_G", "init_D")

_ROUND_RE = re.compile(r"^round_(\d+)\.pt$")

# Fields that do not change which ticket stage I finds. The level only picks how many rounds to
# take from the shared chain; AdvAug is stage II only; cadence/eval/device do not change
# training. regularizer.* and augment.diffaugment stay IN the key: our stage I trains with the
# run's own settings minus AdvAug (the reference finds tickets with its own stage-I recipe).
EXCLUDED_FIELDS = frozenset({
    "sparsity.level",
    "augment.advaug", "augment.advaug_step", "augment.advaug_mode", "augment.advaug_form",
    "train.eval_every", "train.checkpoint_every", "train.log_every", "train.device",
})
EXCLUDED_SECTIONS = frozenset({"eval"})


def default_root() -> Path:
    """``$TUNEABLE_GAN_TICKETS``, else ``~/.cache/tuneable_gan/tickets`` (single machine only)."""
    env = os.environ.get("TUNEABLE_GAN_TICKETS")
    return Path(env) if env else Path.home() / ".cache" / "tuneable_gan" / "tickets"


def round_length(cfg: Config) -> int:
    """G steps per IMP round: ``sparsity.round_steps``, or ``train.steps`` when unset (the
    reference trains every round for the full run length)."""
    return cfg.sparsity.round_steps if cfg.sparsity.round_steps is not None else cfg.train.steps


def ticket_fields(cfg: Config) -> dict[str, Any]:
    """The dotted config fields hashed into the ticket key (``fields_of`` of ``cfg.flat()``).
    Pass the trainer's resolved config so ``model.conditional: null`` and its resolved value
    give the same key."""
    return fields_of(cfg.flat())


def fields_of(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The ticket-shaping part of a flat (dotted-key) config, e.g. a trial's row in a report:
    everything except ``EXCLUDED_FIELDS`` and ``eval.*``; ``train.steps`` only counts when
    ``sparsity.round_steps`` is unset (then it is the round length)."""
    by_steps = flat.get("sparsity.round_steps") is None
    return {k: v for k, v in flat.items()
            if k not in EXCLUDED_FIELDS and k.split(".", 1)[0] not in EXCLUDED_SECTIONS
            and (k != "train.steps" or by_steps)}


def ticket_key(cfg: Config) -> str:
    """``<arch>-<16 hex>``: a hash of ``ticket_fields(cfg)`` and ``TICKET_FORMAT``."""
    blob = json.dumps({"format": TICKET_FORMAT, "fields": ticket_fields(cfg)}, sort_keys=True)
    return f"{cfg.model.arch}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _write_once(path: Path, obj: Any) -> bool:
    """Write ``obj`` to ``path`` atomically unless it exists; True if this call wrote it. A
    full disk is one ``DiskFullError`` line; no temporary file stays behind."""
    if path.exists():
        return False
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with writing(path, need=len(data)):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                # link, unlike rename, refuses to replace: the first complete copy wins.
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno in FULL:
                    raise
                # Filesystems without hard links: rename (atomic, but the last writer wins).
                if path.exists():
                    return False
                os.replace(tmp, path)
            fsync_dir(path.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


class TicketStore:
    """Masks per IMP round (and the init they rewind to) under ``root``, shared across trials.

    ``timeout_s`` bounds how long a trial waits for another trial computing the same round; after
    it the waiter computes the round itself (its result is dropped if the other finishes first,
    so every trial still ends up with the one stored ticket). ``None`` waits forever. The lock is
    an ``flock``, released by the OS when its holder dies, so a crashed finder never blocks.
    """

    def __init__(self, root: str | Path, timeout_s: float | None = 6 * 3600.0,
                 poll_s: float = 1.0) -> None:
        self.root = Path(root)
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    def key_dir(self, key: str) -> Path:
        """The directory of ``key`` (not created)."""
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad ticket key {key!r}")
        return self.root / key

    def rounds(self, key: str) -> list[int]:
        """The stored rounds of ``key``, ascending."""
        d = self.key_dir(key)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _ROUND_RE.match(p.name)))

    def load(self, key: str, round: int) -> dict[str, Any] | None:
        """The payload of ``round`` (with ``init_G``/``init_D`` merged in), or None."""
        d = self.key_dir(key)
        path = d / f"round_{round:03d}.pt"
        if not path.is_file():
            return None
        payload = _load(path)
        if (d / "init.pt").is_file():
            payload.update(_load(d / "init.pt"))
        return payload

    def latest(self, key: str, max_round: int) -> tuple[int, dict[str, Any]] | None:
        """(round, payload) of the highest stored round <= ``max_round``, or None."""
        done = [r for r in self.rounds(key) if r <= max_round]
        if not done:
            return None
        payload = self.load(key, done[-1])
        assert payload is not None  # round files are never deleted
        return done[-1], payload

    def save(self, key: str, round: int, payload: dict[str, Any],
             fields: dict[str, Any] | None = None) -> bool:
        """Store ``payload`` as ``round`` (atomically, first writer wins); True if stored by
        this call. ``init_G``/``init_D`` in ``payload`` go to the key's ``init.pt`` (written
        once, before the round file), the rest to the round file. ``fields`` (e.g.
        ``ticket_fields(cfg)``) is written once to ``fields.json`` for humans."""
        d = self.key_dir(key)
        with writing(d):
            d.mkdir(parents=True, exist_ok=True)
        if fields is not None and not (d / "fields.json").exists():
            text = json.dumps(fields, indent=1, sort_keys=True, default=str).encode()
            with writing(d / "fields.json", need=len(text)):
                fd, tmp = tempfile.mkstemp(prefix=".fields.json.", suffix=".tmp", dir=d)
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(text)
                    os.replace(tmp, d / "fields.json")
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
        init = {k: payload[k] for k in INIT_KEYS if k in payload}
        if init:
            _write_once(d / "init.pt", init)
        rest = {k: v for k, v in payload.items() if k not in INIT_KEYS}
        return _write_once(d / f"round_{round:03d}.pt", {**rest, "round": int(round)})

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[bool]:
        """Hold ``key``'s lock; yields True once held, False if ``timeout_s`` ran out first (or
        the filesystem has no working flock: then a warning, and the caller goes on unlocked)."""
        d = self.key_dir(key)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        held = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    time.sleep(self.poll_s)
                except OSError as e:
                    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    warnings.warn(f"ticket store {self.root}: flock unsupported ({e}); "
                                  "concurrent trials may compute the same round", stacklevel=2)
                    break
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
