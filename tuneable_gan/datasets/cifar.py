"""CIFAR-10 and CIFAR-100 from the official python-pickle distribution, offline.

``data.root`` is the archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``), a folder
holding it, the extracted folder (``cifar-10-batches-py/`` / ``cifar-100-python/``), or a folder
holding that. The archive is streamed once through ``tarfile``; nothing is written to disk.

The batches are pickles, and unpickling can run code: **only load files you trust**. As a second
line of defence the unpickler accepts only the three numpy globals a CIFAR batch contains
(``_reconstruct``, ``ndarray``, ``dtype``) and refuses any other.

Format (https://www.cs.toronto.edu/~kriz/cifar.html): each batch is a Python-2 protocol-2 dict
with ``data`` (N x 3072 uint8; a row is 1024 red, 1024 green, then 1024 blue values, each a
row-major 32 x 32 plane) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). Its keys are
Python-2 ``str``: bytes under ``encoding='bytes'``, str under ``'latin1'``; both are accepted.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from tuneable_gan.config import DataConfig
from tuneable_gan.datasets.base import DATASETS, RealData, resize_images
from tuneable_gan.errors import DataError

SIDE = 32
ROW = 3 * SIDE * SIDE
# Converting and resizing in chunks keeps the peak memory near the uint8 size, not 2x float32.
CHUNK = 5000


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its splits and labels."""

    name: str
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int

    def files(self, split: str) -> tuple[str, ...]:
        """The batch files of ``split`` ('train' or 'test'), in the order rows are stacked."""
        return self.train if split == "train" else self.test


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                           "labels", 10),
    "cifar100": CifarLayout("cifar100", "cifar-100-python.tar.gz", "cifar-100-python",
                            ("train",), ("test",), "fine_labels", 100),
}

_RECONSTRUCT = np.zeros(1).__reduce__()[0]
# numpy 2 renamed numpy.core to numpy._core; the real files (written by numpy 1) name the old one.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals of a CIFAR batch."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def read_batch(raw: bytes, encoding: str = "bytes") -> dict[str, Any]:
    """Unpickle one CIFAR batch file's bytes; keys come back as ``str`` whatever ``encoding``.

    ``'bytes'`` is the dataset page's recipe and keeps the 30 MB pixel string as bytes (no
    decode/encode round trip); ``'latin1'`` is torchvision's. Raises on anything not a pickle.
    """
    d = _BatchUnpickler(io.BytesIO(raw), encoding=encoding).load()
    if not isinstance(d, dict):
        raise pickle.UnpicklingError(f"expected a dict, got {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in d.items()}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def locate(layout: CifarLayout, root: str | None) -> tuple[str, Path]:
    """('archive' | 'folder', path) for ``data.root``; DataError when it holds neither."""
    if not root:
        raise DataError(f"data.root is required for data.name={layout.name} "
                        f"(a {layout.archive} or its extracted folder)")
    p = Path(root).expanduser()
    expected = f"expected {layout.archive} or its extracted folder {layout.folder}/"
    if p.is_file():
        return "archive", p
    if not p.is_dir():
        raise DataError(f"data.root={root}: no such file or folder ({expected})")
    # The extracted folder wins over an archive beside it: it needs no decompression.
    if (p / layout.folder).is_dir():
        return "folder", p / layout.folder
    if any((p / f).is_file() for f in layout.train + layout.test):
        return "folder", p
    if (p / layout.archive).is_file():
        return "archive", p / layout.archive
    raise DataError(f"data.root={root}: found neither {layout.archive} nor {layout.folder}/ "
                    f"in it ({expected})")


Batch = tuple[np.ndarray, np.ndarray]


def _read_archive(layout: CifarLayout, root: str, path: Path,
                  wanted: tuple[str, ...]) -> dict[str, Batch]:
    got: dict[str, Batch] = {}
    try:
        # Stream mode ("r|*") reads the gzip once, front to back; random access would
        # decompress the archive again for every member that lies behind the last one read.
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                parts = PurePosixPath(m.name).parts
                if (m.isfile() and len(parts) >= 2 and parts[-2] == layout.folder
                        and parts[-1] in wanted and parts[-1] not in got):
                    f = tar.extractfile(m)
                    assert f is not None
                    # Parsed at once, so only one member's raw bytes are alive at a time.
                    got[parts[-1]] = _parse(layout, root, parts[-1], f.read())
                    if len(got) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"data.root={root}: cannot read {path.name} as a tar archive "
                        f"({_one_line(e)}); expected {layout.archive}") from None
    missing = [f for f in wanted if f not in got]
    if missing:
        raise DataError(f"data.root={root}: {path.name} has no {layout.folder}/{missing[0]} "
                        f"(expected the members of {layout.archive})")
    return got


