"""The trainer's optimizers (``OPTIMIZERS``: ``optim.name``) and learning-rate schedules
(``LR_SCHEDULES``: ``optim.lr_schedule``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from tuneable_gan.config import OptimConfig
from tuneable_gan.registry import Registry

Builder = Callable[[Iterable[torch.nn.Parameter], float, OptimConfig, bool],
                   torch.optim.Optimizer]
OPTIMIZERS: Registry[Builder] = Registry("optimizer")


def _on_cuda(cuda: bool, **options: Any) -> dict[str, Any]:
    # Multi-tensor kernels on CUDA (one launch per step, not several per parameter); on the
    # CPU nothing, the single-tensor loop the golden runs were recorded with.
    return options if cuda else {}


@OPTIMIZERS.register("adam")
def adam(params: Iterable[torch.nn.Parameter], lr: float, o: OptimConfig,
         cuda: bool) -> torch.optim.Optimizer:
    """Adam with ``optim.betas``; the fused kernel on CUDA."""
    return torch.optim.Adam(params, lr=lr, betas=o.betas, **_on_cuda(cuda, fused=True))


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[torch.nn.Parameter], lr: float, o: OptimConfig,
        cuda: bool) -> torch.optim.Optimizer:
    """SGD with ``optim.momentum``; foreach on CUDA."""
    return torch.optim.SGD(params, lr=lr, momentum=o.momentum, **_on_cuda(cuda, foreach=True))


# Learning-rate factor at phase step ``step`` of ``length``: both optimizers' lrs are set to
# base * factor at the start of every G iteration (so a resumed run needs no scheduler state).
# linear: to 0 over the phase, as the SNGAN reference's LinearLrDecay over max_iter G steps.
LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda step, length: 1.0,
    "linear": lambda step, length: max(0.0, 1.0 - step / length),
}


def apply_hyperparameters(opts: Iterable[tuple[torch.optim.Optimizer, float, float]],
                          o: OptimConfig, factor: float) -> None:
    """For each (optimizer, base learning rate, lazy ratio ``r``): the base lr times ``factor``
    and ``r``, ``o``'s betas to the power ``r`` (StyleGAN2's lazy-regularisation rescaling,
    ``tuneable_gan.lazy``; ``r = 1``: none) and ``o``'s momentum, into its parameter groups.
    Called every G iteration and after loading an optimizer state, which carries the values of
    the run that saved it: a PBT clone given new values must train with them (Ray issue 62173
    is this bug)."""
    for opt, base, ratio in opts:
        for group in opt.param_groups:
            group["lr"] = base * factor * ratio if ratio != 1.0 else base * factor
            if "betas" in group:
                group["betas"] = (tuple(o.betas) if ratio == 1.0
                                  else tuple(b ** ratio for b in o.betas))
            if "momentum" in group:
                group["momentum"] = o.momentum
