"""D regularizers, one module each; ``REGULARIZERS`` maps ``regularizer.name`` to its class."""

from tuneable_gan.regularizers import diggan  # noqa: F401  (registers itself)
from tuneable_gan.regularizers.base import (
    REGULARIZERS,
    DBatch,
    Regularizer,
    input_grad_norms,
)

__all__ = ["REGULARIZERS", "DBatch", "Regularizer", "input_grad_norms"]
