"""BigGAN for 32x32 images, as configured by the DiffAugment/LeCam/DigGAN BigGAN-CIFAR code.

Follows ``mit-han-lab/data-efficient-gans: DiffAugment-biggan-cifar/{BigGAN.py,layers.py}`` with
the scripts' settings (docs/methods.md 6.1): ``arch[32]``, no attention, not hierarchical,
G_shared=False, SN in G and D with one power iteration and eps 1e-8, BN eps 1e-5, ReLU, N02 init.

- G: SNLinear(z, 4*4*W) -> 3 GBlocks (ccBN-ReLU-up2-SNconv3x3-ccBN-ReLU-SNconv3x3, shortcut
  up2-SNconv1x1) -> BN-ReLU-SNconv3x3-tanh. ccBN: BatchNorm2d(affine=False) scaled by
  ``1 + gain_embedding[y]`` and shifted by ``bias_embedding[y]`` (plain affine BN when
  unconditional). The ccBN embeddings are not spectrally normalised and, like every Conv2d,
  Linear and Embedding weight, start at N(0, 0.02) (as in the reference: ``init_weights``).
- D: 4 wide DBlocks (down, down, none, none; the first without pre-activation) -> ReLU -> global
  sum pool -> SNLinear(W, 1) + projection ``<SNEmbedding[y], h>`` when conditional.

Conditional on an instance prior ``p`` (n, d) instead (``DataSpec.prior_dim > 0``): BigGAN's
G_shared form, with a plain ``Linear(d, 128)`` (G_emb, 128 = BigGAN's shared_dim) in place of the
shared class embedding, computed once per forward; each ccBN's gain and bias are SN
``Linear(128, C, bias=False)`` of it (``layers.ccbn`` with ``which_linear=SNLinear``), the output
BN stays unconditional, and D projects with an SN ``Linear(d, W, bias=False)`` in place of the
SNEmbedding. All N(0, 0.02), as the rest.

Channel mapping from ``ModelConfig``: ``W = 4 * g_ch`` in G and ``4 * d_ch`` in D ("256 channels
at ch = 64"), the reference's ``arch[32]`` with G_ch = g_ch, D_ch = d_ch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tuneable_gan.config import ModelConfig
from tuneable_gan.models.base import (
    MODELS,
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
WIDTH_MULT = 4  # arch[32]: every block is ch * 4 wide
SN_EPS = 1e-8  # BigGAN-CIFAR's --SN_eps default (torch's own default is 1e-12)
BN_EPS = 1e-5
INIT_STD = 0.02  # --G_init N02 --D_init N02
SHARED_DIM = 128  # BigGAN's --shared_dim default: the width of G_emb(p) that the ccBNs read


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _down(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 2)


class ClassCondBN(nn.Module):
    """BigGAN's ccbn with G_shared=False: per-class embeddings for the BN gain and bias; or,
    with ``shared_dim > 0``, the G_shared form: SN-able ``Linear(shared_dim, C, bias=False)`` maps
    of G's shared vector ``e = G_emb(p)`` (``y`` in ``forward`` is then ``e``).

    ``out = BN(x) * (1 + gain[y]) + bias[y]`` with BN(affine=False), ``layers.ccbn`` with
    ``which_linear=nn.Embedding``. Both embeddings start at N(0, 0.02), what the reference's
    ``G.init_weights`` gives every nn.Embedding under ``--G_init N02`` (the BigGAN-CIFAR
    scripts' setting), so each class starts near, not at, the identity affine map.
    Unconditional (``num_classes == 0``): an ordinary affine BatchNorm2d, BigGAN's ``layers.bn``.
    """

    def __init__(self, num_features: int, num_classes: int, shared_dim: int = 0) -> None:
        super().__init__()
        assert not (num_classes > 0 and shared_dim > 0), "labels and a prior are alternatives"
        self.num_classes = num_classes
        self.shared_dim = shared_dim
        self.conditional = num_classes > 0 or shared_dim > 0
        self.bn = nn.BatchNorm2d(num_features, eps=BN_EPS, affine=not self.conditional)
        self.gain: nn.Module
        self.bias: nn.Module
        if num_classes > 0:
            self.gain = nn.Embedding(num_classes, num_features)
            self.bias = nn.Embedding(num_classes, num_features)
        elif shared_dim > 0:
            # No bias: the "1 +" and the BN's own zero mean are the maps' constant terms.
            self.gain = nn.Linear(shared_dim, num_features, bias=False)
            self.bias = nn.Linear(shared_dim, num_features, bias=False)
        if self.conditional:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gain and bias weights ~ N(0, 0.02): class gains 1 + N(0, 0.02), biases N(0, 0.02)
        (with a prior: the linear maps' weights)."""
        if self.conditional:
            nn.init.normal_(self.gain.weight, 0.0, INIT_STD)
            nn.init.normal_(self.bias.weight, 0.0, INIT_STD)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Normalise ``x`` (n, C, H, W); scale and shift by class ``y`` or by the shared vector
        ``y = G_emb(p)`` when conditional."""
        out = self.bn(x)
        if not self.conditional:
            return out
        assert y is not None, "conditional BN needs class labels or the shared prior vector y"
        # Stored as an offset from 1, as in BigGAN (a zero embedding would be the identity).
        gain = 1.0 + self.gain(y)[:, :, None, None]
        return out * gain + self.bias(y)[:, :, None, None]


class GBlock(nn.Module):
    """ccBN-ReLU-up2-conv3x3-ccBN-ReLU-conv3x3 plus an up2-conv1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, shared_dim: int = 0) -> None:
        super().__init__()
        self.bn1 = ClassCondBN(in_ch, num_classes, shared_dim)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.bn2 = ClassCondBN(out_ch, num_classes, shared_dim)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # Upsampling always changes the shape, so the shortcut is always learnable here.
        self.conv_sc = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        """(n, in_ch, s, s) -> (n, out_ch, 2s, 2s)."""
        h = self.conv1(_up(F.relu(self.bn1(x, y))))
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.conv_sc(_up(x))


