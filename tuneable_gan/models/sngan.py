"""SNGAN ResNet for 32x32 images (Miyato et al. 2018), as in the lottery-ticket SNGAN code.

Follows ``VITA-Group/Ultra-Data-Efficient-GAN-Training: SNGAN/models/sngan_cifar10.py`` (itself
GongXinyuu/sngan.pytorch), docs/methods.md 3.4 and 6.2:

- G: Linear(z, 4*4*Cg) -> 3 GenBlocks (BN-ReLU-up2-conv3x3-BN-ReLU-conv3x3, shortcut
  up2-conv1x1) -> BN-ReLU-conv3x3-tanh. Plain BatchNorm, no spectral norm.
- D: OptimizedDisBlock (down) -> DisBlock (down) -> 2 DisBlocks (no down) -> ReLU -> global sum
  pool -> Linear(Cd, 1, no bias). Spectral norm on every conv/linear, no BatchNorm.

Channel mapping from ``ModelConfig``: ``Cg = 4 * g_ch`` (the reference's gf_dim) and
``Cd = 2 * d_ch`` (df_dim), so g_ch = d_ch = 64 gives the paper's 256/128.

Not class-conditional (the reference is unconditional), but conditional on an instance prior
``p`` (n, d) when ``DataSpec.prior_dim > 0`` (the data-instance-prior form): the GenBlocks' BNs
become BatchNorm2d(affine=False) scaled and shifted by linear maps of ``p`` (``CondBatchNorm2d``;
the output BN stays plain), and D adds the projection ``<embed(p), h>`` with ``embed`` an SN
``Linear(d, Cd, bias=False)``, xavier_uniform like the reference's convs.
"""

from __future__ import annotations

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
    need_labels,
    projection_embedding,
    sn_all_,
    square_image,
    standard_normal_z,
)

BOTTOM = 4  # spatial size of G's first map
G_MULT, D_MULT = 4, 2  # gf_dim = 4 g_ch, df_dim = 2 d_ch (256/128 at g_ch = d_ch = 64)


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _down(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 2)


def _block_bn(ch: int, prior_dim: int) -> nn.Module:
    # Plain BatchNorm2d without a prior: the unconditional module tree stays the reference's.
    return CondBatchNorm2d(ch, prior_dim=prior_dim) if prior_dim > 0 else nn.BatchNorm2d(ch)


class GenBlock(nn.Module):
    """Pre-activation up-block: BN-ReLU-up2-conv3x3-BN-ReLU-conv3x3 plus up2-conv1x1 shortcut.

    With ``prior_dim > 0`` both BNs are conditional on the prior (``CondBatchNorm2d``).
    """

    def __init__(self, in_ch: int, out_ch: int, prior_dim: int = 0) -> None:
        super().__init__()
        self.conditional = prior_dim > 0
        self.b1 = _block_bn(in_ch, prior_dim)
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.b2 = _block_bn(out_ch, prior_dim)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # Upsampling always changes the shape, so the shortcut is always learnable here.
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1)

    def _bn(self, bn: nn.Module, x: Tensor, p: Tensor | None) -> Tensor:
        return bn(x, p) if self.conditional else bn(x)

    def forward(self, x: Tensor, p: Tensor | None = None) -> Tensor:
        """(n, in_ch, s, s) -> (n, out_ch, 2s, 2s); ``p`` the (n, d) prior when conditional."""
        h = self.c1(_up(F.relu(self._bn(self.b1, x, p))))
        h = self.c2(F.relu(self._bn(self.b2, h, p)))
        return h + self.c_sc(_up(x))


