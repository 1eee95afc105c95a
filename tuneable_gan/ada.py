"""ADA: adaptive discriminator augmentation, with its strength ``p`` tuned from D's outputs.

Follows NVlabs/stylegan2-ada-pytorch (``training/training_loop.py`` and ``training/loss.py``):
the sign of every real-image logit D produces is accumulated (the reference's
``Loss/signs/real``, reported in both the main D pass and the lazy R1 pass), and after every
``interval``-th D step

    p <- max(p + sign(mean(sign(D_real)) - target) * batch_size * interval / (kimg * 1000), 0)

after which the accumulators restart. As in the reference, p is clamped below at 0 and not
above at 1 (p > 1 augments as p = 1; the overshoot delays the fall once D stops overfitting).
``target=None`` is the reference's fixed-p mode (``--aug=fixed --p``).

The state (p, the sign sum and count) lives on the device as tensors, so neither
``accumulate`` nor ``maybe_adjust`` nor the augmentation reads a value back to the host, and
``state_dict`` / ``load_state_dict`` carry all of it so a resumed run continues the p trajectory
bitwise (unlike stylegan2-ada-pytorch issue 81, where resume restarted p).

Deviations from the reference: a sign mean that is NaN because no logit was accumulated since
the last adjustment leaves p unchanged (the reference would set p to NaN); NaN logits count as
sign 0 (the reference propagates NaN into p). The augmentation's own deviations are listed in
``tuneable_gan.ada_ops``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from tuneable_gan.ada_ops import PIPES, ada_augment, pipe_multipliers
from tuneable_gan.config import AugmentConfig
from tuneable_gan.errors import CheckpointError, ConfigError
from tuneable_gan.terms import DBatch, Term
from tuneable_gan.training_stats import StepStats

_STATE_KEYS = ("p", "sign_sum", "sign_count")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class AdaConfig:
    """ADA settings. ``pipe``: a name in ``ada_ops.PIPES``; ``target``: the sign mean of D's
    real logits that ADA steers toward, in (0, 1), or None for a fixed ``p = p_init``;
    ``interval``: D steps between adjustments; ``kimg``: thousands of real images over which
    p may move by 1; ``p_init``: the starting p, in [0, 1]."""

    # Field metadata in config.py's convention (choices / lo / hi / doc), so the config tree
    # can nest this dataclass and check it with its generic checker.
    pipe: str = field(default="bgc", metadata={
        "choices": tuple(PIPES), "doc": "ADA augmentation pipe (stylegan2-ada augpipe)"})
    target: Optional[float] = field(default=0.6, metadata={
        "lo": 0.0, "hi": 1.0, "lo_open": True, "hi_open": True,
        "doc": "target sign mean of D's real logits; null: fixed p = p_init"})
    interval: int = field(default=4, metadata={
        "lo": 1, "hi": None, "lo_open": False, "hi_open": False,
        "doc": "D steps between p adjustments"})
    kimg: float = field(default=500.0, metadata={
        "lo": 0.0, "hi": None, "lo_open": True, "hi_open": False,
        "doc": "thousands of real images for p to move by 1"})
    p_init: float = field(default=0.0, metadata={
        "lo": 0.0, "hi": 1.0, "lo_open": False, "hi_open": False, "doc": "initial p"})

    def problems(self, prefix: str = "ada") -> list[str]:
        """One line per invalid field, each naming the key (``prefix.field``) and what is
        valid; empty when the config is valid."""
        out: list[str] = []
        if not isinstance(self.pipe, str) or self.pipe not in PIPES:
            out.append(f"{prefix}.pipe must be one of {', '.join(PIPES)}; got {self.pipe!r}")
        if self.target is not None and not (_is_number(self.target) and 0 < self.target < 1):
            out.append(f"{prefix}.target must be in (0, 1) or null (fixed p), "
                       f"got {self.target!r}")
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) \
                or self.interval < 1:
            out.append(f"{prefix}.interval must be an integer >= 1, got {self.interval!r}")
        if not (_is_number(self.kimg) and self.kimg > 0):
            out.append(f"{prefix}.kimg must be a number > 0, got {self.kimg!r}")
        if not (_is_number(self.p_init) and 0 <= self.p_init <= 1):
            out.append(f"{prefix}.p_init must be in [0, 1], got {self.p_init!r}")
        return out

    def validate(self, prefix: str = "ada") -> AdaConfig:
        """``self`` if valid, else raise ``ConfigError`` listing every problem."""
        problems = self.problems(prefix)
        if problems:
            raise ConfigError(problems)
        return self


class AdaptiveAugment:
    """The ADA pipe together with its p controller.

    Typical use in a D step, ``step`` counting completed D steps from 1::

        logits_real = D(ada(real, generator))
        ada.accumulate(logits_real)
        ...
        ada.maybe_adjust(batch_size, step)

    Fake images shown to D (in D and G steps) go through ``ada(fake, generator)`` as well.
    """

    def __init__(self, config: AdaConfig | None = None, *,
                 device: torch.device | str = "cpu",
                 multipliers: Mapping[str, float] | None = None) -> None:
        """``config`` (validated; default ``AdaConfig()``), the ``device`` the state lives on
        (it follows the images on first use), and optional per-op probability multipliers
        that replace the pipe's (``ada_ops.pipe_multipliers``)."""
        self.config = (config or AdaConfig()).validate()
        self.multipliers = pipe_multipliers(
            multipliers if multipliers is not None else self.config.pipe)
        device = torch.device(device)
        self._p = torch.full((), float(self.config.p_init), dtype=torch.float32, device=device)
        self._sign_sum = torch.zeros((), dtype=torch.int64, device=device)
        self._sign_count = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def adaptive(self) -> bool:
        """Whether p is tuned (a target is set) rather than fixed."""
        return self.config.target is not None

    @property
    def p(self) -> torch.Tensor:
        """The current p, a 0-dim float32 tensor on the state's device, updated in place
        (``clone()`` it to keep a value; ``float()`` it only where a host sync is acceptable,
        e.g. at log steps)."""
        return self._p

    @property
    def device(self) -> torch.device:
        return self._p.device

    def to(self, device: torch.device | str) -> AdaptiveAugment:
        """Move the state to ``device``; returns ``self``."""
        self._p = self._p.to(device)
        self._sign_sum = self._sign_sum.to(device)
        self._sign_count = self._sign_count.to(device)
        return self

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Augment the NCHW batch ``x`` at the current p (differentiable w.r.t. ``x``), all
        draws from ``generator``. With a fixed p of 0 it returns ``x`` itself."""
        if not self.adaptive and self.config.p_init == 0:
            # The reference builds no pipe at all in this case; nothing to draw or compute.
            return x
        if x.device != self.device:
            self.to(x.device)
        return ada_augment(x, self._p, self.multipliers, generator)

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's logits on (augmented) real images to the running sum; on the
        device, no host sync. A no-op in fixed-p mode."""
        if not self.adaptive:
            return
        logits = real_logits.detach()
        if logits.device != self.device:
            self.to(logits.device)
        # Integer counts, exact for any run length (the reference sums in float64).
        self._sign_sum += (logits > 0).sum() - (logits < 0).sum()
        self._sign_count += logits.numel()

    def maybe_adjust(self, batch_size: int, step: int) -> bool:
        """After the ``step``-th D step (counting from 1; ``batch_size`` real images each),
        apply the reference update if ``step`` is a multiple of ``interval`` and restart the
        accumulators. Returns whether it adjusted (decided on the host, no sync)."""
        if not self.adaptive or step % self.config.interval != 0:
            return False
        cfg = self.config
        rate = batch_size * cfg.interval / (cfg.kimg * 1000)
        # float64 like the reference's counters, so a mean exactly at target gives sign 0.
        mean = self._sign_sum.double() / self._sign_count.double()
        direction = torch.sign(mean - cfg.target).nan_to_num(0.0).float()
        # float32 p + float32 step, as the reference's float32 buffer plus a Python scalar.
        self._p.copy_((self._p + direction * rate).clamp_min(0.0))
        self._sign_sum.zero_()
        self._sign_count.zero_()
        return True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """p and the accumulators, as CPU tensors (this reads the device: checkpoint time)."""
        return {"p": self._p.detach().cpu().clone(),
                "sign_sum": self._sign_sum.cpu().clone(),
                "sign_count": self._sign_count.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned, bitwise, onto the state's device.
        ``CheckpointError`` for a missing key or a wrongly typed value."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"ADA state lacks {', '.join(missing)}; "
                                  f"expected keys {', '.join(_STATE_KEYS)}")
        for key, dtype in zip(_STATE_KEYS, (torch.float32, torch.int64, torch.int64)):
            v = state[key]
            if not isinstance(v, torch.Tensor) or v.dtype != dtype or v.dim() != 0:
                raise CheckpointError(f"ADA state {key} must be a 0-dim {dtype} tensor, "
                                      f"got {v!r}")
        self._p = state["p"].to(self.device, copy=True)
        self._sign_sum = state["sign_sum"].to(self.device, copy=True)
        self._sign_count = state["sign_count"].to(self.device, copy=True)


