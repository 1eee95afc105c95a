"""Filling a run config's "paper default" nulls, once, from the data and the registries.

``model.conditional: null`` becomes the arch's paper setting for this data; each ``null`` among
the ``regularizer.*`` fields the method reads becomes its paper value (DigGAN's lambda rule, its
beta 0.5 and first-D-step schedule, LeCam's 0.3 / 0.9 / 1000, ...). The trainer resolves its
config at construction and uses only the result, so the config it stores with checkpoints, the
run's ``config.yaml``, every Tune report and therefore every table carry the values the run used
(a paper-rule sweep's table shows the lambda of each cell). Resolving is idempotent.
"""

from __future__ import annotations

import dataclasses

from tuneable_gan.config import Config
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import DataSpec, resolve_conditional
from tuneable_gan.regularizers import REGULARIZERS


def resolve(cfg: Config, spec: DataSpec) -> Config:
    """``cfg`` with its paper-default nulls filled for data of ``spec``; ConfigError for what
    only the resolved values can rule out (same-class pairing on an unconditional model)."""
    cfg = dataclasses.replace(cfg, model=resolve_conditional(cfg.model, spec))
    reg = cfg.regularizer
    filled = {k: v for k, v in REGULARIZERS.get(reg.name).defaults(cfg).items()
              if getattr(reg, k) is None}
    cfg = dataclasses.replace(cfg, regularizer=dataclasses.replace(reg, **filled))
    if cfg.regularizer.pairing == "same_class" and not cfg.model.conditional:
        raise ConfigError("regularizer.pairing=same_class needs a conditional model "
                          f"(model.conditional resolved to false for {cfg.model.arch} on "
                          f"{cfg.data.name}); set model.conditional=true on labelled data")
    return cfg
