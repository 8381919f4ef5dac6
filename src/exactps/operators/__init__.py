"""Linear measurement operators with closed-form EPS quantities (see :mod:`.base`)."""

from exactps.operators.base import (
    LinearOperator,
    MatrixFreeOperator,
    SpectralOperator,
    conjugate_gradient,
)
from exactps.operators.dense import DenseOperator
from exactps.operators.generators import (
    box_masks,
    gaussian_kernel,
    line_kernels,
    motion_kernels,
    random_box_masks,
    random_masks,
)
from exactps.operators.library import (
    AvgPoolSR,
    Blur,
    Colorize,
    Denoise,
    Inpaint,
    OrthogonalCS,
    SeparableSR,
    from_physics,
)

__all__ = [
    "AvgPoolSR",
    "Blur",
    "Colorize",
    "Denoise",
    "DenseOperator",
    "Inpaint",
    "LinearOperator",
    "MatrixFreeOperator",
    "OrthogonalCS",
    "SeparableSR",
    "SpectralOperator",
    "box_masks",
    "conjugate_gradient",
    "from_physics",
    "gaussian_kernel",
    "line_kernels",
    "motion_kernels",
    "random_box_masks",
    "random_masks",
]
