"""Where a report goes and how its files are written: the output directory is checked before
anything is written (a file, a directory nobody may write to: one line naming it), and every
file is written whole or not at all, a full disk being one ``DiskFullError`` line
(``tuneable_gan.disk.writing``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tuneable_gan.disk import writing
from tuneable_gan.errors import UserError


def check_out_dir(out: str | os.PathLike[str], what: str = "--out") -> Path:
    """The resolved report directory ``out``, refused in one line when it is a file, lies
    below a file, or cannot be written; nothing is created here."""
    dest = Path(out).expanduser().resolve()
    probe = dest
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the nearest existing directory is where the first write lands
    if not probe.is_dir():
        raise UserError(f"{what} {os.fspath(out)}: {probe} is a file, not a directory; choose "
                        "a directory for the report")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what} {os.fspath(out)}: cannot write in {probe} (permission denied); "
                        "choose a directory you can write to")
    return dest


def make_dir(path: Path, what: str = "--out") -> None:
    """``mkdir -p path``; a failure is one line."""
    try:
        with writing(path):
            path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what}: cannot create {path}: {e.strerror or e}") from None


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then a rename), so a
    failed write leaves what was there."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with writing(path, need=len(data)):
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is for readers
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """``write_bytes`` of ``text`` as UTF-8."""
    write_bytes(path, text.encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
