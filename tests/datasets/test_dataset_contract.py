"""The data contract, checked for every entry of the ``DATASETS`` registry.

``BUILDERS`` holds, per registered dataset name, a function that writes whatever the dataset
needs under a temporary folder (a fake CIFAR archive in the real format, a folder of PNGs) and
returns the config to load it with and what loading must give. A dataset registered without a
builder fails ``test_every_dataset_has_a_builder`` and every test of its own: it is never
silently skipped.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_fake import N as CIFAR_ROWS
from cifar_fake import write_cifar
from PIL import Image

from tuneable_gan.config import DataConfig
from tuneable_gan.data import DATASETS, RealData, fraction_indices, load_data
from tuneable_gan.datasets.cifar import LAYOUTS

RESOLUTIONS = (12, 32)  # 12: every image set is shrunk or enlarged; 32: CIFAR's native size


@dataclass(frozen=True)
class Expected:
    """A dataset's config (fraction 1) and what its splits must look like."""

    cfg: DataConfig
    channels: int | None  # None: 1-D points, one sample's shape is (1,)
    num_classes: int
    n_train: int
    n_test: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.channels is None:
            return (1,)
        return (self.channels, self.cfg.resolution, self.cfg.resolution)


def _cifar(name: str, base: Path, resolution: int) -> Expected:
    where = base / name
    if not where.exists():
        write_cifar(where, name)
    archive = where / LAYOUTS[name].archive  # the .tar.gz, as downloaded
    # cifar_fake writes CIFAR_ROWS rows per batch file: 5 train files (CIFAR-100: one of 5x).
    return Expected(DataConfig(name=name, root=str(archive), resolution=resolution), 3,
                    {"cifar10": 10, "cifar100": 100}[name], 5 * CIFAR_ROWS, CIFAR_ROWS)


FOLDER_CLASSES = {"ants": 3, "bees": 2, "cats": 4}  # class folder -> number of images


def _folder(base: Path, resolution: int) -> Expected:
    root = base / "folder"
    if not root.exists():
        rng = np.random.RandomState(0)
        sizes = [(20, 14), (14, 20), (16, 16), (9, 30)]
        for k, (cls, count) in enumerate(FOLDER_CLASSES.items()):
            (root / cls).mkdir(parents=True)
            for i in range(count):
                w, h = sizes[(i + k) % len(sizes)]
                rgb = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
                img = Image.fromarray(rgb)
                (img.convert("L") if i % 2 else img).save(root / cls / f"{i}.png")
    n = sum(FOLDER_CLASSES.values())
    # No test split of its own: 'test' is the same images (few-shot protocol).
    return Expected(DataConfig(name="folder", root=str(root), resolution=resolution), 3,
                    len(FOLDER_CLASSES), n, n)


Builder = Callable[[Path, int], Expected]

BUILDERS: dict[str, Builder] = {
    # The DigGAN paper's two real points 0 and 4; train and test alike; no resolution.
    "toy2pt": lambda base, r: Expected(DataConfig(name="toy2pt", resolution=r), None, 0, 2, 2),
    # scikit-learn's 1,797 digits, a fixed 80/20 split: round(0.2 * 1797) = 359 test.
    "digits": lambda base, r: Expected(DataConfig(name="digits", resolution=r), 1, 10, 1438, 359),
    # scikit-image's 100 LFW faces, unlabelled; 'test' is the same 100.
    "faces100": lambda base, r: Expected(DataConfig(name="faces100", resolution=r), 3, 0, 100,
                                         100),
    "cifar10": functools.partial(_cifar, "cifar10"),
    "cifar100": functools.partial(_cifar, "cifar100"),
    "folder": _folder,
}


def test_every_dataset_has_a_builder() -> None:
    assert DATASETS.names(), "the DATASETS registry is empty"
    assert sorted(BUILDERS) == DATASETS.names(), (
        f"add a builder to BUILDERS in {__file__} for every registered dataset")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(params=[(n, r) for n in DATASETS.names() for r in RESOLUTIONS],
                ids=[f"{n}-r{r}" for n in DATASETS.names() for r in RESOLUTIONS])
def expected(request: pytest.FixtureRequest, base: Path) -> Expected:
    name, resolution = request.param
    if name not in BUILDERS:
        pytest.fail(f"dataset {name!r} is registered but has no builder in BUILDERS ({__file__})")
    exp = BUILDERS[name](base, resolution)
    assert exp.cfg.name == name and exp.cfg.fraction == 1.0
    return exp


@functools.cache
def _load(cfg: DataConfig, split: str) -> RealData:
    return load_data(cfg, split)


def _equal(a: RealData, b: RealData) -> None:
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert (a.name, a.num_classes) == (b.name, b.num_classes)


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_shapes_range_and_labels(expected: Expected, split: str) -> None:
    data = load_data(expected.cfg, split)
    n = expected.n_train if split == "train" else expected.n_test
    assert isinstance(data, RealData) and data.name == expected.cfg.name
    assert len(data) == n
    assert data.images.shape == (n, *expected.sample_shape) and data.shape == expected.sample_shape
    assert data.images.dtype == torch.float32 and torch.isfinite(data.images).all()
    if expected.channels is not None:
        x = data.images
        assert x.min() >= -1 and x.max() <= 1
        assert x.min() < 0 < x.max(), "images should be mapped to [-1, 1], not [0, 1]"
    assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
    assert data.num_classes == expected.num_classes
    if data.num_classes == 0:
        assert torch.equal(data.labels, torch.zeros(n, dtype=torch.int64))
    else:
        assert data.labels.min() >= 0 and data.labels.max() < data.num_classes


@pytest.mark.parametrize("fraction", [0.3, 1e-9])
def test_fraction_is_a_seeded_subset_of_the_train_split(expected: Expected,
                                                        fraction: float) -> None:
    full = _load(expected.cfg, "train")
    n = len(full)
    seed = 3
    cfg = dataclasses.replace(expected.cfg, fraction=fraction, subset_seed=seed)
    sub = load_data(cfg, "train")
    k = max(1, int(n * fraction))
    assert len(sub) == k
    idx = fraction_indices(n, fraction, seed)
    assert len(np.unique(idx)) == k and idx.min() >= 0 and idx.max() < n
    assert torch.equal(sub.images, full.images[torch.as_tensor(idx)])
    assert torch.equal(sub.labels, full.labels[torch.as_tensor(idx)])
    assert (sub.name, sub.num_classes) == (full.name, full.num_classes)
    # The fraction cuts the train split only.
    _equal(load_data(cfg, "test"), _load(expected.cfg, "test"))


def test_subset_depends_on_subset_seed_only(expected: Expected) -> None:
    fraction = 0.5
    n = len(_load(expected.cfg, "train"))
    assert n > 1, "the builder's data is too small to tell subsets apart"
    at = functools.partial(dataclasses.replace, expected.cfg, fraction=fraction)
    a = load_data(at(subset_seed=0), "train")
    _equal(load_data(at(subset_seed=0), "train"), a)
    # A seed whose subset has other rows: found from the documented rule, so it exists for any
    # n > 1 (with n = 2 and k = 1, seeds 0 and 2 pick the same row).
    chosen = set(fraction_indices(n, fraction, 0).tolist())
    other = next(s for s in range(1, 100)
                 if set(fraction_indices(n, fraction, s).tolist()) != chosen)
    b = load_data(at(subset_seed=other), "train")
    assert len(a) == len(b) == max(1, int(n * fraction))
    assert not torch.equal(a.images, b.images)
