"""Shared model pieces: the data spec, the model registry, the G/D base classes, conditional BN,
the prior's linear maps, the spectral-norm helpers, the standard-normal latent draw, the
image-shape check and the DCGAN-style init.

Conditioning (``y`` below) is either class labels, long of shape (n,), or an instance prior, float
of shape (n, d) with ``d = DataSpec.prior_dim`` (a frozen network's feature of a real image; the
two are alternatives). With a prior a learnable linear map of ``p`` takes the place of the class
embeddings, in G's conditional BN and in D's projection term.

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
    ``num_classes`` is 0 when the data has no labels. ``prior_dim`` is the size ``d`` of the
    instance prior G and D are conditioned on (0: no prior).
    """

    shape: tuple[int, ...]
    num_classes: int
    prior_dim: int = 0


ModelBuilder = Callable[[ModelConfig, DataSpec], "tuple[Generator, Discriminator]"]

MODELS: Registry[ModelBuilder] = Registry("model")


class Generator(nn.Module):
    """Base generator: ``forward(z, y) == rest(stem(z, y), y)`` by construction.

    Subclasses set ``z_dim``, ``conditional`` and ``num_classes`` (0 when not class-conditional),
    and ``prior_dim`` when conditioned on a prior (``y`` is then the (n, d) prior), and
    implement ``sample_z``, ``stem`` and ``rest``; ``stem`` and ``rest`` return fp32 whatever
    autocast computed inside (``tuneable_gan.precision``).
    """

    z_dim: int
    conditional: bool
    num_classes: int
    prior_dim: int = 0  # the size of the instance prior ``y``; 0: labels or nothing
    # True: image samples lie in the data range [-1, 1] by construction (a tanh); False: not
    # bounded (stylegan2's linear output, as its reference; evaluation and saving clamp).
    bounded: bool = True
    # Where a G with noise inputs (stylegan2) draws its random noise; the trainer gives G the
    # run's stream and G_ema a stream of its own, reseeded for every evaluation.
    noise_generator: torch.Generator | None = None

    def sample_z(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Draw ``n`` latents using only ``generator``; returned on ``device``."""
        raise NotImplementedError

    def stem(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The output ``u`` of G's first linear layer (AdvAug's G-side feature)."""
        raise NotImplementedError

    def rest(self, u: Tensor, y: Tensor | None = None) -> Tensor:
        """Everything of G after the stem: ``u`` -> samples of shape (n, *spec.shape)."""
        raise NotImplementedError

    def train_stem(self, z: Tensor, y: Tensor | None, generator: torch.Generator) -> Tensor:
        """The stem of a training forward (``rest(train_stem(z, y, g), y)``): ``stem(z, y)``,
        unless the arch regularises its training latents (stylegan2's style mixing, drawn from
        ``generator``)."""
        return self.stem(z, y)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Samples of shape (n, *spec.shape) from latents ``z`` (and labels/prior ``y``)."""
        return self.rest(self.stem(z, y), y)


class Discriminator(nn.Module):
    """Base discriminator: ``forward(x, y) == head(trunk(x), y)`` by construction.

    The output is the raw logit, shape (n,). Subclasses must not mix samples (no BatchNorm)
    beyond groups of ``sample_group`` consecutive samples, so with ``sample_group == 1`` the
    gradient of ``D(x).sum()`` w.r.t. ``x`` is each sample's own gradient. ``trunk`` and
    ``head`` return fp32 whatever autocast computed inside (``tuneable_gan.precision``).
    """

    conditional: bool
    num_classes: int
    prior_dim: int = 0  # the size of the instance prior ``y``; 0: labels or nothing
    # The number of consecutive samples (0..g-1, g..2g-1, ...) a logit may depend on: 1 = none
    # mixed; stylegan2's minibatch-stddev group size otherwise (its batches must then be a
    # multiple of it, or smaller, a single group).
    sample_group: int = 1

    def trunk(self, x: Tensor) -> Tensor:
        """Pooled penultimate features ``h`` of shape (n, F) (AdvAug's D-side feature)."""
        raise NotImplementedError

    def head(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Final linear layer (+ projection of the labels/prior ``y``): (n, F) -> (n,)."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Raw logit of shape (n,) for inputs ``x`` (and labels/prior ``y`` if conditional)."""
        return self.head(self.trunk(x), y)


def need_labels(conditional: bool, y: Tensor | None, who: str) -> Tensor | None:
    """``y`` (labels or prior) for a conditional model (ValueError if missing); None for an
    unconditional one."""
    if not conditional:
        return None
    if y is None:
        raise ValueError(f"conditional {who} needs class labels y, got None")
    return y


PRIOR_INIT_STD = 0.02  # the N(0, 0.02) of the prior's linear maps (DCGAN's init scale)


@torch.no_grad()
def prior_gain_bias(prior_dim: int, num_features: int) -> tuple[nn.Linear, nn.Linear]:
    """The learnable linear maps ``gain, bias: R^d -> R^C`` of a prior that replace a conditional
    BN's class embeddings: weights N(0, 0.02), gain bias 1, bias bias 0, so every prior starts
    near the plain BN (gain ~ 1, shift ~ 0). Plain linears (no spectral norm)."""
    gain, bias = nn.Linear(prior_dim, num_features), nn.Linear(prior_dim, num_features)
    nn.init.normal_(gain.weight, 0.0, PRIOR_INIT_STD)
    nn.init.ones_(gain.bias)
    nn.init.normal_(bias.weight, 0.0, PRIOR_INIT_STD)
    nn.init.zeros_(bias.bias)
    return gain, bias


def projection_embedding(num_classes: int, prior_dim: int, num_features: int) -> nn.Module | None:
    """D's projection map into its feature space R^F: a class embedding ``Embedding(K, F)``, a
    prior's ``Linear(d, F, bias=False)``, or None for an unconditional D. Callers initialise it
    as their arch does and spectral-normalise it with the rest of D."""
    assert not (num_classes > 0 and prior_dim > 0), "labels and a prior are alternatives"
    if num_classes > 0:
        return nn.Embedding(num_classes, num_features)
    if prior_dim > 0:
        # No bias: <b, h> would be an unconditional term, which D's own linear head already has.
        return nn.Linear(prior_dim, num_features, bias=False)
    return None


class CondBatchNorm2d(nn.Module):
    """BatchNorm2d, class-conditional when ``num_classes > 0``, prior-conditional when
    ``prior_dim > 0``.

    Conditional: BatchNorm2d(affine=False) followed by a gain and a bias read from per-class
    embeddings (init 1 and 0, so at init every class gets the same plain BN) or computed from the
    prior by the linear maps of ``prior_gain_bias`` (gain ~ 1, bias ~ 0 at init).
    """

    def __init__(self, num_features: int, num_classes: int = 0, prior_dim: int = 0) -> None:
        super().__init__()
        assert not (num_classes > 0 and prior_dim > 0), "labels and a prior are alternatives"
        self.num_classes = num_classes
        self.prior_dim = prior_dim
        self.conditional = num_classes > 0 or prior_dim > 0
        self.bn = nn.BatchNorm2d(num_features, affine=not self.conditional)
        self.gain: nn.Module
        self.bias: nn.Module
        if num_classes > 0:
            self.gain = nn.Embedding(num_classes, num_features)
            self.bias = nn.Embedding(num_classes, num_features)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)
        elif prior_dim > 0:
            self.gain, self.bias = prior_gain_bias(prior_dim, num_features)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Normalise ``x`` (n, C, H, W); scale and shift by the labels or prior ``y`` when
        conditional (an Embedding and a Linear are both called on ``y``)."""
        out = self.bn(x)
        if not self.conditional:
            return out
        assert y is not None, "conditional BN needs class labels or a prior y"
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
    Conditional-BN gains/biases (embeddings or a prior's linear maps) are left alone: they have
    their own init.
    """
    own_init = {id(m) for bn in module.modules() if isinstance(bn, CondBatchNorm2d)
                for m in bn.modules()}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in own_init:
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
