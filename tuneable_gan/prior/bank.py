"""The feature bank: the prior network's L2-normalised features of every training image, once.

C runs once per (data, network, flip, images) under ``no_grad``, in batches, on the images'
device, and the result is cached in ``cache_root(cache_dir)/priors/<key>.pt``; ``key`` is a short
hash of the caller's ``data_key``, the network's tag (architecture and weights), ``flip`` and a
hash of the image bytes, so any change of what C would see or be gives a new file. A second call
with the same inputs only reads the file: the network is neither built nor run (its tag is
computed without building it). A file that cannot be read, or that belongs to other inputs, is
recomputed with a warning. Concurrent trials on one machine compute a bank once (a file lock).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tuneable_gan.cache_files import file_lock, short_hash
from tuneable_gan.config import PriorConfig
from tuneable_gan.disk import write_atomic, writing
from tuneable_gan.metrics import cache_root
from tuneable_gan.prior.networks import build_prior_network, network_tag

# Bumped when the stored features change meaning (preprocessing, normalisation, layout).
BANK_VERSION = 1
# Images per forward: bounds the 224-px activations of resnet50 / vgg16 (~1-3 GB at 64).
BATCH_SIZE = 64


@dataclass(frozen=True)
class PriorBank:
    """Row i: the L2-normalised prior of training image i (``flipped``: of its mirror image)."""

    features: Tensor
    flipped: Optional[Tensor]
    network: str
    tag: str

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return int(self.features.shape[1])


def images_hash(images: Tensor) -> str:
    """Short hash of the images' dtype, shape and bytes."""
    h = hashlib.sha256(f"{images.dtype}{tuple(images.shape)}".encode())
    flat = images.detach().cpu().contiguous().reshape(-1)
    h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


def prior_bank(images: Tensor, data_key: str, cfg: PriorConfig, flip: bool,
               cache_dir: Path | None = None) -> PriorBank:
    """The bank of ``images`` (the run's clean training images in [-1, 1], (N, C, H, W)).

    ``data_key`` names the data (built by the caller from the data config); ``flip`` also
    stores the features of each image flipped horizontally. Cached, see the module docstring.
    """
    assert images.dim() == 4 and len(images) > 0, f"images must be (N, C, H, W): {images.shape}"
    root = cache_root(cache_dir)
    tag = network_tag(cfg, root)
    fields = {"version": BANK_VERSION, "data": data_key, "network": tag, "flip": bool(flip),
              "images": images_hash(images)}
    path = root / "priors" / f"{short_hash(json.dumps(fields, sort_keys=True).encode())}.pt"
    bank = _load(path, fields, cfg, len(images), warn=True)
    if bank is not None:
        return bank
    with writing(path), file_lock(path):  # the directory and the lock file need space too
        # Another trial may have written it while this one waited for the lock.
        bank = _load(path, fields, cfg, len(images), warn=False)
        if bank is None:
            bank = _compute(images, cfg, root, bool(flip))
            assert bank.tag == tag, f"network tag changed: {tag} -> {bank.tag}"
            buf = io.BytesIO()
            torch.save({"fields": fields, "features": bank.features, "flipped": bank.flipped},
                       buf)
            write_atomic(path, buf.getvalue())
    return bank


def _compute(images: Tensor, cfg: PriorConfig, root: Path, flip: bool) -> PriorBank:
    net = build_prior_network(cfg, root)
    module = net.module.to(images.device)
    features = _encode(module, images, mirror=False)
    flipped = _encode(module, images, mirror=True) if flip else None
    return PriorBank(features, flipped, cfg.network, net.tag)


@torch.no_grad()
def _encode(module: nn.Module, images: Tensor, mirror: bool) -> Tensor:
    chunks = []
    for i in range(0, len(images), BATCH_SIZE):
        x = images[i:i + BATCH_SIZE]
        chunks.append(module(x.flip(-1) if mirror else x).float().cpu())
    raw = torch.cat(chunks)
    dead = int((raw.norm(dim=1) == 0).sum())
    if dead:
        # Such a row cannot be normalised: it stays zero (a network whose ReLUs are all off).
        warnings.warn(f"prior bank: {dead} of {len(raw)} images have all-zero features",
                      stacklevel=3)
    return F.normalize(raw, dim=1)


def _load(path: Path, fields: dict, cfg: PriorConfig, n: int, warn: bool) -> PriorBank | None:
    if not path.is_file():
        return None
    try:
        rec: Any = torch.load(path, map_location="cpu", weights_only=True)
        features, flipped = rec["features"], rec["flipped"]
        if rec["fields"] != fields:
            raise ValueError("it belongs to other inputs")
        if features.dtype != torch.float32 or features.dim() != 2 or len(features) != n:
            raise ValueError(f"features of shape {tuple(features.shape)}, expected ({n}, d)")
        if (flipped is None) == fields["flip"] or (
                flipped is not None and flipped.shape != features.shape):
            raise ValueError("flipped features do not match")
    except Exception as e:  # any unreadable or inconsistent file: recompute, never trust it
        if warn:
            warnings.warn(f"prior bank {path} is unusable ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); recomputing it",
                          stacklevel=3)
        return None
    return PriorBank(features, flipped, cfg.network, fields["network"])
