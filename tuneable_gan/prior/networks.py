"""The frozen prior networks C behind ``prior.network``, one Registry entry each.

Every entry maps ``(PriorConfig, cache_dir)`` to a ``PriorNet``: a frozen module taking float
images in [-1, 1] (N, C, H, W) to features (N, dim), doing its own preprocessing, and a ``tag``
naming the architecture and the weights (a hash), which keys the cached feature bank.

* ``digits``: the project's digits classifier (``digits_cnn.ensure_digits_classifier``), its 128
  penultimate features of ``preprocess_digits(to_uint8(x))``.
* ``resnet50`` / ``vgg16``: torchvision architectures loaded from the local file ``prior.weights``
  (never downloaded): resnet50's 2048-d pooled features, vgg16's 4096-d fc7 (after its ReLU).
* ``simclr_resnet50``: a ResNet-50 backbone from a local SimCLR checkpoint (keys remapped).
* ``random_<name>``: the same architecture frozen at a seeded random init (``prior.seed``), the
  control "a frozen randomly initialised network of the same shape".

Each entry also knows its ``tag`` without building the network (``network_tag``), so a cached
bank is found without loading (or initialising) 100-500 MB of weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from tuneable_gan.cache_files import file_hash, short_hash
from tuneable_gan.config import PriorConfig
from tuneable_gan.data import to_uint8
from tuneable_gan.digits_cnn import (
    DigitsCNN,
    ensure_digits_classifier,
    load_digits_classifier,
    preprocess_digits,
)
from tuneable_gan.errors import ConfigError, UserError
from tuneable_gan.registry import Registry

IMAGENET_RESOLUTION = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Key prefixes SimCLR code bases wrap a ResNet in (DataParallel, the model's attribute names).
SIMCLR_PREFIXES = ("module.", "encoder.", "backbone.", "convnet.", "resnet.")
# Top-level names of the classifier / projection head a SimCLR checkpoint carries beside it.
SIMCLR_HEADS = frozenset({"fc", "projector", "projection", "projection_head", "head", "g"})


@dataclass(frozen=True)
class PriorNet:
    """A frozen prior network: ``module`` maps [-1, 1] images (N, C, H, W) to (N, dim)."""

    module: nn.Module
    dim: int
    tag: str


@dataclass(frozen=True)
class PriorSpec:
    """One ``prior.network``: ``make`` builds the (unfrozen) module, ``tag_of`` its identity.

    Calling it builds the frozen ``PriorNet``; ``tag`` is the same tag without building.
    """

    make: Callable[[PriorConfig, Path], nn.Module]
    dim: int
    tag_of: Callable[[PriorConfig, Path], str]

    def __call__(self, cfg: PriorConfig, cache_dir: Path) -> PriorNet:
        """Build the frozen network (eval mode, no gradients)."""
        module = self.make(cfg, cache_dir).eval().requires_grad_(False)
        return PriorNet(module, self.dim, self.tag_of(cfg, cache_dir))

    def tag(self, cfg: PriorConfig, cache_dir: Path) -> str:
        """The network's tag, computed without building it."""
        return self.tag_of(cfg, cache_dir)


PRIOR_NETWORKS: Registry[PriorSpec] = Registry("prior network")


def _entry(cfg: PriorConfig) -> Callable[[PriorConfig, Path], PriorNet]:
    if cfg.network not in PRIOR_NETWORKS:
        raise ConfigError(f"prior.network={cfg.network} has no prior network; valid: "
                          f"{', '.join(PRIOR_NETWORKS.names())}")
    return PRIOR_NETWORKS.get(cfg.network)


def build_prior_network(cfg: PriorConfig, cache_dir: Path) -> PriorNet:
    """The frozen prior network ``cfg.network`` (weights from ``cfg.weights`` or the cache)."""
    return _entry(cfg)(cfg, Path(cache_dir))


def network_tag(cfg: PriorConfig, cache_dir: Path) -> str:
    """``build_prior_network(cfg, cache_dir).tag``, without building where the entry can."""
    entry = _entry(cfg)
    tag = getattr(entry, "tag", None)
    # A plain callable (a test's stand-in) has no cheap tag: build it.
    return tag(cfg, Path(cache_dir)) if callable(tag) else entry(cfg, Path(cache_dir)).tag


# ---------------------------------------------------------------------------------------------
# preprocessing wrappers


class DigitsPrior(nn.Module):
    """The digits classifier's 128 features of [-1, 1] images, quantised as evaluation does."""

    def __init__(self, net: DigitsCNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, 128)."""
        return self.net.features(preprocess_digits(to_uint8(x)))


class ImageNetPrior(nn.Module):
    """[-1, 1] images -> [0, 1], RGB, 224 px (bilinear, antialiased), ImageNet-normalised, then
    ``body`` (a headless torchvision network)."""

    mean: Tensor
    std: Tensor

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        # Not persistent: the state dict is exactly the torchvision network's.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1 or 3, H, W) in [-1, 1] -> (N, dim)."""
        x = (x.float() + 1.0) / 2.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (IMAGENET_RESOLUTION, IMAGENET_RESOLUTION):
            x = F.interpolate(x, size=(IMAGENET_RESOLUTION, IMAGENET_RESOLUTION),
                              mode="bilinear", align_corners=False, antialias=True)
        return self.body((x - self.mean) / self.std)


def _resnet50_body() -> nn.Module:
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Identity()  # forward then ends at the 2048-d global average pool
    return net


def _vgg16_body() -> nn.Module:
    net = torchvision.models.vgg16(weights=None)
    # Linear, ReLU, Dropout, Linear (fc7), ReLU: the slice keeps the indices 0..4 as key names.
    net.classifier = net.classifier[:5]
    return net