def _read_folder(layout: CifarLayout, root: str, path: Path,
                 wanted: tuple[str, ...]) -> dict[str, Batch]:
    missing = [f for f in wanted if not (path / f).is_file()]
    if missing:
        raise DataError(f"data.root={root}: {path / missing[0]} is missing (expected "
                        f"{', '.join(wanted)} in {layout.folder}/)")
    return {f: _parse(layout, root, f, (path / f).read_bytes()) for f in wanted}


def _parse(layout: CifarLayout, root: str, name: str, raw: bytes) -> Batch:
    bad = f"data.root={root}: {layout.folder}/{name} is not a {layout.name} batch"
    try:
        d = read_batch(raw)
    except Exception as e:  # a corrupt pickle can raise almost any exception type
        raise DataError(f"{bad} ({_one_line(e)})") from None
    if "data" not in d or layout.label_key not in d:
        raise DataError(f"{bad} (keys: {', '.join(sorted(d))}; expected data and "
                        f"{layout.label_key})")
    try:
        x = np.asarray(d["data"])
        y = np.asarray(d[layout.label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise DataError(f"{bad} ({_one_line(e)})") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != ROW or len(x) != len(y):
        raise DataError(f"{bad} (data {x.dtype}{list(x.shape)} with {len(y)} labels; expected "
                        f"uint8 [N, {ROW}] and N labels)")
    if len(y) and (y.min() < 0 or y.max() >= layout.num_classes):
        raise DataError(f"{bad} (labels outside 0..{layout.num_classes - 1})")
    return x, y


def read_cifar(name: str, root: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``split`` of ``name`` ('cifar10' | 'cifar100'): uint8 (N, 3, 32, 32) and int64 labels."""
    layout = LAYOUTS[name]
    kind, path = locate(layout, root)
    wanted = layout.files(split)
    read = _read_archive if kind == "archive" else _read_folder
    batches = read(layout, str(root), path, wanted)
    parts = [batches.pop(f) for f in wanted]
    x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y = np.concatenate([p[1] for p in parts])
    return x.reshape(-1, 3, SIDE, SIDE), y


def to_float(x: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> float32 (N, 3, resolution, resolution) in [-1, 1]."""
    # One output buffer filled chunk by chunk: no concatenation copy, and the float32 temporaries
    # stay chunk-sized (fresh memory costs ~1 s/GB in page faults on these machines).
    out = torch.empty(len(x), 3, resolution, resolution)
    for i in range(0, len(x), CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(x[i:i + CHUNK]))
        if resolution == SIDE:
            out[i:i + CHUNK].copy_(chunk).div_(127.5).sub_(1.0)
        else:
            small = resize_images(chunk.float().div_(127.5).sub_(1.0), resolution)
            out[i:i + CHUNK] = small.clamp_(-1.0, 1.0)
    return out


def load_cifar(name: str, cfg: DataConfig, split: str) -> RealData:
    """The ``split`` of ``name`` at ``cfg.resolution`` (module docstring for ``cfg.root``)."""
    x, y = read_cifar(name, cfg.root, split)
    return RealData(name, to_float(x, cfg.resolution), torch.from_numpy(y),
                    LAYOUTS[name].num_classes)


@DATASETS.register("cifar10")
def _cifar10(cfg: DataConfig, split: str) -> RealData:
    """CIFAR-10: train = data_batch_1..5 (50,000), test = test_batch (10,000); 10 classes."""
    return load_cifar("cifar10", cfg, split)


@DATASETS.register("cifar100")
def _cifar100(cfg: DataConfig, split: str) -> RealData:
    """CIFAR-100: train (50,000), test (10,000); the 100 fine labels."""
    return load_cifar("cifar100", cfg, split)
