"""Content hashes and the file lock that name and guard cached files (extractor weights, the
digits classifier, prior banks, reference statistics)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

from torch import nn


def short_hash(data: bytes) -> str:
    """First 8 hex digits of sha256: short enough to read, long enough not to collide here."""
    return hashlib.sha256(data).hexdigest()[:8]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path``'s ``.lock`` sibling: concurrent trials on one machine must
    not compute (and write) one cached file twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=16)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:8]


def file_hash(path: Path) -> str:
    """Short content hash of a file, memoised on (path, size, mtime) since weights are ~100 MB."""
    st = path.stat()
    return _file_hash(str(path.resolve()), st.st_size, st.st_mtime_ns)


def state_hash(module: nn.Module) -> str:
    """Short hash of a module's state (names, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]
