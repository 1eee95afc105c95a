"""DigGAN: discriminator gradient-gap regularization (docs/methods.md section 1, BigGAN-CIFAR path).

Per pair i, with g the per-sample L2 norm of the raw logit's gradient w.r.t. D's actual
(augmented) input, taken on the loss forward pass:

    g_hat = (1 - beta) * g + beta * E          (E: detached history, per batch position)
    R     = weight * mean_i (g_hat_fake,i - g_hat_real,i)^2     -> added to the D loss only
    E    <- detach(g_hat)

On the first penalised step there is no history and g_hat = g. Gradient flows only through the
current g (scaled by 1 - beta). The reference applies it on the first of the D steps of each G
iteration, so the history advances once per G iteration.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneable_gan.config import Config
from tuneable_gan.regularizers.base import REGULARIZERS, DBatch, Regularizer, Tensor


def paper_weight(cfg: Config) -> float:
    """The reference's lambda rule, p = data availability in percent: 1e5/p without DiffAugment,
    1e5/p^2 with it (the 24 reference scripts; docs/methods.md 1.3)."""
    p = 100.0 * cfg.data.fraction
    return 1e5 / (p * p) if cfg.augment.diffaugment.strip() else 1e5 / p


@REGULARIZERS.register("diggan")
class DigGAN(Regularizer):
    """DigGAN with pairings ``random`` (by batch index), ``same_class`` (fake labels := real
    labels) and ``magnitude`` (both norm vectors sorted, paired by rank; the EMA is then kept in
    rank order, an assumption the paper leaves open)."""

    needs_grad_norms = True
    default_every = "first"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        assert cfg.regularizer.ema is not None, "resolve the config first"
        self.beta = cfg.regularizer.ema
        self.pairing = cfg.regularizer.pairing
        self.ema_fake: Tensor | None = None
        self.ema_real: Tensor | None = None

    @classmethod
    def defaults(cls, cfg: Config) -> dict[str, Any]:
        # beta = 0.5: hard-coded in the reference's train_fns.py (docs/methods.md 1.1).
        return super().defaults(cfg) | {"ema": 0.5}

    @classmethod
    def default_weight(cls, cfg: Config) -> float:
        return paper_weight(cfg)

    def fake_labels(self, real_labels: Tensor | None, fake_labels: Tensor | None) -> Tensor | None:
        if self.pairing == "same_class":
            return real_labels
        return fake_labels

    def smoothed_norms(self, batch: DBatch) -> tuple[Tensor, Tensor]:
        """(g_hat_fake, g_hat_real) for this step; advances the detached history."""
        g = batch.grad_norms
        assert g is not None, "DigGAN needs the per-sample input-gradient norms"
        g_fake, g_real = g[:batch.n_fake], g[batch.n_fake:]
        assert g_fake.shape == g_real.shape, "DigGAN pairs equal numbers of fakes and reals"
        if self.pairing == "magnitude":
            g_fake, g_real = torch.sort(g_fake).values, torch.sort(g_real).values
        if self.ema_fake is not None and self.ema_real is not None:
            g_fake = (1.0 - self.beta) * g_fake + self.beta * self.ema_fake
            g_real = (1.0 - self.beta) * g_real + self.beta * self.ema_real
        self.ema_fake, self.ema_real = g_fake.detach(), g_real.detach()
        return g_fake, g_real

    def penalty(self, batch: DBatch) -> Tensor:
        g_fake, g_real = self.smoothed_norms(batch)
        return self.weight * (g_fake - g_real).pow(2).mean()

    def state_dict(self) -> dict[str, Any]:
        return {"ema_fake": self.ema_fake, "ema_real": self.ema_real}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema_fake, self.ema_real = state["ema_fake"], state["ema_real"]
