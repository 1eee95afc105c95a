"""The digits extractor's network: a small CNN classifier of scikit-learn's digits, trained once,
deterministically, on the digits train split and cached in our cache dir; registered with
torch-fidelity so FID, IS and KID run through exactly the code path Inception uses.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from tuneable_gan.cache_files import file_lock, short_hash
from tuneable_gan.config import DataConfig
from tuneable_gan.data import load_data, resize_images, to_uint8
from tuneable_gan.disk import write_atomic, writing

DIGITS_FIDELITY_NAME = "tgan-digits-cnn"
DIGITS_FEATURES = "128"
DIGIT_CLASSES = 10  # output DIGIT_CLASSES is "not a digit"
# Digits are 8x8 at heart; 16 keeps every stroke and makes the classifier cheap on 2 CPUs.
DIGITS_RESOLUTION = 16


@dataclass(frozen=True)
class DigitsRecipe:
    """Everything that determines the digits classifier's weights; its hash names the file."""

    version: int = 3
    arch: str = "c32-c32-pool-c64-pool-fc128-fc11nobias"
    resolution: int = DIGITS_RESOLUTION
    data: str = "digits-train"
    epochs: int = 14
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    shift: int = 1
    junk_weight: float = 0.5
    junk: str = "uniform-pixels+bilinear-4x4"


DIGITS_RECIPE = DigitsRecipe()


class DigitsCNN(nn.Module):
    """Gray 16x16 digits -> 128 penultimate features -> 11 logits: ten digits and "not a digit".

    The last layer has no bias, so torch-fidelity's ``logits_unbiased`` (Inception's IS input,
    the fc without its bias) is exactly this classifier's logits. ``feature_scale`` makes the
    features unit-RMS on the train split, so FID and KID land in familiar ranges.
    """

    feature_scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        )
        self.fc = nn.Linear(128, DIGIT_CLASSES + 1, bias=False)
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (FID/KID) of preprocessed images (see ``preprocess_digits``)."""
        return self.trunk(x) * self.feature_scale

    def forward(self, x: Tensor) -> Tensor:
        """Logits of preprocessed images."""
        return self.fc(self.features(x))

    @torch.no_grad()
    def normalise_features(self, x: Tensor) -> None:
        """Set ``feature_scale`` so the features of ``x`` are unit-RMS; the logits do not change."""
        rms = self.features(x).pow(2).mean().sqrt()
        self.feature_scale /= rms
        self.fc.weight *= rms


def preprocess_digits(x: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) -> gray float (N, 1, 16, 16) in [-1, 1], the classifier's input."""
    gray = x.float().mean(dim=1, keepdim=True) / 127.5 - 1.0
    return resize_images(gray, DIGITS_RESOLUTION)


def _digits_split(split: str) -> tuple[Tensor, Tensor]:
    # Through to_uint8 like every evaluated image, so training sees what evaluation sees.
    d = load_data(DataConfig(name="digits", resolution=DIGITS_RESOLUTION), split)
    return preprocess_digits(to_uint8(d.images)), d.labels


def _shift(x: Tensor, gen: torch.Generator, s: int) -> Tensor:
    # Random +-s pixel translations: generated digits are never perfectly centred.
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s), value=-1.0)
    offset = torch.randint(0, (2 * s + 1) ** 2, (n,), generator=gen)
    out = torch.empty_like(x)
    for k in offset.unique().tolist():
        dy, dx = divmod(k, 2 * s + 1)
        rows = offset == k
        out[rows] = padded[rows, :, dy:dy + h, dx:dx + w]
    return out


