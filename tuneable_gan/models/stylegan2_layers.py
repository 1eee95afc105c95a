"""StyleGAN2 building blocks in plain torch (no custom CUDA ops).

Semantics follow ``NVlabs/stylegan2-ada-pytorch: training/networks.py`` and its
``torch_utils/ops`` (``upfirdn2d``, ``conv2d_resample``, ``bias_act``):

- Equalised learning rate: weights are stored ~ N(0, 1) / lr_multiplier and scaled at run time by
  ``lr_multiplier / sqrt(fan_in)``; biases by ``lr_multiplier``.
- Resampling with the normalised FIR filter ``outer([1, 3, 3, 1]) / 64``: upsampling inserts
  zeros and filters with gain 4, downsampling filters and drops every other pixel, with the
  reference's paddings, so every map keeps its exact size (2x or 1/2x).
- ``lrelu``: leaky ReLU (slope 0.2) times sqrt(2); ``linear``: identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
ACT_GAINS = {"linear": 1.0, "lrelu": math.sqrt(2.0)}
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
DEMOD_EPS = 1e-8
NOISE_MODES = ("random", "const", "none")


def fir_filter() -> Tensor:
    """The 2-D resampling filter: outer([1, 3, 3, 1]) normalised to sum 1, shape (4, 4)."""
    f = torch.tensor(FIR_TAPS)
    f = torch.outer(f, f)
    return f / f.sum()


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each row of ``x`` (n, d) to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def bias_act(x: Tensor, b: Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> Tensor:
    """Add the per-channel bias ``b`` (dim 1), apply ``act`` and its gain times ``gain``, clamp
    to +-``clamp`` (None: no clamp)."""
    if b is not None:
        x = x + b.reshape(1, -1, *([1] * (x.ndim - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    g = ACT_GAINS[act] * gain
    if g != 1:
        x = x * g
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def upfirdn2d(x: Tensor, f: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
              gain: float = 1.0) -> Tensor:
    """Upsample by zero insertion, pad (before, after) on both axes, filter each channel with
    ``f * gain``, keep every ``down``-th pixel."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    # True convolution (flipped filter), as the reference; [1, 3, 3, 1] is symmetric anyway.
    k = (f * gain).flip([0, 1]).to(x.dtype)
    x = F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x FIR upsampling: (n, c, h, w) -> (n, c, 2h, 2w)."""
    fw = f.shape[-1]
    return upfirdn2d(x, f, up=2, pad=((fw + 1) // 2, (fw - 2) // 2), gain=4.0)


def conv2d_resample(x: Tensor, w: Tensor, f: Tensor | None = None, up: int = 1, down: int = 1,
                    padding: int = 0, groups: int = 1) -> Tensor:
    """Convolution (correlation, as F.conv2d) with 2x FIR up- or downsampling around it.

    ``up=2``: a stride-2 transposed convolution then the FIR filter (gain 4), the reference's
    fast path; the upsampled layer therefore applies ``w`` as a true convolution (the reference's
    ``flip_weight=False`` for ``up > 1``). ``down=2``: the filter, then a stride-2 convolution
    (1x1 kernels: filter-and-drop first, then the 1x1 conv). Sizes: exactly 2x or 1/2x.
    """
    k = w.shape[-1]
    if up > 1:
        assert f is not None and down == 1
        fw = f.shape[-1]
        p0 = padding + (fw + up - 1) // 2 - (k - 1)
        p1 = padding + (fw - up) // 2 - (k - up)
        assert p0 >= 0 and p1 >= 0, "kernel too large for the plain-torch up path"
        o, i = w.shape[0] // groups, w.shape[1]
        # conv_transpose2d wants (in, out / groups, k, k) per group.
        wt = w.reshape(groups, o, i, k, k).transpose(1, 2).reshape(groups * i, o, k, k)
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        return upfirdn2d(x, f, pad=(p0, p1), gain=float(up * up))
    if down > 1:
        assert f is not None
        fw = f.shape[-1]
        pad = (padding + (fw - down + 1) // 2, padding + (fw - down) // 2)
        if k == 1:
            return F.conv2d(upfirdn2d(x, f, down=down, pad=pad), w, groups=groups)
        return F.conv2d(upfirdn2d(x, f, pad=pad), w, stride=down, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True,
                     up: int = 1, padding: int = 0, resample_filter: Tensor | None = None,
                     fused: bool = True, noise: Tensor | None = None) -> Tensor:
    """Per-sample modulated (and demodulated) convolution.

    ``w'[n,o,i,:,:] = weight[o,i] * styles[n,i]``; with ``demodulate`` each output filter is
    divided by ``sqrt(sum_{i,k} w'^2 + 1e-8)``; sample n is convolved with its own ``w'``.
    ``fused``: one grouped convolution; else the same result by scaling the activations before
    and after one shared convolution (the reference's training-time form). ``noise`` is added
    after the (de)modulated convolution.
    """
    n, in_ch = styles.shape
    out_ch, _, kh, kw = weight.shape
    dcoefs = None
    if not fused:
        if demodulate:
            # sum_{i,k} (w s)^2 = sum_i s_i^2 sum_k w_ik^2, without building the (n, o, i, k, k) w.
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).T + DEMOD_EPS).rsqrt()
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        return x if noise is None else x + noise
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, n * in_ch, *x.shape[2:])
    x = conv2d_resample(x, w.reshape(n * out_ch, in_ch, kh, kw).to(x.dtype), resample_filter,
                        up=up, padding=padding, groups=n)
    x = x.reshape(n, out_ch, *x.shape[2:])
    return x if noise is None else x + noise


class FullyConnected(nn.Module):
    """Equalised-lr linear layer: ``act(x @ (W * lr / sqrt(in)).T + b * lr)``."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def effective_weight(self) -> Tensor:
        """The weight the layer multiplies by: stored weight * lr_multiplier / sqrt(fan_in)."""
        return self.weight * self.weight_gain

    def forward(self, x: Tensor) -> Tensor:
        """(n, in) -> (n, out)."""
        b = None if self.bias is None else self.bias * self.bias_gain
        return bias_act(x.matmul(self.effective_weight().to(x.dtype).t()), b, self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution (padding k // 2) with optional 2x FIR downsampling, bias and
    activation; ``forward(x, gain)`` scales the activation's gain (the resnet D's sqrt(0.5))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 bias: bool = True, activation: str = "linear", down: int = 1,
                 lr_multiplier: float = 1.0, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.activation = activation
        self.down = down
        self.padding = kernel_size // 2
        self.conv_clamp = conv_clamp
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels, kernel_size, kernel_size) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_channels * kernel_size ** 2)
        self.bias_gain = lr_multiplier
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def effective_weight(self) -> Tensor:
        """Stored weight * lr_multiplier / sqrt(in_channels * k * k)."""
        return self.weight * self.weight_gain

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """(n, in, s, s) -> (n, out, s / down, s / down)."""
        x = conv2d_resample(x, self.effective_weight().to(x.dtype), self.resample_filter,
                            down=self.down, padding=self.padding)
        b = None if self.bias is None else self.bias * self.bias_gain
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, b, self.activation, gain=gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (and a conditioning vector c) -> w, optionally broadcast to (n, num_ws, w_dim).

    ``z`` and ``embed(c)`` are each normalised to unit second moment and concatenated; then
    ``num_layers`` lrelu FC layers at ``lr_multiplier``. With ``w_avg_beta`` the buffer ``w_avg``
    tracks the mean w in training mode (``w_avg <- lerp(mean w, w_avg, beta)``), for truncation.
    ``z_dim=0`` and ``num_ws=None`` give D's label map (cmap).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None,
                 num_layers: int = 8, lr_multiplier: float = 0.01,
                 w_avg_beta: float | None = 0.995) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if c_dim > 0 else 0
        features = [z_dim + embed_features] + [w_dim] * num_layers
        self.embed = FullyConnected(c_dim, embed_features) if c_dim > 0 else None
        self.layers = nn.ModuleList(
            FullyConnected(features[i], features[i + 1], activation="lrelu",
                           lr_multiplier=lr_multiplier) for i in range(num_layers))
        self.tracks_w_avg = num_ws is not None and w_avg_beta is not None
        if self.tracks_w_avg:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor | None, c: Tensor | None, update_w_avg: bool = True) -> Tensor:
        """(n, z_dim), (n, c_dim) -> (n, w_dim), or (n, num_ws, w_dim) when broadcasting."""
        parts = []
        if self.z_dim > 0:
            assert z is not None
            parts.append(normalize_2nd_moment(z.float()))
        if self.embed is not None:
            assert c is not None
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if self.training and update_w_avg and self.tracks_w_avg:
            assert self.w_avg_beta is not None
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        return x


