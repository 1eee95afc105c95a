"""Real-data loaders beyond the built-ins of ``tuneable_gan.data``, registered in ``DATASETS``.

* ``cifar10`` / ``cifar100``: the official python-pickle archives (``.tar.gz`` or extracted).
* ``folder``: a directory of images, optionally one subfolder per class.
* ``faces100``: the 100 real faces scikit-image bundles (a 100-shot set that needs no download).

``tuneable_gan.data`` imports this package, so loading any dataset registers all of them.
"""

from __future__ import annotations

from tuneable_gan.datasets import cifar, faces, folder

__all__ = ["cifar", "faces", "folder"]
