"""Filling a run config's "paper default" nulls, once, from the data and the registries.

What ``null`` becomes: ``model.conditional`` the arch's paper setting for this data; the
arch-dependent ``eval.g_mode`` and ``augment.advaug_form`` the arch's reference's;
``eval.extractor`` the data's own; ``optim.g_batch_size`` the batch size; and each
``regularizer.*`` field the method reads its paper value (DigGAN's lambda rule, beta 0.5 and
first-D-step schedule, LeCam's 0.3 / 0.9 / 1000, ...). The trainer resolves its config at
construction and uses only the result, so the config stored with checkpoints, the run's
``config.yaml``, every Tune report and so every table carry the values the run used (a
paper-rule sweep's table shows the lambda of each cell). Resolving is idempotent.
"""

from __future__ import annotations

import dataclasses

from tuneable_gan.config import Config
from tuneable_gan.errors import ConfigError
from tuneable_gan.extractors import default_extractor
from tuneable_gan.models import DataSpec, reference_setting, resolve_conditional
from tuneable_gan.regularizers import REGULARIZERS


def resolve(cfg: Config, spec: DataSpec) -> Config:
    """``cfg`` with its paper-default nulls filled for data of ``spec``; ConfigError for what
    only the resolved values can rule out (same-class pairing on an unconditional model)."""
    cfg = fill_defaults(dataclasses.replace(cfg, model=resolve_conditional(cfg.model, spec)))
    if cfg.regularizer.pairing == "same_class" and not cfg.model.conditional:
        raise ConfigError("regularizer.pairing=same_class needs a conditional model "
                          f"(model.conditional resolved to false for {cfg.model.arch} on "
                          f"{cfg.data.name}); set model.conditional=true on labelled data")
    return cfg


def fill_defaults(cfg: Config) -> Config:
    """Every null of ``resolve`` but ``model.conditional`` (the one that needs the data) filled:
    what a config means before its data is loaded (``tuneable_gan.reads`` asks it which method
    a config chose). Each regularizer default is computed on ``cfg`` as given."""
    arch, o, e, a = cfg.model.arch, cfg.optim, cfg.eval, cfg.augment
    o = dataclasses.replace(o, g_batch_size=o.g_batch_size or o.batch_size)
    g_mode = e.g_mode or reference_setting(arch, "eval.g_mode")
    # Train-mode sampling uses each batch's statistics: by default the training G batch, as the
    # reference samples G_batch_size at a time; eval mode does not depend on the batch.
    e = dataclasses.replace(
        e, extractor=e.extractor or default_extractor(cfg.data.name), g_mode=g_mode,
        g_batch_size=(e.g_batch_size or o.g_batch_size) if g_mode == "train" else e.g_batch_size)
    a = dataclasses.replace(
        a, advaug_form=a.advaug_form or reference_setting(arch, "augment.advaug_form"))
    cfg = dataclasses.replace(cfg, optim=o, eval=e, augment=a)
    reg = cfg.regularizer
    filled = {k: v for k, v in REGULARIZERS.get(reg.name).defaults(cfg).items()
              if getattr(reg, k) is None}
    return dataclasses.replace(cfg, regularizer=dataclasses.replace(reg, **filled))
