"""DRAGAN (Kodali et al. 2017), as StudioGAN's ``cal_dra_penalty`` computes it
(docs/methods.md 4.2).

    alpha_i ~ U[0, 1) per sample,   u_i ~ U[0, 1)^{C x H x W},   s = std(x_r)
    x_tilde_i = x_r,i + alpha_i * 0.5 * s * u_i
    R_DRA     = lambda * mean_i (||grad_x D(x_tilde_i, y_r,i)|| - 1)^2   -> added to the D loss

s is ONE scalar: the standard deviation over every element of the un-augmented real batch
(``Tensor.std()``, unbiased, as StudioGAN's ``real_images.std()``), not a per-sample or
per-channel std. The perturbation is one-sided (u >= 0), also as in StudioGAN. Draw order from
the run generator: alpha, shape (n, 1, 1, 1), then u, the batch's shape. D sees x_tilde without
T (perturbations of the real data, as in GP). lambda = ``regularizer.weight``, default 10.
Every D step by default; one extra D forward on the reals. Stateless.
"""

from __future__ import annotations

import torch

from tuneable_gan.config import Config
from tuneable_gan.regularizers.base import REGULARIZERS, DBatch, Regularizer, Tensor
from tuneable_gan.regularizers.penalties import (
    input_gradient,
    one_centred,
    split,
    uniform_per_sample,
)


@REGULARIZERS.register("dragan")
class DRAGAN(Regularizer):
    """DRAGAN's one-centred penalty around the reals; the real labels go to a conditional D."""

    @classmethod
    def default_weight(cls, cfg: Config) -> float:
        return 10.0

    def perturbed(self, batch: DBatch) -> Tensor:
        """x_tilde for this step (draws alpha, then u, from the run generator)."""
        x_r = batch.real_raw
        alpha = uniform_per_sample(x_r, batch.generator)
        u = torch.rand(x_r.shape, generator=batch.generator, device=x_r.device, dtype=x_r.dtype)
        return x_r + alpha * (0.5 * x_r.std() * u)

    def penalty(self, batch: DBatch) -> Tensor:
        _, y_r = split(batch, "real")
        return self.weight * one_centred(input_gradient(batch.D, self.perturbed(batch), y_r))
