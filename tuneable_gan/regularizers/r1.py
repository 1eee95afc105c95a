"""R1 (Mescheder et al. 2018): zero-centred gradient penalty on the reals (docs/methods.md 4.2).

    R1 = (gamma / 2) * mean_i ||grad_x D(T(x_r,i), y_r,i)||^2      -> added to the D loss only

with x the un-augmented real and T (DiffAugment) inside the differentiated call, the
StyleGAN2 + DiffAugment / StudioGAN convention (docs/methods.md 2 and 4.2), taken on the D step's
own loss forward (no extra D forward, no second augmentation draw: StudioGAN ``src/worker.py``).
gamma = ``regularizer.weight``, default 10 (Mescheder; DiffAugment low-shot; StyleGAN2's CIFAR
config uses 0.01). Applied on every D step by default; StyleGAN2's lazy regularization (every 16
steps, x16) is not implemented. Stateless.

``R1(cfg, wrt="augmented")`` differentiates w.r.t. D's augmented input instead (as DigGAN's
BigGAN path does); see ``SquaredGradNormPenalty``.
"""

from __future__ import annotations

from tuneable_gan.regularizers.base import REGULARIZERS
from tuneable_gan.regularizers.penalties import SquaredGradNormPenalty


@REGULARIZERS.register("r1")
class R1(SquaredGradNormPenalty):
    """R1 on the reals of each D step; the real labels go to D when it is conditional."""

    side = "real"
