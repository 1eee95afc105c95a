"""A small DCGAN-style G/D sized for CPU, for images at resolution 8, 16 or 32.

G: Linear -> 4x4 map -> [BN-ReLU-up2-conv3x3] x log2(res/4) -> BN-ReLU-conv3x3-tanh, with
class- or prior-conditional BN when conditional. D: SN everywhere, conv3x3 then strided 4x4 convs
down to 4x4, LeakyReLU(0.2), global sum pooling, linear head (+ projection term when
conditional: ``<embed(y), h>`` with a class embedding, or a linear map of the prior).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tuneable_gan.config import ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models.base import (
    MODELS,
    CondBatchNorm2d,
    DataSpec,
    Discriminator,
    Generator,
    dcgan_init_,
    need_labels,
    projection_embedding,
    sn,
    standard_normal_z,
)

RESOLUTIONS = (8, 16, 32)
BASE = 4  # spatial size of G's first map and of D's last


class UpBlock(nn.Module):
    """(Conditional) BN -> ReLU -> nearest upsample x2 -> conv3x3."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, prior_dim: int = 0) -> None:
        super().__init__()
        self.bn = CondBatchNorm2d(in_ch, num_classes, prior_dim)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(n, in_ch, s, s) -> (n, out_ch, 2s, 2s)."""
        x = F.interpolate(F.relu(self.bn(x, y)), scale_factor=2, mode="nearest")
        return self.conv(x)


class DCGANGenerator(Generator):
    """Linear stem to a (4 g_ch, 4, 4) map, then upsampling blocks to (C, res, res) in [-1, 1].

    Conditioned on class labels (``num_classes > 0``) or on a (n, prior_dim) prior, through every
    BN (the output BN included); at most one of the two.
    """

    def __init__(self, z_dim: int, g_ch: int, channels: int, resolution: int,
                 num_classes: int = 0, prior_dim: int = 0) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.conditional = num_classes > 0 or prior_dim > 0
        self.num_classes = num_classes
        self.prior_dim = prior_dim
        self.stem_ch = 4 * g_ch
        self.linear = nn.Linear(z_dim, BASE * BASE * self.stem_ch)
        blocks, ch = [], self.stem_ch
        for _ in range(int(math.log2(resolution // BASE))):
            out = max(ch // 2, g_ch)
            blocks.append(UpBlock(ch, out, num_classes, prior_dim))
            ch = out
        self.blocks = nn.ModuleList(blocks)
        self.out_bn = CondBatchNorm2d(ch, num_classes, prior_dim)
        self.out_conv = nn.Conv2d(ch, channels, 3, padding=1)
        dcgan_init_(self)

    def sample_z(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Standard normal, shape (n, z_dim)."""
        return standard_normal_z(n, self.z_dim, generator, device)

    def stem(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """First linear layer, reshaped to the (n, 4 g_ch, 4, 4) map. ``y`` is not used here."""
        return self.linear(z).float().view(z.shape[0], self.stem_ch, BASE, BASE)

    def rest(self, u: Tensor, y: Tensor | None = None) -> Tensor:
        """Upsampling blocks and the output conv: (n, 4 g_ch, 4, 4) -> (n, C, res, res)."""
        y = need_labels(self.conditional, y, "G")
        for block in self.blocks:
            u = block(u, y)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(u, y))).float())


class DCGANDiscriminator(Discriminator):
    """Spectrally normalised conv D with sum pooling and an optional projection head (of class
    labels, or of a (n, prior_dim) prior)."""

    def __init__(self, d_ch: int, channels: int, resolution: int, num_classes: int = 0,
                 prior_dim: int = 0) -> None:
        super().__init__()
        self.conditional = num_classes > 0 or prior_dim > 0
        self.num_classes = num_classes
        self.prior_dim = prior_dim
        layers: list[nn.Module] = [nn.Conv2d(channels, d_ch, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = d_ch
        for _ in range(int(math.log2(resolution // BASE))):
            out = min(2 * ch, 4 * d_ch)
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.linear = nn.Linear(ch, 1)
        self.embed = projection_embedding(num_classes, prior_dim, ch)
        dcgan_init_(self)
        # N(0, 0.02) for the class embedding and the prior's map alike (dcgan_init_ skips
        # embeddings; for the prior's Linear this redraws what it drew).
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        # No BatchNorm anywhere: SN alone keeps D Lipschitz-ish without mixing samples, which the
        # per-sample gradient penalties (DigGAN, R1, ...) rely on.
        for m in list(self.modules()):
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                sn(m)

    def trunk(self, x: Tensor) -> Tensor:
        """Convs and global sum pooling: (n, C, res, res) -> (n, F)."""
        # Sum (not mean) pooling, as in the SNGAN/BigGAN reference Ds; accumulated in fp32.
        return self.features(x).sum(dim=(2, 3), dtype=torch.float32)

    def head(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Linear(F, 1) plus ``sum(embed(y) * h)`` when conditional (``y``: labels or prior):
        (n, F) -> (n,)."""
        out = self.linear(h).squeeze(1)
        y = need_labels(self.conditional, y, "D")
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out.float()


@MODELS.register("dcgan")
def build_dcgan(cfg: ModelConfig, spec: DataSpec) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """(G, D) for square images of side 8, 16 or 32 with any channel count; class-conditional
    when ``cfg.conditional``, prior-conditional when ``spec.prior_dim > 0``."""
    if len(spec.shape) != 3:
        raise ConfigError(f"model.arch=dcgan needs image data (C, H, W); got sample shape "
                          f"{tuple(spec.shape)} (use model.arch=toy for data.name=toy2pt)")
    channels, height, width = spec.shape
    if height != width or height not in RESOLUTIONS:
        raise ConfigError(f"data.resolution must be one of {', '.join(map(str, RESOLUTIONS))} "
                          f"for model.arch=dcgan; got {height}x{width}")
    num_classes = spec.num_classes if cfg.conditional else 0
    g = DCGANGenerator(cfg.z_dim, cfg.g_ch, channels, height, num_classes, spec.prior_dim)
    d = DCGANDiscriminator(cfg.d_ch, channels, height, num_classes, spec.prior_dim)
    return g, d
