"""CIFAR archives (in the real format), image folders and faces100."""

from __future__ import annotations

import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_fake import N, pattern, write_cifar  # noqa: E402
from conftest import tiny_config
from PIL import Image

from tuneable_gan.config import DataConfig
from tuneable_gan.data import load_data, resize_images
from tuneable_gan.datasets.cifar import LAYOUTS, read_batch
from tuneable_gan.errors import DataError


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'cifar10': dir with archive + extracted folder, 'cifar100': same}."""
    base = tmp_path_factory.mktemp("cifar")
    return {name: write_cifar(base / name, name) for name in LAYOUTS}


def one_line(e: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(e.value.problems) == 1
    return msg


# -- CIFAR ----------------------------------------------------------------------------------------


def test_fake_is_faithful_to_the_real_format(cifar: dict[str, Path]) -> None:
    raw = (cifar["cifar10"] / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and pickle.SHORT_BINSTRING + b"\x04data" in raw
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    assert set(pickle.loads(raw, encoding="bytes")) == {b"batch_label", b"data", b"labels",
                                                       b"filenames"}
    assert set(pickle.loads(raw, encoding="latin1")) == {"batch_label", "data", "labels",
                                                        "filenames"}
    a, b = read_batch(raw, "bytes"), read_batch(raw, "latin1")
    assert set(a) == set(b) == {"batch_label", "data", "labels", "filenames"}
    assert np.array_equal(a["data"], b["data"]) and a["labels"] == b["labels"]
    assert a["data"].shape == (N, 3072) and a["data"].dtype == np.uint8


@pytest.mark.parametrize("name,classes,n_train,n_test",
                         [("cifar10", 10, 5 * N, N), ("cifar100", 100, 5 * N, N)])
@pytest.mark.parametrize("form", ["archive", "archive_dir", "extracted_parent", "extracted"])
def test_cifar_splits_shapes_labels(cifar: dict[str, Path], name: str, classes: int,
                                    n_train: int, n_test: int, form: str) -> None:
    lay = LAYOUTS[name]
    base = cifar[name]
    if form == "archive_dir":  # only the archive in the folder
        d = base.parent / f"{name}_only_archive"
        d.mkdir(exist_ok=True)
        if not (d / lay.archive).exists():
            (d / lay.archive).symlink_to(base / lay.archive)
        root = d
    else:
        root = {"archive": base / lay.archive, "extracted_parent": base,
                "extracted": base / lay.folder}[form]
    cfg = DataConfig(name=name, root=str(root), resolution=32)
    train, test = load_data(cfg, "train"), load_data(cfg, "test")
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.images.shape == (n_train, 3, 32, 32) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64 and train.num_classes == classes
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert train.labels.tolist() == [i % classes for i in range(n_train)]
    assert test.labels.tolist() == [i % classes for i in range(n_train, n_train + n_test)]


def test_cifar_pixel_layout_is_rgb_planes_row_major(cifar: dict[str, Path]) -> None:
    root = cifar["cifar10"] / "cifar-10-python.tar.gz"
    x = load_data(DataConfig(name="cifar10", root=str(root), resolution=32)).images
    want = torch.from_numpy(np.stack([pattern(i) for i in range(5 * N)]).astype(np.float32))
    assert torch.allclose(x, (want / 127.5 - 1).reshape(-1, 3, 32, 32))
    # Row 3, channel G (1), y=2, x=5: value at 1024 + 2*32 + 5.
    v = (1024 + 2 * 32 + 5) * 7 + 3
    assert x[3, 1, 2, 5].item() == pytest.approx((v % 256) / 127.5 - 1)


def test_cifar_resized_to_resolution(cifar: dict[str, Path]) -> None:
    root = str(cifar["cifar100"])
    full = load_data(DataConfig(name="cifar100", root=root, resolution=32), "test")
    small = load_data(DataConfig(name="cifar100", root=root, resolution=8), "test")
    assert small.images.shape == (N, 3, 8, 8)
    assert torch.allclose(small.images, resize_images(full.images, 8).clamp(-1, 1), atol=1e-6)


def test_cifar_fraction_is_the_reference_subset(cifar: dict[str, Path]) -> None:
    root = str(cifar["cifar10"] / "cifar-10-python.tar.gz")
    full = load_data(DataConfig(name="cifar10", root=root, resolution=8))
    sub = load_data(DataConfig(name="cifar10", root=root, resolution=8, fraction=0.2,
                               subset_seed=3))
    idx = np.random.RandomState(3).choice(len(full), int(len(full) * 0.2), replace=False)
    assert torch.equal(sub.images, full.images[idx]) and torch.equal(sub.labels, full.labels[idx])
    np.random.seed(0)  # the BigGAN-CIFAR recipe, literally
    ref = np.random.choice(len(full), int(len(full) * 0.1), replace=False)
    sub0 = load_data(DataConfig(name="cifar10", root=root, resolution=8, fraction=0.1))
    assert torch.equal(sub0.labels, full.labels[ref])


def test_cifar_bad_roots_are_one_line_data_errors(cifar: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10"))
    assert one_line(e) == ("data.root is required for data.name=cifar10 "
                           "(a cifar-10-python.tar.gz or its extracted folder)")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "nope")))
    assert "nope" in one_line(e) and "cifar-10-python.tar.gz" in one_line(e)
    with pytest.raises(DataError) as e:  # an empty folder
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert "cifar-10-batches-py/" in one_line(e)
    junk = tmp_path / "cifar-10-python.tar.gz"
    junk.write_bytes(b"not a tar archive at all" * 100)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", root=str(junk)))
    assert "cannot read cifar-10-python.tar.gz" in one_line(e)
    with pytest.raises(DataError) as e:  # a CIFAR-100 archive given as CIFAR-10
        c100 = cifar["cifar100"] / "cifar-100-python.tar.gz"
        load_data(DataConfig(name="cifar10", root=str(c100)))
    assert "has no cifar-10-batches-py/data_batch_1" in one_line(e)


def test_cifar_missing_member_and_corrupt_batch(cifar: dict[str, Path], tmp_path: Path) -> None:
    src = cifar["cifar10"] / "cifar-10-batches-py"
    part = tmp_path / "partial"
    with tarfile.open(tmp_path / "partial.tar.gz", "w:gz") as tar:
        for f in sorted(src.iterdir()):
            if f.name != "test_batch":
                tar.add(f, arcname=f"cifar-10-batches-py/{f.name}")
    assert len(load_data(DataConfig(name="cifar10", root=str(tmp_path / "partial.tar.gz")))) == 100
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "partial.tar.gz")), "test")
    assert "has no cifar-10-batches-py/test_batch" in one_line(e)
    (part / "cifar-10-batches-py").mkdir(parents=True)
    for f in src.iterdir():
        (part / "cifar-10-batches-py" / f.name).write_bytes(f.read_bytes())
    (part / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", root=str(part)))
    assert "data_batch_3 is not a cifar10 batch" in one_line(e)
    (part / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", root=str(part)))
    assert "data_batch_5 is missing" in one_line(e)


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), "test")
    assert "print is not allowed" in one_line(e)


def test_trainer_trains_on_a_cifar_archive(cifar: dict[str, Path]) -> None:
    from tuneable_gan.trainer import GANTrainer

    archive = cifar["cifar10"] / "cifar-10-python.tar.gz"
    tr = GANTrainer(tiny_config(data__name="cifar10", data__root=str(archive),
                                data__resolution=8))
    assert tr.data.shape == (3, 8, 8) and len(tr.data) == 10
    out = tr.train_step()
    assert all(np.isfinite(v) for v in out.values() if isinstance(v, float))


# -- folder ---------------------------------------------------------------------------------------


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def test_folder_classes_modes_and_skips(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _save(Image.new("L", (12, 12), 128), root / "b_dogs" / "gray.png")
    _save(Image.new("RGBA", (12, 12), (255, 0, 0, 0)), root / "b_dogs" / "transparent.PNG")
    p = Image.new("P", (12, 12), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    _save(p, root / "b_dogs" / "nested" / "palette.png")
    _save(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), root / "a_cats" / "cmyk.JPG")
    _save(Image.fromarray(np.full((12, 12), 65535, np.uint16)), root / "a_cats" / "deep.png")
    _save(Image.new("RGB", (60, 20), (0, 0, 255)), root / "a_cats" / "wide.bmp")
    wide = Image.open(root / "a_cats" / "wide.bmp").copy()
    wide.paste((255, 0, 0), (20, 0, 40, 20))  # a red centre square on a blue strip
    wide.save(root / "a_cats" / "wide.bmp")
    _save(Image.new("RGB", (12, 12), (10, 20, 30)), root / "a_cats" / "photo.webp")
    (root / "a_cats" / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "a_cats" / "notes.txt").write_text("not an image")
    (root / "empty_class").mkdir()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        d = load_data(DataConfig(name="folder", root=str(root), resolution=8))
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "skipped 1 unreadable image files of 8" in msgs[0]
    assert "corrupt.jpg" in msgs[0]
    assert d.images.shape == (7, 3, 8, 8) and d.num_classes == 2
    assert d.labels.tolist() == [0] * 4 + [1] * 3  # a_cats, then b_dogs; empty_class is none
    x = (d.images + 1) / 2
    cmyk, deep, photo, wide_, gray, palette, transp = x  # sorted by name within each class
    assert torch.allclose(cmyk[:, 4, 4], torch.tensor([1.0, 0.0, 0.0]), atol=0.05)
    assert torch.allclose(deep, torch.ones_like(deep), atol=1e-3)  # 16-bit white, not clipped
    assert torch.allclose(photo[:, 4, 4], torch.tensor([10, 20, 30]) / 255, atol=0.02)
    assert torch.allclose(wide_, torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 8, 8),
                          atol=1e-3)  # centre crop keeps only the red square
    assert torch.allclose(gray, torch.full_like(gray, 128 / 255), atol=1e-3)
    assert torch.allclose(palette[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-3)
    assert torch.allclose(transp, torch.ones_like(transp), atol=1e-3)  # alpha 0 over white
    with pytest.warns(UserWarning, match="skipped 1"):  # no test split: the same images
        test = load_data(DataConfig(name="folder", root=str(root), resolution=8), "test")
    assert torch.equal(test.images, d.images)


def test_folder_unlabelled_and_mixed_layouts(tmp_path: Path) -> None:
    for i in range(3):
        _save(Image.new("RGB", (9, 9), (i * 100, 0, 0)), tmp_path / "flat" / f"{i}.png")
    d = load_data(DataConfig(name="folder", root=str(tmp_path / "flat"), resolution=4))
    assert len(d) == 3 and d.num_classes == 0 and d.labels.tolist() == [0, 0, 0]
    _save(Image.new("RGB", (9, 9)), tmp_path / "flat" / "cls" / "x.png")
    with pytest.warns(UserWarning, match="ignored 3 images lying directly in it"):
        d = load_data(DataConfig(name="folder", root=str(tmp_path / "flat"), resolution=4))
    assert len(d) == 1 and d.num_classes == 1


def test_folder_bad_roots_are_one_line_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="folder"))
    assert "data.root is required for data.name=folder" in one_line(e)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="folder", root=str(tmp_path / "missing")))
    assert "no such folder" in one_line(e)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="folder", root=str(tmp_path)))
    assert "no readable images" in one_line(e)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image files of 1"):
        with pytest.raises(DataError):
            load_data(DataConfig(name="folder", root=str(tmp_path)))


# -- faces100 -------------------------------------------------------------------------------------


def test_faces100_are_the_first_100_lfw_images() -> None:
    from skimage.data import lfw_subset

    d = load_data(DataConfig(name="faces100", resolution=32))
    assert d.images.shape == (100, 3, 32, 32) and d.num_classes == 0
    assert d.images.min() >= -1 and d.images.max() <= 1
    assert torch.equal(d.images[:, 0], d.images[:, 2])  # grey repeated to RGB
    faces = torch.tensor(lfw_subset()[:100], dtype=torch.float32).unsqueeze(1)
    want = resize_images(faces.repeat(1, 3, 1, 1), 32).clamp(0, 1) * 2 - 1
    assert torch.allclose(d.images, want)
    assert torch.equal(load_data(DataConfig(name="faces100", resolution=32), "test").images,
                       d.images)
    assert load_data(DataConfig(name="faces100", resolution=16)).shape == (3, 16, 16)