class AdaTerm(Term):
    """ADA in a run (``augment.ada``): the augmentation T of every image D sees (the trainer's
    ``augment``), fed on every D step with the signs of D's logits on the reals (``observe``) and
    on those of lazy R1's pass (``observe_real``), adjusting p at the end of every
    ``interval``-th G iteration (``end_iteration``: after all of the iteration's updates, the
    reference's ``batch_idx % ada_interval``), at the rate of the real images one iteration
    shows (``batch_size`` x D steps); records ``ada_p``. A probe: its loss is nothing, its state
    (p, the sign accumulators and the iteration count) is checkpointed with the terms, so a
    resumed run continues p bitwise."""

    name, group = "ada", "probe"

    def __init__(self, cfg: AugmentConfig, batch_size: int, device: torch.device) -> None:
        self.ada = AdaptiveAugment(
            AdaConfig(pipe=cfg.ada, target=cfg.ada_target, interval=cfg.ada_interval,
                      kimg=cfg.ada_kimg, p_init=cfg.ada_p).validate("augment.ada"),
            device=device)
        self.batch_size = batch_size
        self.iterations = 0  # the reference's batch_idx

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """T at the current p, drawn from ``generator``."""
        return self.ada(x, generator)

    def observe_real(self, real_logits: torch.Tensor) -> None:
        """Signs of D's logits on reals outside the main D pass (lazy R1's)."""
        self.ada.accumulate(real_logits)

    def observe(self, batch: DBatch, stats: StepStats) -> None:
        self.ada.accumulate(batch.logits[batch.n_fake:])

    def end_iteration(self) -> None:
        self.iterations += 1
        self.ada.maybe_adjust(self.batch_size, self.iterations)

    def loss(self, batch: DBatch, stats: StepStats) -> None:
        stats.report("ada_p", self.ada.p)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**self.ada.state_dict(), "iterations": self.iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ada.load_state_dict({k: v for k, v in state.items() if k != "iterations"})
        self.iterations = int(state["iterations"])


def ada_terms(cfg: AugmentConfig, batch_size: int, device: torch.device) -> list[AdaTerm]:
    """The run's ADA term when ``augment.ada`` names a pipe, else none; ``batch_size``: the real
    images of one G iteration."""
    return [AdaTerm(cfg, batch_size, device)] if cfg.ada else []
