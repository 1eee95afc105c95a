"""Generator/discriminator architectures, looked up by ``model.arch`` in the ``MODELS`` registry.

Each builder maps ``(ModelConfig, DataSpec)`` to ``(G, D)``; see ``base.Generator`` and
``base.Discriminator`` for the interface every pair follows (including the stem/rest and
trunk/head splits AdvAug uses). With ``DataSpec.prior_dim > 0`` the image arches return G and D
conditioned on an instance prior (a float (n, d) tensor where labels would go) instead of labels.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from tuneable_gan.config import PAPER_CONDITIONAL_ARCHES, ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import (  # noqa: F401  (imported so they register)
    biggan,
    dcgan,
    sngan,
    stylegan2,
    toy,
)
from tuneable_gan.models.base import MODELS, DataSpec, Discriminator, Generator

__all__ = ["MODELS", "PRIOR_ARCHES", "DataSpec", "Discriminator", "Generator", "build_models",
           "reference_setting", "resolve_conditional"]

# Per arch, the reference's settings for what ``null`` means in arch-dependent keys (the
# BigGAN-CIFAR reference samples G_ema in train mode and uses its own AdvAug form; docs/methods.md
# 6.1 and 3.3). Arches not listed take the generic defaults (eval mode, the SNGAN AdvAug form).
REFERENCE_SETTINGS: dict[str, dict[str, str]] = {
    "biggan": {"eval.g_mode": "train", "augment.advaug_form": "biggan"},
}
GENERIC_SETTINGS: dict[str, str] = {"eval.g_mode": "eval", "augment.advaug_form": "sngan"}

# The arches whose builders condition on ``spec.prior_dim`` (the toy models take no prior).
PRIOR_ARCHES: tuple[str, ...] = ("dcgan", "sngan", "biggan", "stylegan2")


def reference_setting(arch: str, key: str) -> str:
    """The value of ``key`` that ``null`` stands for with ``model.arch=arch``."""
    return REFERENCE_SETTINGS.get(arch, {}).get(key, GENERIC_SETTINGS[key])


def resolve_conditional(cfg: ModelConfig, spec: DataSpec) -> ModelConfig:
    """``model.conditional: null`` -> the arch's paper setting: conditional for the arches in
    ``PAPER_CONDITIONAL_ARCHES`` when the data has labels, unconditional otherwise; and never
    class-conditional with an instance prior (``spec.prior_dim > 0``), which conditions instead.
    """
    if cfg.conditional is not None:
        return cfg
    return dataclasses.replace(
        cfg, conditional=(cfg.arch in PAPER_CONDITIONAL_ARCHES and spec.num_classes > 0
                          and spec.prior_dim == 0))


def build_models(cfg: ModelConfig, spec: DataSpec) -> tuple[nn.Module, nn.Module]:
    """(G, D) for ``cfg.arch``.

    Raises ConfigError (one line naming the key and the valid values) for an arch that is not
    implemented, ``model.conditional=true`` on unlabelled data or together with an instance prior
    (``spec.prior_dim > 0``), an arch that takes no prior, or a data shape the arch does not
    support (e.g. dcgan at a resolution other than 8, 16, 32).
    """
    if cfg.conditional and spec.prior_dim > 0:
        raise ConfigError("model.conditional=true (class labels) and an instance prior "
                          "(prior.network) are alternative conditionings; valid value with a "
                          "prior: false or null")
    cfg = resolve_conditional(cfg, spec)
    if cfg.conditional and spec.num_classes == 0:
        raise ConfigError("model.conditional=true needs labelled data, but this data set has no "
                          "classes (num_classes=0); valid value here: false")
    if spec.prior_dim > 0 and cfg.arch not in PRIOR_ARCHES:
        raise ConfigError(f"model.arch={cfg.arch} cannot be conditioned on an instance prior "
                          f"(prior.network); valid values: {', '.join(PRIOR_ARCHES)}")
    g, d = MODELS.get(cfg.arch)(cfg, spec)
    assert g.prior_dim == d.prior_dim == spec.prior_dim, "builder ignored spec.prior_dim"
    return g, d
