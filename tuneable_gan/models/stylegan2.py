"""StyleGAN2 (config of StyleGAN2-ADA) for 32 to 256 px images: the networks only.

Follows ``NVlabs/stylegan2-ada-pytorch: training/networks.py`` (layers in ``stylegan2_layers``):

- G = synthesis(mapping(z, c)). Mapping: normalised z (and the normalised FC embedding of the
  one-hot labels or of the instance prior), ``model.mapping_layers`` lrelu FC layers at lr x0.01,
  a tracked ``w_avg`` for truncation, w broadcast to ``num_ws``. Synthesis, skip architecture: a
  learned 4x4 constant, per resolution a 2x-upsampling modulated conv and a modulated conv (both
  demodulated, with noise inputs, bias, lrelu) and a toRGB whose outputs are upsampled and
  summed. The output is linear, not squashed (``bounded = False``), as the reference.
- D, resnet architecture (``model.d_architecture: orig`` drops the skips, the reference's cifar
  setting): fromRGB at the top resolution, blocks conv3x3 - conv3x3 with 2x downsampling plus a
  1x1 downsampling skip, summed with gains sqrt(0.5); epilogue minibatch stddev - conv3x3 - FC -
  FC out; conditional: ``out = <out(h), cmap(c)> / sqrt(cmap_dim)`` with ``cmap`` a mapping
  network of 8 layers (the reference's default for D) from the one-hot labels or the prior.

Widths: ``min(int(model.fmaps * 32768) // r, model.channel_max)`` channels at resolution r, in G
and D; ``model.g_ch`` and ``model.d_ch`` are ignored. The AdvAug split: ``G.stem`` is the mapping
network (u = ws, shape (n, num_ws, w_dim)) and ``G.rest`` the synthesis network; ``D.trunk`` ends
after the epilogue's first FC layer and ``D.head`` is the output FC (+ the projection).

Deviations from the reference: plain torch (no custom ops, no fp16, no conv_clamp unless asked),
and the minibatch-stddev groups are consecutive samples (``stylegan2_layers.minibatch_stddev``).
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
    DataSpec,
    Discriminator,
    Generator,
    need_labels,
    square_image,
    standard_normal_z,
)
from tuneable_gan.models.stylegan2_layers import (
    NOISE_MODES,
    Conv2dLayer,
    FullyConnected,
    MappingNetwork,
    SynthesisLayer,
    ToRGB,
    fir_filter,
    minibatch_stddev,
    randn_like_noise,
    upsample2d,
)

RESOLUTIONS = (32, 64, 128, 256)
CHANNEL_UNIT = 32768  # the reference's channel_base at fmaps = 1
MAPPING_LR = 0.01
D_MAPPING_LAYERS = 8  # D's cmap network: the reference's MappingNetwork default (no --map)
W_AVG_BETA = 0.995


def channel_widths(resolution: int, fmaps: float, channel_max: int) -> dict[int, int]:
    """Channels at each resolution 4 ... ``resolution``: ``min(int(fmaps * 32768) // r, max)``."""
    base = int(fmaps * CHANNEL_UNIT)
    return {2 ** i: min(base // 2 ** i, channel_max)
            for i in range(2, int(math.log2(resolution)) + 1)}


def condition_vector(y: Tensor, num_classes: int) -> Tensor:
    """The reference's c: one-hot labels (n,) -> (n, K) float, or the (n, d) prior as float."""
    return F.one_hot(y.long(), num_classes).float() if num_classes > 0 else y.float()


class SynthesisBlock(nn.Module):
    """One resolution of the skip synthesis network: [const | up-conv], conv, toRGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.first = in_channels == 0
        self.const: nn.Parameter | None = None
        self.conv0: SynthesisLayer | None = None
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.first else 2
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str,
                generator: torch.Generator | None, fused: bool) -> tuple[Tensor, Tensor]:
        """ws: (n, num_conv + 1, w_dim); the last one is toRGB's (the next block's first)."""
        kw = {"noise_mode": noise_mode, "generator": generator, "fused": fused}
        if self.const is not None:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            assert self.conv0 is not None and x is not None
            x = self.conv0(x, ws[:, 0], **kw)
        x = self.conv1(x, ws[:, self.num_conv - 1], **kw)
        y = self.torgb(x, ws[:, self.num_conv], fused=fused)
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (n, num_ws, w_dim) -> images (n, C, R, R); num_ws = 2 log2(R) - 2."""

    def __init__(self, w_dim: int, resolution: int, img_channels: int, widths: dict[int, int],
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.resolutions = sorted(widths)
        self.blocks = nn.ModuleList(
            SynthesisBlock(widths[r // 2] if r > 4 else 0, widths[r], w_dim, r, img_channels,
                           conv_clamp) for r in self.resolutions)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    def forward(self, ws: Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None, fused: bool | None = None) -> Tensor:
        """``fused`` None: grouped convs in eval mode, scaled activations in training (the
        reference's fp32 rule; the same function either way)."""
        if ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (n, {self.num_ws}, {self.w_dim}); got "
                             f"{tuple(ws.shape)}")
        fused = (not self.training) if fused is None else fused
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i:i + block.num_conv + 1].float(), noise_mode,
                           generator, fused)
            i += block.num_conv
        assert img is not None
        return img


