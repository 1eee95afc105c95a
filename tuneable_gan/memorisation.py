"""Memorisation check (``eval.nn``): does G copy its training images?

``nn_fake`` is the mean, over the evaluated fakes, of the L2 distance to the nearest image of the
run's training set (``load_data(data_cfg, "train")``: the fraction subset G was trained on) in
the extractor's FID-layer feature space; ``nn_real`` is the same for held-out real images, the
yardstick of how far a fresh image of the distribution lies from the training set;
``nn_ratio = nn_fake / nn_real``. A G that copies its training images has ``nn_fake`` well below
``nn_real`` (ratio << 1); one that generalises has a ratio near 1 or above.

Held-out images are the test split (at ``fraction`` 1.0) less every image byte-equal (as the
extractor sees it, uint8) to a training image: an exact copy would sit at distance 0 and make a
copying G look fresh. Datasets without a test split of their own (``folder``, ``faces100``
return the training images) thus have no held-out images when trained on all of them, and then
``nn_real`` and ``nn_ratio`` are nan, as they are for an empty test split.

Features are computed with torch-fidelity's feature extractor (the one FID uses, same weights,
same layer, same batching code), once per ``MemorisationCheck``, and kept in memory (CPU).
Distances are computed in float64 blocks on the fakes' device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from tuneable_gan.config import DataConfig
from tuneable_gan.data import load_data, to_uint8
from tuneable_gan.extractors import Prepared

NN_BLOCK = 2048  # rows per side of one distance block: at most NN_BLOCK^2 float64 at a time
NN_KEYS = ("nn_fake", "nn_real", "nn_ratio")


@torch.no_grad()
def nearest_distances(query: Tensor, reference: Tensor, block: int = NN_BLOCK) -> Tensor:
    """L2 distance from each row of ``query`` (M, F) to its nearest row of ``reference`` (N, F):
    a float64 (M,) tensor on ``query``'s device.

    Computed in ``block`` x ``block`` pieces with a running minimum, so no M x N matrix is ever
    held. ValueError when ``reference`` is empty (there is no nearest row) or ``block`` < 1.
    """
    if len(reference) == 0:
        raise ValueError("nearest_distances needs at least one reference row")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    # float64: a copy of a training image must come out at 0, not at float32 rounding noise.
    q = query.to(torch.float64)
    r = reference.to(device=q.device, dtype=torch.float64)
    out = torch.empty(len(q), dtype=torch.float64, device=q.device)
    for a in range(0, len(q), block):
        qb = q[a:a + block]
        best = torch.full((len(qb),), math.inf, dtype=torch.float64, device=q.device)
        for b in range(0, len(r), block):
            best = torch.minimum(best, torch.cdist(qb, r[b:b + block]).min(dim=1).values)
        out[a:a + block] = best
    return out


class ImageRows(Dataset):
    """uint8 (N, 3, H, W) images as a torch-fidelity input (items are bare tensors).

    Lazy (``get`` gives the images): on a cache hit torch-fidelity never reads it, so the
    images need not be in memory.
    """

    def __init__(self, get: Callable[[], Tensor]) -> None:
        self._get = get

    def __len__(self) -> int:
        return int(self._get().shape[0])

    def __getitem__(self, i: int) -> Tensor:
        return self._get()[i]


def fidelity_features(images: Tensor, extractor: Prepared, batch_size: int,
                      cuda: bool) -> Tensor:
    """The FID-layer features (N, F) of uint8 (N, 3, H, W) ``images`` by ``extractor``'s
    torch-fidelity network and weights, on the CPU, through torch-fidelity's own extractor
    construction and dataset loop: the features FID is computed from."""
    from torch_fidelity import utils as tfu

    name = extractor.fidelity_name
    assert name is not None, "the 1-D toy metrics have no features"
    layer = FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric("fid")
    if len(images) == 0:
        return torch.empty(0, 0)
    fe = tfu.create_feature_extractor(name, [layer], cuda=cuda, verbose=False,
                                      feature_extractor_weights_path=str(extractor.weights_path))
    feats = tfu.get_featuresdict_from_dataset(ImageRows(lambda: images), fe, batch_size, cuda,
                                              save_cpu_ram=True, verbose=False)
    return feats[layer]


def _row_digests(images: Tensor) -> list[bytes]:
    # 16-byte digests rather than the rows themselves: a CIFAR train split is 150 MB of bytes.
    flat = images.reshape(len(images), -1).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def held_out(train: Tensor, test: Tensor) -> Tensor:
    """The rows of uint8 ``test`` images that equal no row of ``train``, in order."""
    seen = set(_row_digests(train))
    keep = [i for i, d in enumerate(_row_digests(test)) if d not in seen]
    return test[torch.as_tensor(keep, dtype=torch.long)]


class MemorisationCheck:
    """``nn_fake``, ``nn_real`` and ``nn_ratio`` (module docstring) of fake FID-layer features.

    The run's data (``data_cfg``) is featurised by ``extractor`` (``batch_size`` images at a
    time) on the first call, and kept: later calls cost only the distances.
    """

    def __init__(self, data_cfg: DataConfig, extractor: Prepared, batch_size: int) -> None:
        self.data_cfg, self.extractor, self.batch_size = data_cfg, extractor, batch_size
        self._train: Optional[Tensor] = None
        self._held_out: Optional[Tensor] = None
        self._nn_real: Optional[float] = None  # a property of the data alone: computed once

    def reference_features(self, cuda: bool) -> tuple[Tensor, Tensor]:
        """(training-set, held-out) features, computed on first use and then kept."""
        if self._train is None or self._held_out is None:
            train = to_uint8(load_data(self.data_cfg, "train").images)
            full = dataclasses.replace(self.data_cfg, fraction=1.0)  # the whole test split
            test = held_out(train, to_uint8(load_data(full, "test").images))
            self._train = fidelity_features(train, self.extractor, self.batch_size, cuda)
            self._held_out = fidelity_features(test, self.extractor, self.batch_size, cuda)
        return self._train, self._held_out

    def __call__(self, fake: Optional[Tensor], cuda: bool = False) -> dict[str, float]:
        """The nn metrics of ``fake`` (M, F) features; all nan when ``fake`` is None (G's
        samples were not finite) or empty."""
        if fake is None or len(fake) == 0:
            return dict.fromkeys(NN_KEYS, math.nan)
        train, test = self.reference_features(cuda)
        nn_fake = float(nearest_distances(fake, train).mean())
        if self._nn_real is None:
            self._nn_real = float(nearest_distances(test.to(fake.device), train).mean()) \
                if len(test) else math.nan
        nn_real = self._nn_real
        ratio = nn_fake / nn_real if nn_real > 0 else math.nan  # nan also propagates from nan
        return {"nn_fake": nn_fake, "nn_real": nn_real, "nn_ratio": ratio}
