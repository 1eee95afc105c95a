"""A CIFAR-10 folder of uniform-noise images in the real python-pickle format, for benchmarks.

Step and evaluation times do not depend on pixel values, and the real archive is not always at
hand (a GPU machine without network): the trainer reads this folder through its own CIFAR loader
(``data.name: cifar10``, ``data.root``), exactly as it reads the real one.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
FOLDER = "cifar-10-batches-py"


def write_noise_cifar(where: str | Path, train_rows: int = 5000, test_rows: int = 1000,
                      seed: int = 0) -> Path:
    """Write ``where/cifar-10-batches-py`` (train_rows split over the five train batches,
    test_rows in the test batch, 10 classes) and return ``where`` (a ``data.root``)."""
    rng = np.random.default_rng(seed)
    folder = Path(where) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    per = [train_rows // 5 + (i < train_rows % 5) for i in range(5)]
    for name, rows in [*zip(TRAIN_FILES, per), ("test_batch", test_rows)]:
        batch = {"data": rng.integers(0, 256, (rows, 3 * 32 * 32), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, rows)]}
        # Protocol 4 pickles an array by the globals the loader allows; 2 would add
        # _codecs.encode and 5 numpy's _frombuffer.
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    return Path(where)
