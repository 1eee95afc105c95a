"""Generator/discriminator architectures, looked up by ``model.arch`` in the ``MODELS`` registry.

Each builder maps ``(ModelConfig, DataSpec)`` to ``(G, D)``; see ``base.Generator`` and
``base.Discriminator`` for the interface every pair follows (including the stem/rest and
trunk/head splits AdvAug uses).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from tuneable_gan.config import PAPER_CONDITIONAL_ARCHES, ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import biggan, dcgan, sngan, toy  # noqa: F401  (imported so they register)
from tuneable_gan.models.base import MODELS, DataSpec, Discriminator, Generator

__all__ = ["MODELS", "DataSpec", "Discriminator", "Generator", "build_models",
           "reference_setting", "resolve_conditional"]



# Per arch, the reference's settings for what ``null`` means in arch-dependent keys (the
# BigGAN-CIFAR reference samples G_ema in train mode and uses its own AdvAug form; docs/methods.md
# 6.1 and 3.3). Arches not listed take the generic defaults (eval mode, the SNGAN AdvAug form).
REFERENCE_SETTINGS: dict[str, dict[str, str]] = {
    "biggan": {"eval.g_mode": "train", "augment.advaug_form": "biggan"},
}
GENERIC_SETTINGS: dict[str, str] = {"eval.g_mode": "eval", "augment.advaug_form": "sngan"}


def reference_setting(arch: str, key: str) -> str:
    """The value of ``key`` that ``null`` stands for with ``model.arch=arch``."""
    return REFERENCE_SETTINGS.get(arch, {}).get(key, GENERIC_SETTINGS[key])


def resolve_conditional(cfg: ModelConfig, spec: DataSpec) -> ModelConfig:
    """``model.conditional: null`` -> the arch's paper setting: conditional for the arches in
    ``PAPER_CONDITIONAL_ARCHES`` when the data has labels, unconditional otherwise."""
    if cfg.conditional is not None:
        return cfg
    return dataclasses.replace(
        cfg, conditional=cfg.arch in PAPER_CONDITIONAL_ARCHES and spec.num_classes > 0)


def build_models(cfg: ModelConfig, spec: DataSpec) -> tuple[nn.Module, nn.Module]:
    """(G, D) for ``cfg.arch``.

    Raises ConfigError (one line naming the key and the valid values) for an arch that is not
    implemented, ``model.conditional=true`` on unlabelled data, or a data shape the arch does not
    support (e.g. dcgan at a resolution other than 8, 16, 32).
    """
    cfg = resolve_conditional(cfg, spec)
    if cfg.conditional and spec.num_classes == 0:
        raise ConfigError("model.conditional=true needs labelled data, but this data set has no "
                          "classes (num_classes=0); valid value here: false")
    return MODELS.get(cfg.arch)(cfg, spec)