class BigGANGenerator(Generator):
    """SN linear stem to a (W, 4, 4) map, three GBlocks, BN-ReLU-SNconv3x3-tanh to (C, 32, 32).

    Conditioned on class labels (``num_classes > 0``) or on a (n, prior_dim) prior through
    ``prior_embed`` (G_emb) and the GBlocks' ccBNs; at most one of the two.
    """

    def __init__(self, z_dim: int, ch: int, channels: int, num_classes: int = 0,
                 prior_dim: int = 0) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.conditional = num_classes > 0 or prior_dim > 0
        self.num_classes = num_classes
        self.prior_dim = prior_dim
        self.width = WIDTH_MULT * ch
        shared_dim = SHARED_DIM if prior_dim > 0 else 0
        self.linear = nn.Linear(z_dim, BOTTOM * BOTTOM * self.width)
        self.blocks = nn.ModuleList(GBlock(self.width, self.width, num_classes, shared_dim)
                                    for _ in range(3))
        # The output BN is never class-conditional in BigGAN (layers.bn).
        self.out_bn = nn.BatchNorm2d(self.width, eps=BN_EPS)
        self.out_conv = nn.Conv2d(self.width, channels, 3, padding=1)
        biggan_init_(self)
        # SN on G's convs and linear (BigGAN's G_param=SN); the ccBN embeddings stay plain
        # because the reference found SN on them cripples G. The ccBN linears of the prior form
        # are SN (G_shared's which_linear=SNLinear).
        sn_all_(self, SN_EPS, (nn.Conv2d, nn.Linear))
        self.prior_embed: nn.Linear | None = None
        if prior_dim > 0:
            # G_emb, built after sn_all_ so it stays plain, as BigGAN's shared embedding.
            self.prior_embed = nn.Linear(prior_dim, SHARED_DIM)
            biggan_init_(self.prior_embed)

    def sample_z(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Standard normal, shape (n, z_dim) (BigGAN-CIFAR: z_var 1, no truncation)."""
        return standard_normal_z(n, self.z_dim, generator, device)

    def stem(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """First (SN) linear layer, reshaped to (n, W, 4, 4). ``y`` is unused (not hierarchical)."""
        return self.linear(z).float().view(z.shape[0], self.width, BOTTOM, BOTTOM)

    def rest(self, u: Tensor, y: Tensor | None = None) -> Tensor:
        """GBlocks and the output layer: (n, W, 4, 4) -> (n, C, 32, 32) in [-1, 1]. ``y``: labels
        or the (n, d) prior when conditional."""
        y = need_labels(self.conditional, y, "G")
        if self.prior_embed is not None and y is not None:
            y = self.prior_embed(y)  # once per forward, shared by every ccBN
        for block in self.blocks:
            u = block(u, y)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(u))).float())


class DBlock(nn.Module):
    """BigGAN's wide D block: [ReLU]-conv3x3-ReLU-conv3x3 (-avgpool) plus a shortcut.

    With ``preactivation`` the shortcut is conv1x1 then pool (and the residual starts with a
    ReLU); without it (first block, raw image input) pool then conv1x1, as in layers.DBlock.
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, preactivation: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.preactivation = preactivation
        # Wide D: the hidden width is the output width.
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        learnable_sc = in_ch != out_ch or downsample
        self.conv_sc = nn.Conv2d(in_ch, out_ch, 1) if learnable_sc else None

    def shortcut(self, x: Tensor) -> Tensor:
        """Identity, or conv1x1 and pooling in the reference's order for this block type."""
        if self.preactivation:
            x = x if self.conv_sc is None else self.conv_sc(x)
            return _down(x) if self.downsample else x
        x = _down(x) if self.downsample else x
        return x if self.conv_sc is None else self.conv_sc(x)

    def forward(self, x: Tensor) -> Tensor:
        """(n, in_ch, s, s) -> (n, out_ch, s', s') with s' = s/2 when downsampling."""
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = _down(h)
        return h + self.shortcut(x)


class BigGANDiscriminator(Discriminator):
    """SN ResNet D (down, down, none, none) with sum pooling and an optional projection head (of
    class labels, or of a (n, prior_dim) prior)."""

    def __init__(self, ch: int, channels: int, num_classes: int = 0, prior_dim: int = 0) -> None:
        super().__init__()
        self.conditional = num_classes > 0 or prior_dim > 0
        self.num_classes = num_classes
        self.prior_dim = prior_dim
        width = WIDTH_MULT * ch
        self.num_features = width
        self.blocks = nn.Sequential(*(
            DBlock(channels if i == 0 else width, width, downsample=i < 2, preactivation=i > 0)
            for i in range(4)))
        self.linear = nn.Linear(width, 1)
        self.embed = projection_embedding(num_classes, prior_dim, width)
        biggan_init_(self)
        # SN on every layer, the projection embedding included (SNEmbedding); no BatchNorm, so
        # D never mixes samples and per-sample gradient penalties stay per-sample.
        sn_all_(self, SN_EPS)

    def trunk(self, x: Tensor) -> Tensor:
        """Blocks, ReLU, global sum pooling: (n, C, 32, 32) -> (n, W)."""
        # Sum (not mean) pooling, as in the reference: AdvAug's step size is tuned to this scale.
        # Accumulated in fp32.
        return F.relu(self.blocks(x)).sum(dim=(2, 3), dtype=torch.float32)

    def head(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Linear(W, 1) plus ``<embed(y), h>`` when conditional (``y``: labels or prior):
        (n, W) -> (n,)."""
        out = self.linear(h).squeeze(1)
        y = need_labels(self.conditional, y, "D")
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out.float()


@torch.no_grad()
def biggan_init_(module: nn.Module) -> None:
    """BigGAN's ``init_weights`` with ``--G_init N02 --D_init N02`` (call before SN wraps).

    Weights of every Conv2d/Linear/Embedding ~ N(0, 0.02), the ccBN gain and bias embeddings
    and D's projection embedding included; biases keep PyTorch's default init and BN's affine
    parameters 1 and 0, which the reference never overrides. (The reference's own default,
    ``--G_init/--D_init ortho`` in utils.py, is not what its BigGAN-CIFAR scripts run.)
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)


@MODELS.register("biggan")
def build_biggan(cfg: ModelConfig,
                 spec: DataSpec) -> tuple[BigGANGenerator, BigGANDiscriminator]:
    """(G, D) for 32x32 images with any channel count; class-conditional when
    ``model.conditional`` (ccBN in G, projection in D), prior-conditional when
    ``spec.prior_dim > 0`` (shared G_emb + ccBN, projection), otherwise plain BN and no
    projection."""
    channels, _ = square_image(spec, "biggan", (32,))
    num_classes = spec.num_classes if cfg.conditional else 0
    g = BigGANGenerator(cfg.z_dim, cfg.g_ch, channels, num_classes, spec.prior_dim)
    d = BigGANDiscriminator(cfg.d_ch, channels, num_classes, spec.prior_dim)
    return g, d
