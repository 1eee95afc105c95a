"""Writes that can meet a full disk: one clear line instead of a traceback.

Every place that writes a run's, a sweep's or a report's files wraps the write in ``writing``.
A full disk (``ENOSPC``) or an exhausted quota (``EDQUOT``) becomes a ``DiskFullError`` (a
``UserError``: one line, exit 2) that names the path, how much the write needed where the caller
knows it, and how much is free. The writes themselves stay atomic where they were (temporary file,
then rename), so what was on disk before the failed write is still what a resume reads.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tuneable_gan.errors import DiskFullError

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def human(n: float) -> str:
    """Bytes as a short human-readable size (``1.5 MB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def nearest_existing(path: str | Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor: where the first write
    of a directory not yet made lands."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def blocked(path: str | Path) -> tuple[Path, str] | None:
    """Why a directory ``path`` (existing or to be made) cannot be written: ``(where, "file")``
    when a file stands on its way, ``(where, "readonly")`` when the nearest existing directory
    refuses writes; None when it can be written. Nothing is created."""
    p = nearest_existing(path)
    if not p.is_dir():
        return p, "file"
    if not os.access(p, os.W_OK | os.X_OK):
        return p, "readonly"
    return None


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: a temporary file beside it, then a rename, so a failed
    write (a full disk is one ``DiskFullError`` line) leaves what was there."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with writing(path, need=len(data)):
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; these files are for readers
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing ancestor)."""
    p = nearest_existing(path)
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


@contextmanager
def writing(path: str | Path, need: int | None = None) -> Iterator[None]:
    """Run a write of ``path``; a full disk inside becomes one ``DiskFullError`` line.

    ``need`` is the size of what is being written, in bytes, when the caller knows it.
    """
    try:
        yield
    except OSError as e:
        if e.errno not in FULL:
            raise
        free = free_bytes(path)
        needs = f"needs about {human(need)}, " if need else ""
        left = f"{human(free)} free" if free is not None else "free space unknown"
        raise DiskFullError(f"no space left writing {path} ({needs}{left}); free some space "
                            "or choose another directory, then rerun (what was on disk before "
                            "is intact)") from None
