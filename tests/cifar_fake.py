"""A CIFAR-10/100 writer in the real python-pickle format, for tests
(docs/torch_fidelity.md 4.2)."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from tuneable_gan.datasets.cifar import LAYOUTS

N = 20  # rows per CIFAR batch file
_RECONSTRUCT = np.zeros(1).__reduce__()[0]


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickles as Python 2's cPickle wrote the real CIFAR files: every str and bytes
    as a Python-2 str (SHORT_BINSTRING / BINSTRING), numpy's reconstructor under numpy.core."""

    def save_py2str(self, obj: bytes | str) -> None:
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_py2str
    dispatch[str] = save_py2str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def pattern(i: int) -> np.ndarray:
    """Row ``i`` of a batch: every value is a function of (row, position)."""
    return ((np.arange(3 * 32 * 32) * 7 + i) % 256).astype(np.uint8)


def write_cifar(where: Path, name: str, n: int = N, tgz: bool = True) -> Path:
    """A CIFAR-10/100 distribution with ``n`` rows per batch file, as folder and .tar.gz."""
    lay = LAYOUTS[name]
    folder = where / lay.folder
    folder.mkdir(parents=True)
    start = 0
    for fname in lay.train + lay.test:
        rows = n * 5 if name == "cifar100" and fname == "train" else n
        idx = np.arange(start, start + rows)
        start += rows
        d: dict[bytes, object] = {
            b"batch_label": f"batch {fname}".encode(),
            b"data": np.stack([pattern(int(i)) for i in idx]),
            b"filenames": [f"img_{i}.png".encode() for i in idx],
        }
        if name == "cifar10":
            d[b"labels"] = [int(i) % 10 for i in idx]
        else:
            d[b"fine_labels"] = [int(i) % 100 for i in idx]
            d[b"coarse_labels"] = [int(i) % 100 // 5 for i in idx]
        (folder / fname).write_bytes(py2_pickle(d))
    meta = ({b"num_cases_per_batch": n, b"label_names": [b"c%d" % i for i in range(10)],
             b"num_vis": 3072} if name == "cifar10" else
            {b"fine_label_names": [b"f%d" % i for i in range(100)],
             b"coarse_label_names": [b"k%d" % i for i in range(20)]})
    (folder / ("batches.meta" if name == "cifar10" else "meta")).write_bytes(py2_pickle(meta))
    if name == "cifar10":
        (folder / "readme.html").write_text("<html></html>")
    if tgz:
        with tarfile.open(where / lay.archive, "w:gz") as tar:
            tar.add(folder, arcname=lay.folder)
    return where
