"""Dataset loaders, one module each, registered in ``base.DATASETS`` by ``data.name``.

* ``builtin``: ``toy2pt`` and ``digits`` (nothing on disk).
* ``cifar``: ``cifar10`` / ``cifar100`` from the official python-pickle archives.
* ``folder``: a directory of images, optionally one subfolder per class.
* ``faces``: ``faces100``, the 100 real faces scikit-image bundles.

Importing the package registers every loader; ``tuneable_gan.data`` imports it for that.
"""

from __future__ import annotations

from tuneable_gan.datasets import builtin, cifar, faces, folder
from tuneable_gan.datasets.base import DATASETS, RealData, resize_images, to_uint8

__all__ = ["DATASETS", "RealData", "builtin", "cifar", "faces", "folder", "resize_images",
           "to_uint8"]
