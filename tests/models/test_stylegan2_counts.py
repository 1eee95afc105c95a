"""StyleGAN2's parameter counts: the reference's paper256 and cifar configurations, counted here
from the architecture description (layer by layer, not from this module's structure), against
the built networks; single layers against rows of the reference's printed summary tables."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tuneable_gan.config import ModelConfig
from tuneable_gan.models import DataSpec, build_models
from tuneable_gan.models.stylegan2_layers import Conv2dLayer, SynthesisLayer, ToRGB


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- 3. parameter counts from the architecture description --------------------------------------


def expected_counts(res: int, img: int, fmaps: float, z: int, w: int, mapping: int, c_dim: int,
                    mbstd_channels: int = 1, d_skip: bool = True) -> tuple[int, int]:
    """(G, D) parameter counts from the StyleGAN2-ADA description, layer by layer."""
    def ch(r: int) -> int:
        return min(int(fmaps * 32768) // r, 512)

    def fc(i: int, o: int) -> int:  # weight + bias
        return i * o + o

    def conv(i: int, o: int, k: int, bias: bool = True) -> int:
        return i * o * k * k + (o if bias else 0)

    def modconv(i: int, o: int) -> int:  # style affine w -> i, 3x3 weight, bias, noise strength
        return fc(w, i) + conv(i, o, 3) + 1

    def torgb(i: int) -> int:  # style affine w -> i, 1x1 weight, bias
        return fc(w, i) + conv(i, img, 1)

    above_4 = [2 ** k for k in range(3, int(math.log2(res)) + 1)]  # 8 ... res
    g = (fc(c_dim, w) if c_dim else 0) + fc(z + (w if c_dim else 0), w) + (mapping - 1) * fc(w, w)
    g += ch(4) * 4 * 4 + modconv(ch(4), ch(4)) + torgb(ch(4))  # const, conv, toRGB at 4x4
    g += sum(modconv(ch(r // 2), ch(r)) + modconv(ch(r), ch(r)) + torgb(ch(r)) for r in above_4)
    d = conv(img, ch(res), 1)  # fromRGB
    d += sum(conv(ch(r), ch(r), 3) + conv(ch(r), ch(r // 2), 3)
             + (conv(ch(r), ch(r // 2), 1, bias=False) if d_skip else 0) for r in above_4)
    cmap = ch(4) if c_dim else 0
    d += (fc(c_dim, cmap) + 8 * fc(cmap, cmap)) if c_dim else 0  # D's label mapping, 8 layers
    d += conv(ch(4) + mbstd_channels, ch(4), 3) + fc(ch(4) * 16, ch(4)) + fc(ch(4), cmap or 1)
    return g, d


# The reference's --cfg: paper256 (fmaps 0.5, map 8, mbstd 8, unconditional) and cifar (fmaps 1,
# map 2, mbstd 32, --cond=1 on 10 classes, D architecture orig). z = w = 512, 3 channels.
REFERENCE_CONFIGS = {
    "paper256": (256, {"fmaps": 0.5, "mapping_layers": 8, "mbstd_group": 8}, 0),
    "cifar": (32, {"fmaps": 1.0, "mapping_layers": 2, "mbstd_group": 32,
                   "d_architecture": "orig"}, 10),
}
EXPECTED = {"paper256": (24_767_458, 24_001_089), "cifar": (20_215_315, 23_089_664)}


def test_expected_counts_are_the_description() -> None:
    assert expected_counts(256, 3, 0.5, 512, 512, 8, 0) == EXPECTED["paper256"]
    assert expected_counts(32, 3, 1.0, 512, 512, 2, 10, d_skip=False) == EXPECTED["cifar"]


@pytest.mark.parametrize("name", list(REFERENCE_CONFIGS))
def test_reference_config_parameter_counts(name: str) -> None:
    res, kw, classes = REFERENCE_CONFIGS[name]
    cfg = ModelConfig(arch="stylegan2", conditional=classes > 0, z_dim=512, w_dim=512, **kw)
    with torch.device("meta"):  # counts only: no memory, no init time
        g, d = build_models(cfg, DataSpec((3, res, res), classes))
    assert (_count(g), _count(d)) == EXPECTED[name]


def test_layer_counts_match_the_reference_summary_tables() -> None:
    # Rows of the reference's printed summary tables (fmaps 1, w 512) quoted in issue threads:
    # NVlabs/stylegan2-ada-pytorch#182 (synthesis.b4.conv1 2622465, b4.torgb 264195),
    # open-mmlab/mmgeneration#394 (b128.conv0 1442561, b256.conv1 213249) and
    # NVlabs/stylegan2-ada-pytorch#181 (D b128.conv1 1180160, b128.skip 131072).
    with torch.device("meta"):
        assert _count(SynthesisLayer(512, 512, 512, 4)) == 2_622_465
        assert _count(ToRGB(512, 3, 512)) == 264_195
        assert _count(SynthesisLayer(512, 256, 512, 128, up=2)) == 1_442_561
        assert _count(SynthesisLayer(128, 128, 512, 256)) == 213_249
        assert _count(Conv2dLayer(256, 512, 3, down=2)) == 1_180_160
        assert _count(Conv2dLayer(256, 512, 1, down=2, bias=False)) == 131_072
