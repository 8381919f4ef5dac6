"""exactps: exact posterior sampling for linear inverse problems with diffusion and flow models.

The Exact Posterior Score (EPS) identity: for ``y = A x0 + N(0, s_y^2 I)`` and a Gaussian
interpolant ``x_t = a x0 + s e``, ``E[x0 | x_t, y] = D*(m; S_t)``: the MMSE denoiser at the
pivot ``m`` under anisotropic noise ``S_t``. See :mod:`exactps.posterior`.
"""

from exactps.interpolants import (
    VE,
    Interpolant,
    LinearFlow,
    Trigonometric,
    VPCosine,
    VPLinear,
    get_interpolant,
)
from exactps.posterior import (
    PosteriorPredictor,
    ZeroShotPredictor,
    pivot,
    posterior_eps,
    posterior_score,
    posterior_x0,
)
from exactps.samplers import SAMPLERS, sample, time_grid

__version__ = "0.1.0"

__all__ = [
    "SAMPLERS",
    "VE",
    "Interpolant",
    "LinearFlow",
    "PosteriorPredictor",
    "Trigonometric",
    "VPCosine",
    "VPLinear",
    "ZeroShotPredictor",
    "get_interpolant",
    "pivot",
    "posterior_eps",
    "posterior_score",
    "posterior_x0",
    "sample",
    "time_grid",
]