# The keys of each torchvision file that belong to the head removed above.
_BODIES: dict[str, tuple[Callable[[], nn.Module], int, tuple[str, ...]]] = {
    "resnet50": (_resnet50_body, 2048, ("fc.",)),
    "vgg16": (_vgg16_body, 4096, ("classifier.6.",)),
}


# ---------------------------------------------------------------------------------------------
# weights files


def weights_path(cfg: PriorConfig) -> Path:
    """The local weights file of ``cfg.network``; UserError (one line) when unset or missing."""
    if not cfg.weights:
        raise UserError(f"prior.weights: prior.network={cfg.network} needs a local weights file "
                        "(never downloaded); set prior.weights to its path")
    p = Path(cfg.weights).expanduser()
    if not p.is_file():
        raise UserError(f"prior.weights: file not found: {p} (prior.network={cfg.network})")
    return p


def read_state_dict(path: Path, network: str) -> dict[str, Tensor]:
    """The state dict in ``path``: the file itself, or one under "state_dict" / "model"."""
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors alike: not a weights file
        raise UserError(f"prior.weights: cannot read {path} as a torch weights file "
                        f"({type(e).__name__}; prior.network={network})") from None
    while isinstance(obj, dict) and not _is_state(obj):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)),
                     None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not _is_state(obj):
        raise UserError(f"prior.weights: {path} holds no state dict (nor one under 'state_dict'"
                        f" or 'model'; prior.network={network})")
    return dict(obj)


def _is_state(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def _strip_module(key: str) -> str:
    # DataParallel / DDP saves every key under "module.".
    return key[len("module."):] if key.startswith("module.") else key


def simclr_key(key: str) -> str | None:
    """A SimCLR checkpoint key as a torchvision ResNet-50 key; None for a head's key."""
    while any(key.startswith(p) for p in SIMCLR_PREFIXES):
        key = next(key[len(p):] for p in SIMCLR_PREFIXES if key.startswith(p))
    return None if key.split(".", 1)[0] in SIMCLR_HEADS else key


def load_into(body: nn.Module, state: dict[str, Tensor], network: str, arch: str,
              path: Path) -> None:
    """Strictly load ``state`` into ``body`` (built on the meta device: tensors are assigned);
    UserError naming the first missing, unexpected or mis-shaped key."""
    expected = body.state_dict()
    bad = None
    for k, v in expected.items():
        # Old BatchNorm files lack it; BatchNorm's own loader fills in 0.
        if k not in state and not k.endswith("num_batches_tracked"):
            bad = f"missing key {k}"
        elif k in state and tuple(state[k].shape) != tuple(v.shape):
            bad = f"key {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        if bad:
            break
    if bad is None:
        extra = [k for k in state if k not in expected]
        bad = f"unexpected key {extra[0]}" if extra else None
    if bad:
        raise UserError(f"prior.weights: {path} is not a {network} weights file ({bad}); "
                        f"prior.network={network} needs a torchvision {arch} state dict")
    body.load_state_dict(state, strict=True, assign=True)
    assert not any(t.is_meta for t in body.state_dict().values()), "a tensor was not loaded"


def _pretrained(name: str, remap: Callable[[str], str | None], arch: str,
                cfg: PriorConfig) -> nn.Module:
    path = weights_path(cfg)
    state = {}
    make, _, head = _BODIES[arch]
    for k, v in read_state_dict(path, name).items():
        key = remap(k)
        if key is not None and not key.startswith(head):
            state[key] = v
    # The meta device skips the random init (seconds for vgg16) the file overwrites anyway.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        body = make()
    load_into(body, state, name, arch, path)
    return ImageNetPrior(body.float())


def _file_tag(name: str) -> Callable[[PriorConfig, Path], str]:
    return lambda cfg, cache_dir: f"{name}-{file_hash(weights_path(cfg))}"


def _random_tag(name: str) -> Callable[[PriorConfig, Path], str]:
    # The init's draws and formulas belong to these versions; the seed picks the draws.
    versions = short_hash(f"torch{torch.__version__}-tv{torchvision.__version__}".encode())
    return lambda cfg, cache_dir: f"{name}-seed{cfg.seed}-{versions}"


def _seeded(make: Callable[[], nn.Module]) -> Callable[[PriorConfig, Path], nn.Module]:
    def build(cfg: PriorConfig, cache_dir: Path) -> nn.Module:
        # Forked: the init draws must not move the caller's (a training run's) global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return make()
    return build


def _digits(cfg: PriorConfig, cache_dir: Path) -> nn.Module:
    return DigitsPrior(load_digits_classifier(ensure_digits_classifier(cache_dir))[0])


PRIOR_NETWORKS.register("digits")(PriorSpec(
    _digits, 128, lambda cfg, cache_dir: f"digits-{file_hash(ensure_digits_classifier(cache_dir))}"
))
PRIOR_NETWORKS.register("random_digits")(PriorSpec(
    _seeded(lambda: DigitsPrior(DigitsCNN())), 128, _random_tag("random_digits")))
for _arch, (_make, _dim, _) in _BODIES.items():
    PRIOR_NETWORKS.register(_arch)(PriorSpec(
        lambda cfg, cache_dir, a=_arch: _pretrained(a, _strip_module, a, cfg), _dim,
        _file_tag(_arch)))
    PRIOR_NETWORKS.register(f"random_{_arch}")(PriorSpec(
        _seeded(lambda m=_make: ImageNetPrior(m())), _dim, _random_tag(f"random_{_arch}")))
PRIOR_NETWORKS.register("simclr_resnet50")(PriorSpec(
    lambda cfg, cache_dir: _pretrained("simclr_resnet50", simclr_key, "resnet50", cfg), 2048,
    _file_tag("simclr_resnet50")))
