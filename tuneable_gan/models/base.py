"""Shared model pieces: the data spec, the model registry, the G/D base classes, conditional BN,
the spectral-norm helpers, the standard-normal latent draw, the image-shape check and the
DCGAN-style init.

G and D are split at fixed points so feature-level AdvAug (docs/methods.md 3.3) can perturb them:
G = rest(stem(z)) with ``u = stem(z)`` the output of G's first linear layer, and
D = head(trunk(x)) with ``h = trunk(x)`` the pooled penultimate features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from tuneable_gan.config import ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.precision import no_autocast
from tuneable_gan.registry import Registry


@dataclass(frozen=True)
class DataSpec:
    """What the models need to know about the data.

    ``shape`` is one sample's shape: (C, H, W) for images, (1,) for the 1-D toy data.
    ``num_classes`` is 0 when the data has no labels.
    """

    shape: tuple[int, ...]
    num_classes: int


ModelBuilder = Callable[[ModelConfig, DataSpec], "tuple[Generator, Discriminator]"]

MODELS: Registry[ModelBuilder] = Registry("model")


class Generator(nn.Module):
    """Base generator: ``forward(z, y) == rest(stem(z, y), y)`` by construction.

    Subclasses set ``z_dim``, ``conditional`` and ``num_classes`` (0 when unconditional) and
    implement ``sample_z``, ``stem`` and ``rest``; ``stem`` and ``rest`` return fp32 whatever
    autocast computed inside (``tuneable_gan.precision``).
    """

    z_dim: int
    conditional: bool
    num_classes: int

    def sample_z(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Draw ``n`` latents using only ``generator``; returned on ``device``."""
        raise NotImplementedError

    def stem(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The output ``u`` of G's first linear layer (AdvAug's G-side feature)."""
        raise NotImplementedError

    def rest(self, u: Tensor, y: Tensor | None = None) -> Tensor:
        """Everything of G after the stem: ``u`` -> samples of shape (n, *spec.shape)."""
        raise NotImplementedError

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Samples of shape (n, *spec.shape) from latents ``z`` (and ``y`` if conditional)."""
        return self.rest(self.stem(z, y), y)


class Discriminator(nn.Module):
    """Base discriminator: ``forward(x, y) == head(trunk(x), y)`` by construction.

    The output is the raw logit, shape (n,). Subclasses must not mix samples (no BatchNorm), so
    the gradient of ``D(x).sum()`` w.r.t. ``x`` is each sample's own gradient. ``trunk`` and
    ``head`` return fp32 whatever autocast computed inside (``tuneable_gan.precision``).
    """

    conditional: bool
    num_classes: int

    def trunk(self, x: Tensor) -> Tensor:
        """Pooled penultimate features ``h`` of shape (n, F) (AdvAug's D-side feature)."""
        raise NotImplementedError

    def head(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Final linear layer (+ class projection when conditional): (n, F) -> (n,)."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Raw logit of shape (n,) for inputs ``x`` (and labels ``y`` if conditional)."""
        return self.head(self.trunk(x), y)


def need_labels(conditional: bool, y: Tensor | None, who: str) -> Tensor | None:
    """``y`` for a conditional model (ValueError if missing); None for an unconditional one."""
    if not conditional:
        return None
    if y is None:
        raise ValueError(f"conditional {who} needs class labels y, got None")
    return y


class CondBatchNorm2d(nn.Module):
    """BatchNorm2d, class-conditional when ``num_classes > 0``.

    Conditional: BatchNorm2d(affine=False) followed by a per-class gain (init 1) and bias (init 0)
    read from embeddings, so at init every class gets the same plain BN.
    """

    def __init__(self, num_features: int, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(num_features, affine=num_classes == 0)
        if num_classes > 0:
            self.gain = nn.Embedding(num_classes, num_features)
            self.bias = nn.Embedding(num_classes, num_features)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Normalise ``x`` (n, C, H, W); scale and shift by class ``y`` when conditional."""
        out = self.bn(x)
        if self.num_classes == 0:
            return out
        assert y is not None, "conditional BN needs class labels y"
        return out * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class FP32SpectralNorm(_SpectralNorm):
    """torch's spectral-norm parametrization with autocast off inside: the power iteration, the
    stored ``_u``/``_v`` and sigma are fp32 in a bf16 run too (CUDA autocast would run its
    matrix-vector products in bf16), so the normalised weight is fp32 and only the layer that
    uses it casts. In an fp32 run nothing changes (``precision.no_autocast``)."""

    def forward(self, weight: Tensor) -> Tensor:
        with no_autocast(weight.device):
            return super().forward(weight)


def sn(module: nn.Module, eps: float = 1e-12) -> nn.Module:
    """Wrap ``module``'s weight with spectral norm (the parametrization API, not the old hook).

    One power iteration per training-mode forward; ``eps`` guards the normalisations (torch's
    default 1e-12 matches the SNGAN reference; BigGAN-CIFAR uses 1e-8). The raw weight lives at
    ``parametrizations.weight.original`` and the singular vectors ``_u``/``_v`` are buffers, so
    both are in the state_dict (and in the trainer's G EMA). As
    ``nn.utils.parametrizations.spectral_norm`` (same dim rule, same init draws), with
    ``FP32SpectralNorm``.
    """
    # torch's rule: the output dimension is 1 for transposed convolutions, else 0.
    dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                                   nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(
        module, "weight", FP32SpectralNorm(module.weight, 1, dim, eps))
    return module


def sn_all_(module: nn.Module, eps: float = 1e-12,
            types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear, nn.Embedding)) -> None:
    """Spectral-normalise every layer of ``types`` inside ``module`` (call after the init)."""
    for m in list(module.modules()):
        if isinstance(m, types):
            sn(m, eps)


def standard_normal_z(n: int, z_dim: int, generator: torch.Generator,
                      device: torch.device | str) -> Tensor:
    """``n`` standard-normal latents of size ``z_dim`` drawn only from ``generator``."""
    # Draw on the generator's own device, then move: the same seed gives the same z anywhere.
    return torch.randn(n, z_dim, generator=generator, device=generator.device).to(device)


def square_image(spec: DataSpec, arch: str, resolutions: tuple[int, ...]) -> tuple[int, int]:
    """(channels, side) of ``spec``; ConfigError unless it is a square image of a listed side."""
    if len(spec.shape) != 3:
        raise ConfigError(f"model.arch={arch} needs image data (C, H, W); got sample shape "
                          f"{tuple(spec.shape)} (use model.arch=toy for data.name=toy2pt)")
    channels, height, width = spec.shape
    if height != width or height not in resolutions:
        got = f"{height}" if height == width else f"{height}x{width}"
        allowed = " or ".join(map(str, resolutions))
        raise ConfigError(f"data.resolution must be {allowed} for model.arch={arch}; got {got}")
    return channels, height


def dcgan_init_(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases for every Conv2d/Linear inside ``module``.

    Call before ``sn``: once wrapped, ``.weight`` is computed and cannot be assigned.
    Embeddings are left alone (conditional-BN gains/biases have their own init).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
