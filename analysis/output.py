"""Where a report goes and how its files are written: the output directory is checked before
anything is written (a file, a directory nobody may write to: one line naming it), and every
file is written whole or not at all, a full disk being one ``DiskFullError`` line
(``tuneable_gan.disk.writing``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tuneable_gan.disk import blocked, write_atomic, writing
from tuneable_gan.errors import UserError


def check_out_dir(out: str | os.PathLike[str], what: str = "--out") -> Path:
    """The resolved report directory ``out``, refused in one line when it is a file, lies
    below a file, or cannot be written; nothing is created here."""
    dest = Path(out).expanduser().resolve()
    why = blocked(dest)
    if why and why[1] == "file":
        raise UserError(f"{what} {os.fspath(out)}: {why[0]} is a file, not a directory; choose "
                        "a directory for the report")
    if why:
        raise UserError(f"{what} {os.fspath(out)}: cannot write in {why[0]} (permission "
                        "denied); choose a directory you can write to")
    return dest


def make_dir(path: Path, what: str = "--out") -> None:
    """``mkdir -p path``; a failure is one line."""
    try:
        with writing(path):
            path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what}: cannot create {path}: {e.strerror or e}") from None


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``disk.write_atomic``)."""
    write_atomic(path, data)


def write_text(path: Path, text: str) -> None:
    """``write_bytes`` of ``text`` as UTF-8."""
    write_bytes(path, text.encode())
