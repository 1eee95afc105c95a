"""LeCam regularization (Tseng et al., CVPR 2021), as google/lecam-gan's BigGAN-CIFAR code does it
(docs/methods.md 4.1).

On the raw logits of the loss forward (augmented inputs when DiffAugment is on), fakes first:

    alpha_R <- d * alpha_R + (1 - d) * mean_i D(x_r,i)        (every D step, before the penalty,
    alpha_F <- d * alpha_F + (1 - d) * mean_j D(G(z_j))        in float64: no gradient)
    R_LC     = mean_i relu(D(x_r,i) - alpha_F)^2 + mean_j relu(alpha_R - D(G(z_j)))^2
    loss_D  += weight * R_LC                                     (only once ``start`` is passed)

Reals are pulled down toward the FAKE anchor and fakes up toward the REAL anchor.
Defaults (BigGAN-CIFAR scripts): weight 0.3, decay d = ``regularizer.ema`` = 0.9,
``regularizer.start`` = 1000 G iterations; StudioGAN uses decay 0.99.

Warm-up, as the reference counts: its ``itr`` starts at 0 and grows after each G iteration
(google/lecam-gan ``third_party/run_train.py``), so ``itr`` is the phase step. The decay is 0
while step < start (the anchors track the last batch means) and the penalty is added when
step > start: with start 1000 the anchors start to average at the 1001st iteration and the
penalty joins at the 1002nd. As a step term: the anchors advance
in ``observe``, which runs on every D step whatever ``regularizer.every`` says; the schedule
(``start``, and ``every`` for which D steps) only decides which D steps carry the penalty.

The anchors are 0-dim float64 tensors on the logits' device, so no D step reads the device;
float64 makes every update the same IEEE double arithmetic the python floats of the reference
(and of this project's golden runs) do. ``state_dict`` holds python floats, as it always did.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneable_gan.config import Config
from tuneable_gan.regularizers.base import REGULARIZERS, DBatch, Regularizer, Tensor
from tuneable_gan.terms import Schedule
from tuneable_gan.training_stats import StepStats


@REGULARIZERS.register("lecam")
class LeCam(Regularizer):
    """LeCam with scalar EMA anchors of the batch-mean real and fake logits (checkpointed)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        reg = cfg.regularizer
        assert reg.ema is not None and reg.start is not None, "resolve the config first"
        self.decay = reg.ema
        self.start = reg.start
        # itr > start with itr = step (module docstring): from phase step start + 1 on.
        self.schedule = Schedule(d_steps=self.every, start=reg.start + 1)
        # None until the first D step: see ``update_anchors`` for the first observation. A
        # float after ``load_state_dict`` until the next update makes it a tensor again.
        self._real: Tensor | float | None = None
        self._fake: Tensor | float | None = None

    @property
    def anchor_real(self) -> float | None:
        """alpha_R as a python float (a device read: for checkpoints and inspection)."""
        return None if self._real is None else float(self._real)

    @property
    def anchor_fake(self) -> float | None:
        """alpha_F as a python float (a device read: for checkpoints and inspection)."""
        return None if self._fake is None else float(self._fake)

    @classmethod
    def defaults(cls, cfg: Config) -> dict[str, Any]:
        # BigGAN-CIFAR scripts of google/lecam-gan: decay 0.9, start_itr 1000 (docs/methods.md 4.1).
        return super().defaults(cfg) | {"ema": 0.9, "start": 1000}

    @classmethod
    def default_weight(cls, cfg: Config) -> float:
        return 0.3

    def observe(self, batch: DBatch, stats: StepStats) -> None:
        self.update_anchors(batch)

    def update_anchors(self, batch: DBatch) -> None:
        """Advance both anchors with this step's batch means (no gradient, on the device)."""
        logits = batch.logits.detach()
        # The means in the logits' dtype, then exactly widened: what ``.item()`` gave.
        mean_fake = logits[:batch.n_fake].mean().to(torch.float64)
        mean_real = logits[batch.n_fake:].mean().to(torch.float64)
        decay = self.decay if batch.step >= self.start else 0.0
        if self._real is None or self._fake is None:
            # The reference starts its EMAs at 1000.0, a value its warm-up (decay 0) overwrites
            # on the first step; seeding with the first means is identical whenever start >= 1
            # and, for start 0, avoids an anchor dragged toward the arbitrary init.
            decay = 0.0
            self._real, self._fake = mean_real, mean_fake
        self._real = decay * self._real + (1.0 - decay) * mean_real
        self._fake = decay * self._fake + (1.0 - decay) * mean_fake

    def penalty(self, batch: DBatch) -> Tensor:
        assert self._real is not None and self._fake is not None
        out_fake, out_real = batch.logits[:batch.n_fake], batch.logits[batch.n_fake:]
        # A 0-dim anchor does not promote the logits' dtype: the float op of a python scalar.
        reg = (F.relu(out_real - self._fake).pow(2).mean()
               + F.relu(self._real - out_fake).pow(2).mean())
        return self.weight * reg

    def state_dict(self) -> dict[str, Any]:
        return {"anchor_real": self.anchor_real, "anchor_fake": self.anchor_fake}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._real, self._fake = state["anchor_real"], state["anchor_fake"]
