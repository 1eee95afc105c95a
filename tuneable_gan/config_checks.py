"""Checks of config values: one field's type and constraint (``check_value``, from the field's
metadata) and the constraints that span fields (``cross_checks``), with the short value
formatting their one-line errors use (``fmt``). Split from ``tuneable_gan.config``, which calls
them; this module does not import it back (``cross_checks`` takes the Config it is given).
"""

from __future__ import annotations

import math
import reprlib
from typing import Any, Union, get_args, get_origin

from tuneable_gan.augment import OPS as DIFFAUGMENT_OPS

# Arches whose paper setup is class-conditional (BigGAN-CIFAR: conditional BN + projection D);
# ``model.conditional: null`` means "as the paper", resolved against the data's labels.
PAPER_CONDITIONAL_ARCHES = frozenset({"biggan"})

# Values go into error lines: a megabyte string or a deep list must not make a megabyte line.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 80, 80, 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 6


def fmt(v: Any) -> str:
    """``v`` as an error line shows it: repr, at most about 80 characters."""
    return _SHORT.repr(v)


def check_value(key: str, typ: Any, meta: Any, v: Any) -> tuple[Any, list[str]]:
    """Coerce ``v`` to the field type and check its constraint; (value, problems)."""
    optional = get_origin(typ) is Union and type(None) in get_args(typ)
    if optional:
        if v is None:
            return None, []
        typ = next(a for a in get_args(typ) if a is not type(None))
    if typ in (int, float) and isinstance(v, str):
        # PyYAML (YAML 1.1) reads "1e5" as a string; researchers write lambdas that way.
        try:
            v = float(v)
        except ValueError:
            pass
    if typ is bool:
        if not isinstance(v, bool):
            return v, [f"{key} must be true or false, got {fmt(v)}"]
    elif typ is int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            return v, [f"{key} must be an integer, got {fmt(v)}"]
    elif typ is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return v, [f"{key} must be a number, got {fmt(v)}"]
        v = float(v)
        if not math.isfinite(v):
            return v, [f"{key} must be finite, got {v}"]
    elif typ is str:
        if not isinstance(v, str):
            return v, [f"{key} must be a string, got {fmt(v)}"]
    elif get_origin(typ) is tuple:
        ok = (isinstance(v, (list, tuple)) and len(v) == 2
              and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in v))
        if not ok or not all(0.0 <= b < 1.0 for b in v):
            return v, [f"{key} must be two numbers in [0, 1), got {fmt(v)}"]
        return tuple(float(b) for b in v), []
    choices = meta.get("choices")
    if choices and v not in choices:
        return v, [f"{key} must be one of {', '.join(choices)}; got {fmt(v)}"]
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None or hi is not None:
        bad_lo = lo is not None and (v <= lo if meta["lo_open"] else v < lo)
        bad_hi = hi is not None and (v >= hi if meta["hi_open"] else v > hi)
        if bad_lo or bad_hi:
            left = "(" if meta["lo_open"] else "["
            right = ")" if meta["hi_open"] else "]"
            rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
            return v, [f"{key} must be in {rng}, got {v}"]
    return v, []


def cross_checks(cfg: Any) -> list[str]:
    """Constraints that span fields."""
    problems = []
    unconditional = cfg.model.conditional is False or (
        cfg.model.conditional is None and cfg.model.arch not in PAPER_CONDITIONAL_ARCHES)
    if cfg.regularizer.pairing == "same_class" and unconditional:
        problems.append("regularizer.pairing=same_class needs model.conditional=true "
                        "(an unconditional G has no class to pair by)")
    ops = [op.strip() for op in cfg.augment.diffaugment.split(",") if op.strip()]
    for op in ops:
        if op not in DIFFAUGMENT_OPS:
            problems.append(f"augment.diffaugment: unknown op {op!r}; valid ops: "
                            f"{', '.join(DIFFAUGMENT_OPS)} (comma-separated, '' = off)")
    if (cfg.model.arch == "toy") != (cfg.data.name == "toy2pt"):
        problems.append("model.arch=toy and data.name=toy2pt go together "
                        f"(got model.arch={cfg.model.arch}, data.name={cfg.data.name})")
    if cfg.data.name == "toy2pt" and ops:
        problems.append("augment.diffaugment works on images; data.name=toy2pt is 1-D, use ''")
    if cfg.augment.ada and cfg.data.name == "toy2pt":
        problems.append("augment.ada works on images; data.name=toy2pt is 1-D, use ''")
    group = min(cfg.model.mbstd_group, cfg.optim.batch_size)
    if cfg.model.arch == "stylegan2" and cfg.model.mbstd_channels > 0 and any(
            b % group for b in (cfg.optim.batch_size, cfg.optim.g_batch_size or 0)):
        problems.append(f"optim.batch_size and optim.g_batch_size must be multiples of "
                        f"model.mbstd_group ({cfg.model.mbstd_group}) for model.arch=stylegan2 "
                        "(D's minibatch-stddev groups; or set the group to 1)")
    if cfg.loss.pl_weight > 0 and cfg.model.arch != "stylegan2":
        problems.append("loss.pl_weight > 0 (path-length regularisation) needs "
                        f"model.arch=stylegan2 (its w latents); got {cfg.model.arch}")
    if cfg.prior.network != "none" and cfg.model.arch == "toy":
        problems.append("prior.network conditions image GANs; model.arch=toy has no conditioning, "
                        "use prior.network=none")
    if cfg.prior.network != "none" and cfg.model.conditional:
        problems.append("model.conditional=true (class labels) and prior.network (instance "
                        "features) are alternative conditionings; set model.conditional=false or "
                        "prior.network=none")
    if cfg.sparsity.level > 0 and cfg.model.arch == "toy":
        problems.append("sparsity.level > 0 prunes G's conv weights and model.arch=toy has none; "
                        "use sparsity.level=0")
    return problems