class StyleGAN2Generator(Generator):
    """Mapping network (the stem) and skip synthesis network (the rest).

    ``noise_mode`` (random, const, none) and ``noise_generator`` (a torch.Generator for the
    random noise; None: the global RNG) are attributes that ``rest`` reads unless given.
    ``truncation_psi`` != 1 truncates ws in eval mode (``stem``); training never truncates.
    ``style_mixing`` is the probability used by ``mapping_with_mixing``, not by ``forward``.
    """

    bounded = False  # linear toRGB output, as the reference; evaluation clamps to [-1, 1]

    def __init__(self, z_dim: int, w_dim: int, resolution: int, channels: int,
                 widths: dict[int, int], mapping_layers: int, num_classes: int = 0,
                 prior_dim: int = 0, style_mixing: float = 0.9,
                 truncation_psi: float = 1.0) -> None:
        super().__init__()
        assert not (num_classes > 0 and prior_dim > 0), "labels and a prior are alternatives"
        self.z_dim, self.w_dim = z_dim, w_dim
        self.conditional = num_classes > 0 or prior_dim > 0
        self.num_classes = num_classes
        self.prior_dim = prior_dim
        self.style_mixing = style_mixing
        self.truncation_psi = truncation_psi
        self.noise_mode = "random"
        self.noise_generator: torch.Generator | None = None
        # Synthesis first, then mapping: the reference's construction (and init draw) order.
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, widths)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, num_classes or prior_dim, w_dim, self.num_ws,
                                      mapping_layers, MAPPING_LR, W_AVG_BETA)

    def sample_z(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Standard normal, shape (n, z_dim)."""
        return standard_normal_z(n, self.z_dim, generator, device)

    def _c(self, y: Tensor | None) -> Tensor | None:
        y = need_labels(self.conditional, y, "G")
        return None if y is None else condition_vector(y, self.num_classes)

    def stem(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The mapping network: ws of shape (n, num_ws, w_dim) (updates ``w_avg`` in training
        mode; truncated by ``truncation_psi`` in eval mode)."""
        ws = self.mapping(z, self._c(y))
        if not self.training and self.truncation_psi != 1:
            ws = self.truncate(ws, self.truncation_psi)
        return ws.float()

    def rest(self, u: Tensor, y: Tensor | None = None, *, noise_mode: str | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """The synthesis network: ws (n, num_ws, w_dim) -> images (n, C, R, R). ``y`` is unused
        (the conditioning enters through the mapping). Noise: ``noise_mode`` and ``generator``,
        else the attributes of the same names (``noise_generator``)."""
        mode = self.noise_mode if noise_mode is None else noise_mode
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got {mode!r}")
        gen = self.noise_generator if generator is None else generator
        return self.synthesis(u, mode, gen).float()

    def truncate(self, ws: Tensor, psi: float, cutoff: int | None = None) -> Tensor:
        """``w_avg + psi (ws - w_avg)``: psi 1 is the identity, 0 gives w_avg; only the first
        ``cutoff`` ws when given."""
        if psi == 1:
            return ws
        out = self.mapping.w_avg.to(ws.dtype).lerp(ws, psi)
        if cutoff is None:
            return out
        return torch.cat([out[:, :cutoff], ws[:, cutoff:]], dim=1)

    def mapping_with_mixing(self, z: Tensor, y: Tensor | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
        """ws with style-mixing regularisation, the reference's loss-phase draw: a cutoff
        uniform in [1, num_ws), kept with probability ``style_mixing`` (else num_ws, no mixing),
        and ws[:, cutoff:] taken from a second latent (which leaves ``w_avg`` alone). Draws, in
        this order, from ``generator`` (None: the global RNG of z's device); none when
        ``style_mixing`` is 0. No host sync: the cutoff stays a tensor."""
        c = self._c(y)
        ws = self.mapping(z, c)
        if self.style_mixing <= 0 or self.num_ws < 2:
            return ws.float()
        dev = z.device if generator is None else generator.device
        cutoff = torch.randint(1, self.num_ws, (), generator=generator, device=dev)
        keep = torch.rand((), generator=generator, device=dev) < self.style_mixing
        cutoff = torch.where(keep, cutoff, torch.full_like(cutoff, self.num_ws)).to(z.device)
        z2 = randn_like_noise(tuple(z.shape), generator, z.device)
        ws2 = self.mapping(z2, c, update_w_avg=False)
        mixed = torch.arange(self.num_ws, device=z.device) >= cutoff
        return torch.where(mixed[None, :, None], ws2, ws).float()


class DiscriminatorBlock(nn.Module):
    """[fromRGB] conv3x3 - conv3x3 with 2x downsampling, plus (resnet) a 1x1 downsampling skip;
    branches scaled by sqrt(0.5) and summed."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int,
                 img_channels: int, resnet: bool = True,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.fromrgb = (Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu",
                                    conv_clamp=conv_clamp) if in_channels == 0 else None)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu",
                                 conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 conv_clamp=conv_clamp)
        self.skip = (Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)
                     if resnet else None)

    def forward(self, x: Tensor) -> Tensor:
        """(n, C_in or img_channels, r, r) -> (n, C_out, r / 2, r / 2)."""
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        if self.skip is None:
            return self.conv1(self.conv0(x))
        gain = math.sqrt(0.5)
        return self.skip(x, gain=gain) + self.conv1(self.conv0(x), gain=gain)


class StyleGAN2Discriminator(Discriminator):
    """Blocks from R down to 8, then the 4x4 epilogue; logits (n,).

    ``sample_group``: the minibatch-stddev group size (``model.mbstd_group``; 1 without the
    layer): a logit depends on the other samples of its group of consecutive samples only.
    """

    def __init__(self, resolution: int, channels: int, widths: dict[int, int],
                 num_classes: int = 0, prior_dim: int = 0, mbstd_group: int = 4,
                 mbstd_channels: int = 1, resnet: bool = True) -> None:
        super().__init__()
        assert not (num_classes > 0 and prior_dim > 0), "labels and a prior are alternatives"
        self.conditional = num_classes > 0 or prior_dim > 0
        self.num_classes = num_classes
        self.prior_dim = prior_dim
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.sample_group = mbstd_group if mbstd_channels > 0 else 1
        top = widths[4]
        self.num_features = top
        self.blocks = nn.Sequential(*(
            DiscriminatorBlock(0 if r == resolution else widths[r], widths[r], widths[r // 2],
                               channels, resnet)
            for r in sorted(widths, reverse=True) if r > 4))
        c_dim = num_classes or prior_dim
        self.cmap_dim = top if c_dim > 0 else 0
        # Built between the blocks and the epilogue: the reference's init draw order.
        self.mapping = (MappingNetwork(0, c_dim, self.cmap_dim, None, D_MAPPING_LAYERS,
                                       MAPPING_LR, None) if c_dim > 0 else None)
        self.conv = Conv2dLayer(top + mbstd_channels, top, 3, activation="lrelu")
        self.fc = FullyConnected(top * 4 * 4, top, activation="lrelu")
        self.out = FullyConnected(top, self.cmap_dim or 1)

    def trunk(self, x: Tensor) -> Tensor:
        """Blocks, minibatch stddev, conv, FC: (n, C, R, R) -> (n, widths[4])."""
        x = self.blocks(x)
        if self.mbstd_channels > 0:
            x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        return self.fc(self.conv(x).flatten(1)).float()

    def head(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Output FC; conditional: projected on ``cmap(y)`` and scaled by 1/sqrt(cmap_dim)."""
        out = self.out(h)
        y = need_labels(self.conditional, y, "D")
        if self.mapping is not None and y is not None:
            cmap = self.mapping(None, condition_vector(y, self.num_classes))
            out = (out * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return out.squeeze(1).float()


@MODELS.register("stylegan2")
def build_stylegan2(cfg: ModelConfig,
                    spec: DataSpec) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """(G, D) for square 32, 64, 128 or 256 px images; class-conditional with
    ``model.conditional``, prior-conditional when ``spec.prior_dim > 0``."""
    channels, resolution = square_image(spec, "stylegan2", RESOLUTIONS)
    widths = channel_widths(resolution, cfg.fmaps, cfg.channel_max)
    if widths[resolution] < 1:
        raise ConfigError(f"model.fmaps={cfg.fmaps} leaves no channels at {resolution} px "
                          f"(int(fmaps * 32768) // {resolution} = 0); valid values here: "
                          f">= {resolution / CHANNEL_UNIT}")
    if cfg.mbstd_channels > 0 and widths[4] % cfg.mbstd_channels:
        raise ConfigError(f"model.mbstd_channels={cfg.mbstd_channels} must divide D's "
                          f"{widths[4]} channels at 4x4")
    num_classes = spec.num_classes if cfg.conditional else 0
    g = StyleGAN2Generator(cfg.z_dim, cfg.w_dim, resolution, channels, widths,
                           cfg.mapping_layers, num_classes, spec.prior_dim, cfg.style_mixing,
                           cfg.truncation_psi)
    d = StyleGAN2Discriminator(resolution, channels, widths, num_classes, spec.prior_dim,
                               cfg.mbstd_group, cfg.mbstd_channels,
                               resnet=cfg.d_architecture == "resnet")
    return g, d
