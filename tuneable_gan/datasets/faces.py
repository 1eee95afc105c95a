"""``faces100``: the 100 real LFW faces bundled in scikit-image, an offline 100-shot set."""

from __future__ import annotations

import numpy as np
import torch

from tuneable_gan.config import DataConfig
from tuneable_gan.datasets.base import DATASETS, RealData, resize_images

# lfw_subset() holds 200 images: the first 100 are faces, the other 100 are non-faces.
NUM_FACES = 100


def face_images(resolution: int) -> torch.Tensor:
    """The 100 faces as float32 (100, 3, resolution, resolution) in [-1, 1].

    The 25x25 grey images are repeated to RGB (every image extractor and model here expects 3
    channels) and resized with ``resize_images`` (bilinear, antialiased when shrinking).
    """
    # Imported here: scikit-image is only needed by this dataset, and its import takes a second.
    from skimage.data import lfw_subset

    gray = np.asarray(lfw_subset()[:NUM_FACES], dtype=np.float32)
    x = torch.from_numpy(gray).unsqueeze(1).repeat(1, 3, 1, 1)
    return (resize_images(x, resolution).clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


@DATASETS.register("faces100")
def _faces100(cfg: DataConfig, split: str) -> RealData:
    """scikit-image's 100 LFW faces, unlabelled; ``data.root`` is not used.

    The test split is the same 100 images: few-shot protocols use the whole training set as the
    reference distribution (mit-han-lab/data-efficient-gans#6).
    """
    x = face_images(cfg.resolution)
    return RealData("faces100", x, torch.zeros(len(x), dtype=torch.long), 0)
