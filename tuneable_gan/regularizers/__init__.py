"""D regularizers, one module each; ``REGULARIZERS`` maps ``regularizer.name`` to its class."""

from tuneable_gan.regularizers import diggan, dragan, gp, lecam, r1, r2  # noqa: F401  (register)
from tuneable_gan.regularizers.base import (
    REGULARIZERS,
    DBatch,
    Regularizer,
    input_grad_norms,
)

__all__ = ["REGULARIZERS", "DBatch", "Regularizer", "input_grad_norms"]