def _junk(n: int, gen: torch.Generator) -> Tensor:
    # Per-pixel noise and smooth blobs: what an untrained or collapsed G draws.
    r = DIGITS_RESOLUTION
    pixels = torch.rand(n // 2, 1, r, r, generator=gen) * 2 - 1
    blobs = torch.rand(n - n // 2, 1, 4, 4, generator=gen) * 2 - 1
    blobs = F.interpolate(blobs, size=(r, r), mode="bilinear", align_corners=False)
    return torch.cat([pixels, blobs])


def train_digits_classifier() -> tuple[DigitsCNN, float]:
    """Train ``DigitsCNN`` by ``DIGITS_RECIPE`` on the digits train split; (model, test accuracy).

    An 11th class, "not a digit", is trained on noise images, so noise gets IS ~1 (a plain
    10-class net called uniform noise digits: IS 2.2) and IS cannot reward garbage. A class, not
    a push towards the uniform prediction: that push taught the net to zero its features on
    noise, and every noisy G then had the same FID.
    Runs on CPU, one thread (the thread count changes the float sums, hence the weights), with
    its own seeded generator inside ``fork_rng``: the same recipe gives the same weights on a
    machine, and the caller's global RNG (a training run's) is left untouched.
    """
    x, y = _digits_split("train")
    xt, yt = _digits_split("test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = _fit(x, y)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == yt).float().mean())
    return net, acc


def _fit(x: Tensor, y: Tensor) -> DigitsCNN:
    r = DIGITS_RECIPE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r.seed)
        gen = torch.Generator().manual_seed(r.seed)
        net = DigitsCNN()
        opt = torch.optim.Adam(net.parameters(), lr=r.lr)
        for _ in range(r.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), r.batch_size):
                idx = perm[i:i + r.batch_size]
                loss = F.cross_entropy(net(_shift(x[idx], gen, r.shift)), y[idx])
                junk = _junk(len(idx) // 2, gen)
                target = torch.full((len(junk),), DIGIT_CLASSES)
                loss = loss + r.junk_weight * F.cross_entropy(net(junk), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    net.eval().requires_grad_(False)
    net.normalise_features(x)
    return net


def digits_classifier_path(cache_dir: Path) -> Path:
    """Where the classifier of the current recipe lives in ``cache_dir``."""
    recipe = short_hash(json.dumps(asdict(DIGITS_RECIPE), sort_keys=True).encode())
    return cache_dir / "extractors" / f"digits-cnn-{recipe}.pt"



def ensure_digits_classifier(cache_dir: Path) -> Path:
    """The cached classifier file, trained on first use (a few seconds) and reused after. A full
    disk is one ``DiskFullError`` line naming the cache file; no partial file is left."""
    path = digits_classifier_path(cache_dir)
    if path.is_file():
        return path
    with writing(path), file_lock(path):  # the lock file and its directory need space too
        if not path.is_file():
            net, acc = train_digits_classifier()
            buf = io.BytesIO()
            torch.save({"state_dict": net.state_dict(), "recipe": json.dumps(asdict(DIGITS_RECIPE)),
                        "test_accuracy": acc}, buf)
            write_atomic(path, buf.getvalue())
    return path


def load_digits_classifier(path: str | Path) -> tuple[DigitsCNN, dict]:
    """(classifier in eval mode, the saved record: recipe and test_accuracy)."""
    record = torch.load(path, map_location="cpu", weights_only=True)
    # Its default init draws from the global RNG, and the weights are overwritten anyway: a
    # run's RNG stream must not depend on when (or whether) the extractor is first loaded.
    with torch.random.fork_rng(devices=[]):
        net = DigitsCNN()
    net.load_state_dict(record["state_dict"])
    return net.eval().requires_grad_(False), record


class DigitsFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity adapter: uint8 Bx3xHxW -> penultimate features ("128") and logits."""

    images_seen = 0  # class-wide count of images run through; tests prove cache hits with it

    def __init__(self, name: str, features_list: list[str],
                 feature_extractor_weights_path: Optional[str] = None, **kwargs: object) -> None:
        super().__init__(name, features_list)
        vassert(feature_extractor_weights_path is not None,
                "the digits extractor needs feature_extractor_weights_path")
        self.net, _ = load_digits_classifier(str(feature_extractor_weights_path))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Features in ``features_list`` order, float32, one row per image."""
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting uint8 images")
        vassert(x.dim() == 4 and x.shape[1] == 3, f"Input is not Bx3xHxW: {tuple(x.shape)}")
        DigitsFeatureExtractor.images_seen += int(x.shape[0])
        h = self.net.features(preprocess_digits(x))
        logits = self.net.fc(h)
        out = {DIGITS_FEATURES: h, "logits_unbiased": logits, "logits": logits}
        return tuple(out[k].float() for k in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        """Feature names, Inception-style: width of the layer, or the logits."""
        return DIGITS_FEATURES, "logits_unbiased", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        """Penultimate features for FID/KID/PRC, logits for IS (as Inception does)."""
        return {"isc": "logits_unbiased", "fid": DIGITS_FEATURES, "kid": DIGITS_FEATURES,
                "prc": DIGITS_FEATURES}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        """Too small for torch.compile to pay off."""
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        """Unused (not compiled), required by the base class."""
        return torch.zeros(1, 3, DIGITS_RESOLUTION, DIGITS_RESOLUTION, dtype=torch.uint8)


# Names are unique in torch-fidelity's registry, and this module may be imported again.
if DIGITS_FIDELITY_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(DIGITS_FIDELITY_NAME, DigitsFeatureExtractor)