class SNGANGenerator(Generator):
    """Linear stem to a (Cg, 4, 4) map, three up-blocks, BN-ReLU-conv3x3-tanh to (C, 32, 32).

    Unconditional, or conditional on a (n, prior_dim) prior through the up-blocks' BNs.
    """

    def __init__(self, z_dim: int, ch: int, channels: int, prior_dim: int = 0) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.conditional = prior_dim > 0
        self.num_classes = 0
        self.prior_dim = prior_dim
        self.ch = ch
        self.l1 = nn.Linear(z_dim, BOTTOM * BOTTOM * ch)
        self.blocks = nn.ModuleList(GenBlock(ch, ch, prior_dim) for _ in range(3))
        self.b5 = nn.BatchNorm2d(ch)
        self.c5 = nn.Conv2d(ch, channels, 3, padding=1)
        sngan_init_(self)

    def sample_z(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Standard normal, shape (n, z_dim)."""
        return standard_normal_z(n, self.z_dim, generator, device)

    def stem(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """First linear layer, reshaped to the (n, Cg, 4, 4) map (the reference's ``only_l1``)."""
        return self.l1(z).float().view(z.shape[0], self.ch, BOTTOM, BOTTOM)

    def rest(self, u: Tensor, y: Tensor | None = None) -> Tensor:
        """Up-blocks and the output layer: (n, Cg, 4, 4) -> (n, C, 32, 32) in [-1, 1]. ``y`` is
        the (n, d) prior when conditional, else ignored."""
        y = need_labels(self.conditional, y, "G")
        for block in self.blocks:
            u = block(u, y)
        return torch.tanh(self.c5(F.relu(self.b5(u))).float())


class OptimizedDisBlock(nn.Module):
    """D's first block: conv3x3-ReLU-conv3x3-avgpool plus avgpool-conv1x1 shortcut.

    No ReLU on the input: the raw image must not be rectified.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(n, in_ch, s, s) -> (n, out_ch, s/2, s/2)."""
        h = _down(self.c2(F.relu(self.c1(x))))
        # Pool before the 1x1 conv: same result (both linear), 4x cheaper.
        return h + self.c_sc(_down(x))


class DisBlock(nn.Module):
    """Pre-activation D block: ReLU-conv3x3-ReLU-conv3x3 (-avgpool); 1x1 shortcut if needed."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        # SNGAN's "thin" D: the hidden width is the input width (BigGAN's wide D uses out_ch).
        self.c1 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.c2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        learnable_sc = in_ch != out_ch or downsample
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1) if learnable_sc else None

    def forward(self, x: Tensor) -> Tensor:
        """(n, in_ch, s, s) -> (n, out_ch, s', s') with s' = s/2 when downsampling."""
        h = self.c2(F.relu(self.c1(F.relu(x))))
        sc = x if self.c_sc is None else self.c_sc(x)
        if self.downsample:
            h, sc = _down(h), _down(sc)
        return h + sc


class SNGANDiscriminator(Discriminator):
    """Spectrally normalised ResNet D (down, down, none, none) with sum pooling, plus the
    projection of a (n, prior_dim) prior when ``prior_dim > 0``."""

    def __init__(self, ch: int, channels: int, prior_dim: int = 0) -> None:
        super().__init__()
        self.conditional = prior_dim > 0
        self.num_classes = 0
        self.prior_dim = prior_dim
        self.num_features = ch
        self.blocks = nn.Sequential(
            OptimizedDisBlock(channels, ch),
            DisBlock(ch, ch, downsample=True),
            DisBlock(ch, ch, downsample=False),
            DisBlock(ch, ch, downsample=False),
        )
        # No bias on the output layer, as in the reference (l5).
        self.l5 = nn.Linear(ch, 1, bias=False)
        self.embed = projection_embedding(0, prior_dim, ch)
        sngan_init_(self)
        if self.embed is not None:
            # xavier_uniform as the convs (and the SNGAN projection D's embedding), not torch's
            # Linear default, which suits no layer of this D.
            nn.init.xavier_uniform_(self.embed.weight)
        # SN after the init, so its power iteration starts from the initialised weights; no
        # BatchNorm anywhere, so D never mixes samples (per-sample gradient penalties rely on it).
        sn_all_(self)

    def trunk(self, x: Tensor) -> Tensor:
        """Blocks, ReLU, global sum pooling: (n, C, 32, 32) -> (n, Cd)."""
        # Sum (not mean) pooling, as in the reference: AdvAug's step size is tuned to this scale.
        # Accumulated in fp32.
        return F.relu(self.blocks(x)).sum(dim=(2, 3), dtype=torch.float32)

    def head(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Linear(Cd, 1) plus ``<embed(y), h>`` with a prior ``y`` (n, d): (n, Cd) -> (n,).
        ``y`` is ignored when unconditional."""
        out = self.l5(h).squeeze(1)
        y = need_labels(self.conditional, y, "D")
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out.float()


@torch.no_grad()
def sngan_init_(module: nn.Module) -> None:
    """The reference's ``weights_init`` with ``--init_type xavier_uniform``.

    Conv2d weights xavier_uniform (call before SN wraps them); BatchNorm weights N(1, 0.02) and
    biases 0; linear layers and conv biases keep PyTorch's default init, as in the reference
    (its init only matches Conv2d and BatchNorm2d). Non-affine BNs (a prior-conditional BN's
    inner one) have no weights to set.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@MODELS.register("sngan")
def build_sngan(cfg: ModelConfig, spec: DataSpec) -> tuple[SNGANGenerator, SNGANDiscriminator]:
    """(G, D) for 32x32 images with any channel count; not class-conditional, conditional on an
    instance prior when ``spec.prior_dim > 0``."""
    if cfg.conditional:
        raise ConfigError("model.conditional=true is not supported by model.arch=sngan (the SNGAN "
                          "reference is unconditional); valid value: false, or use "
                          "model.arch=biggan for class-conditional runs")
    channels, _ = square_image(spec, "sngan", (32,))
    g = SNGANGenerator(cfg.z_dim, G_MULT * cfg.g_ch, channels, spec.prior_dim)
    d = SNGANDiscriminator(D_MULT * cfg.d_ch, channels, spec.prior_dim)
    return g, d
