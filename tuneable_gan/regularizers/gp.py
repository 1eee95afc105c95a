"""WGAN-GP's one-centred gradient penalty, GP-1 (Gulrajani et al. 2017; docs/methods.md 4.2).

    x_hat = eps_i * x_r,i + (1 - eps_i) * x_f,i,     eps_i ~ U[0, 1) per sample
    GP    = lambda * mean_i (||grad_x D(x_hat_i)|| - 1)^2          -> added to the D loss only

on the un-augmented images, D called on x_hat directly, without T: WGAN-GP has no augmentation
and StudioGAN's ``cal_grad_penalty`` calls D on the interpolates as they are, so the penalty
constrains D itself on the segments between the two batches. Reals and fakes are paired by batch
index. eps comes from the run generator (one draw of shape (n, 1, 1, 1)). lambda =
``regularizer.weight``, default 10. Every D step by default; one extra D forward. Stateless.

Unconditional D only: interpolating images of two classes has no label to give D (StudioGAN
feeds the real labels; the DigGAN paper reports GP-1 cannot be applied to BigGAN).
"""

from __future__ import annotations

from tuneable_gan.config import Config
from tuneable_gan.errors import ConfigError
from tuneable_gan.regularizers.base import REGULARIZERS, DBatch, Regularizer, Tensor
from tuneable_gan.regularizers.penalties import input_gradient, one_centred, uniform_per_sample

CONDITIONAL_REFUSAL = (
    "regularizer.name=gp is not available for a conditional D (model.conditional=true): GP "
    "interpolates between images of different classes; valid: none, diggan, lecam, r1, r2, dragan")


@REGULARIZERS.register("gp")
class GradientPenalty(Regularizer):
    """GP-1 on real/fake interpolates; refused at construction for a conditional D."""

    def __init__(self, cfg: Config) -> None:
        if cfg.model.conditional:
            raise ConfigError(CONDITIONAL_REFUSAL)
        super().__init__(cfg)

    @classmethod
    def default_weight(cls, cfg: Config) -> float:
        return 10.0

    def interpolates(self, batch: DBatch) -> Tensor:
        """x_hat for this step (draws eps from the run generator)."""
        x_r, x_f = batch.real_raw, batch.fake_raw
        assert x_r.shape == x_f.shape, "GP pairs equal numbers of reals and fakes"
        eps = uniform_per_sample(x_r, batch.generator)
        return eps * x_r + (1.0 - eps) * x_f

    def penalty(self, batch: DBatch) -> Tensor:
        return self.weight * one_centred(input_gradient(batch.D, self.interpolates(batch), None))
