"""``folder``: a directory of images, optionally one subfolder per class.

Layout (``data.root``):

* Class subfolders (``root/cat/*.png``, ``root/dog/**/*.jpg``): the sorted subfolder names are
  classes 0..K-1; each class folder is searched recursively. Images lying directly in ``root``
  next to class subfolders are ignored, with one warning that counts them (a label cannot be
  guessed for them, and silently giving them a class would bias a conditional model).
* No subfolder with images: every image directly in ``root`` is used, unlabelled
  (``num_classes`` 0, labels all 0).

Files: ``.png .jpg .jpeg .bmp .webp`` (any case); other files and hidden entries (``.name``) are
ignored. Files with an image extension that fail to decode are skipped with one warning that
counts them. Order is sorted by class then relative path, so a ``data.fraction`` subset names
the same files on every machine.

Pixels: every mode becomes RGB. EXIF orientation is applied; alpha (RGBA, LA, PA, P or L with a
transparent colour) is composited over white; 16-bit grey (I;16, I) is scaled from 0..65535,
which Pillow's own RGB conversion would clip at 255; CMYK, YCbCr, 1 and the rest go through
Pillow's ``convert('RGB')``. Each image is centre-cropped to a square on its shorter side and
resized to ``data.resolution`` with ``resize_images`` (bilinear, antialiased when shrinking),
the filter every other dataset here uses.

There is no test split: ``split='test'`` returns the same images, because few-shot protocols use
the whole training set as the reference distribution (mit-han-lab/data-efficient-gans#6).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from tuneable_gan.config import DataConfig
from tuneable_gan.datasets.base import DATASETS, RealData, resize_images
from tuneable_gan.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_below(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted by relative path, hidden ones skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if _is_image(f)]
    # os.walk yields filesystem order; sorting by relative path makes the order portable.
    return sorted(found, key=lambda f: f.relative_to(folder).as_posix())


def scan(root: Path) -> tuple[list[tuple[Path, int]], list[str], int]:
    """(files with labels, class names, images ignored in ``root``) for a folder dataset."""
    top = [e for e in sorted(root.iterdir(), key=lambda e: e.name) if not e.name.startswith(".")]
    loose = [e for e in top if e.is_file() and _is_image(e.name)]
    classes: list[str] = []
    files: list[tuple[Path, int]] = []
    for d in (e for e in top if e.is_dir()):
        below = _images_below(d)
        # A subfolder without images is not a class: it would be a label no sample carries.
        if below:
            files += [(f, len(classes)) for f in below]
            classes.append(d.name)
    if not classes:
        return [(f, 0) for f in loose], [], 0
    return files, classes, len(loose)


def _to_rgb01(img: Image.Image) -> np.ndarray:
    """Any Pillow image -> float32 (H, W, 3) in [0, 1]."""
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        gray = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def decode(path: Path, resolution: int) -> torch.Tensor:
    """One image file -> float32 (3, resolution, resolution) in [0, 1]; raises if unreadable."""
    with Image.open(path) as img:
        # JPEG only: let the decoder downscale by 2/4/8 while both sides stay >= resolution,
        # which makes large photos several times faster to load.
        img.draft(None, (resolution, resolution))
        a = _to_rgb01(img)
    h, w = a.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = torch.from_numpy(np.ascontiguousarray(a[top:top + s, left:left + s]))
    x = resize_images(square.permute(2, 0, 1).unsqueeze(0), resolution)
    return x[0].clamp(0.0, 1.0)


def load_folder(root: str | None, resolution: int) -> RealData:
    """Every readable image under ``root`` (module docstring), in [-1, 1]."""
    if not root:
        raise DataError("data.root is required for data.name=folder (a directory of png/jpg/"
                        "jpeg/bmp/webp images, optionally in class subfolders)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data.root={root}: no such folder (expected a directory of images, "
                        f"optionally in class subfolders)")
    files, classes, loose = scan(path)
    if loose:
        warnings.warn(f"data.root={root}: ignored {loose} images lying directly in it, because "
                      f"it has class subfolders ({', '.join(classes[:3])}...); move them into a "
                      f"class folder to use them", stacklevel=4)
    images, labels, bad = [], [], []
    for f, label in files:
        try:
            images.append(decode(f, resolution))
        except Exception:  # Pillow raises many types on corrupt data; any of them means skip
            bad.append(f)
            continue
        labels.append(label)
    if bad:
        warnings.warn(f"data.root={root}: skipped {len(bad)} unreadable image files of "
                      f"{len(files)} (first: {bad[0].relative_to(path)})", stacklevel=4)
    if not images:
        raise DataError(f"data.root={root}: no readable images ({', '.join(IMAGE_EXTENSIONS)}) "
                        f"in it or in class subfolders")
    x = torch.stack(images) * 2.0 - 1.0
    return RealData("folder", x, torch.tensor(labels, dtype=torch.long), len(classes))


@DATASETS.register("folder")
def _folder(cfg: DataConfig, split: str) -> RealData:
    """The images under ``data.root``; 'test' is the same images (module docstring)."""
    return load_folder(cfg.root, cfg.resolution)
