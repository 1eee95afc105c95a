"""R2 (Roth et al. 2017; Mescheder et al. 2018): R1 moved to the fakes (docs/methods.md 4.2).

    R2 = (gamma / 2) * mean_j ||grad_x D(T(x_f,j), y_f,j)||^2      -> added to the D loss only

with x_f = G(z) detached (no gradient reaches G) and un-augmented, T inside the differentiated
call, on the D step's loss forward, the same convention as R1. gamma =
``regularizer.weight``, default 10 (the R1 grid). Applied on every D step by default. Stateless.
``R2(cfg, wrt="augmented")`` reads the loss forward's norms instead, as for R1.
"""

from __future__ import annotations

from tuneable_gan.regularizers.base import REGULARIZERS
from tuneable_gan.regularizers.penalties import SquaredGradNormPenalty


@REGULARIZERS.register("r2")
class R2(SquaredGradNormPenalty):
    """R2 on the fakes of each D step; the fakes' labels go to D when it is conditional."""

    side = "fake"