def randn_like_noise(shape: tuple[int, ...], generator: torch.Generator | None,
                     device: torch.device) -> Tensor:
    """Standard-normal noise from ``generator`` (drawn on its device, then moved), or from the
    global RNG of ``device`` when None."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling), per-pixel noise, bias, lrelu.

    ``styles = affine(w)`` (bias init 1); noise ``strength * n`` with ``n`` ~ N(0, 1) of shape
    (N, 1, res, res) (``random``), the fixed buffer ``noise_const`` (``const``), or none.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 up: int = 1, kernel_size: int = 3, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.padding = kernel_size // 2
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None, fused: bool = True,
                gain: float = 1.0) -> Tensor:
        """(n, in, r / up, r / up), w (n, w_dim) -> (n, out, r, r)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got "
                             f"{noise_mode!r}")
        styles = self.affine(w)
        noise = None
        if noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            noise = randn_like_noise(shape, generator, x.device) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused=fused, noise=noise)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, "lrelu", gain=gain, clamp=clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation; the style carries the weight gain
    ``1 / sqrt(in_channels)``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, fused: bool = True) -> Tensor:
        """(n, in, r, r), w (n, w_dim) -> (n, out, r, r)."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


def minibatch_stddev(x: Tensor, group_size: int, num_channels: int = 1) -> Tensor:
    """Append ``num_channels`` maps holding each group's mean standard deviation.

    Groups are ``min(group_size, N)`` consecutive samples; the channels are split into
    ``num_channels`` parts, each gets the stddev over the group (population, +1e-8 under the
    root) averaged over its channels and pixels. A group of one gives the constant 1e-4.
    ValueError unless N is a multiple of the group size (the reference cannot reshape either).
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"stylegan2 D: the batch of {n} does not split into minibatch-stddev "
                         f"groups of {g} (model.mbstd_group); use a multiple of {g}")
    f = num_channels
    # Consecutive groups, where the reference takes every (N / G)-th sample: the same statistic
    # for an i.i.d. batch, and a batch of fakes followed by reals then keeps them apart.
    y = x.reshape(n // g, g, f, c // f, h, w).float()
    y = y - y.mean(dim=1, keepdim=True)
    y = (y.square().mean(dim=1) + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(n // g, 1, f, 1, 1).expand(n // g, g, f, h, w).reshape(n, f, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)
