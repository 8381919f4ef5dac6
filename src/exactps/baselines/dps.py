"""DPS: diffusion posterior sampling (Chung et al. 2023).

Defaults and their sources: :mod:`exactps.baselines`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exactps.baselines.common import (
    BaselineOutput,
    CountedNetwork,
    prepare,
)
from exactps.batch import per_batch
from exactps.interpolants import Interpolant, X0Predictor
from exactps.operators.base import LinearOperator
from exactps.samplers import alpha_sigma, gaussian_like

__all__ = ["DPS_ZETA", "dps_sample"]

#: DPS step sizes ``zeta`` of the official configs (FFHQ/ImageNet, ``s_y = 0.05``).
DPS_ZETA: dict[str, float] = {
    "sr": 0.3,
    "inpainting": 0.5,
    "inpainting_random": 0.5,  # the same inpainting config serves box and random masks
    "gaussian_deblur": 0.3,
    "motion_deblur": 0.3,
}

def dps_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 1000,
    zeta: float = 1.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """Diffusion Posterior Sampling (Chung et al. 2023): a DDPM step, then a likelihood-gradient step.

    ``x' = mean_DDPM(x_t, x0) + sqrt(var) z - zeta grad_{x_t} ||y - A x0(x_t)||`` (the norm, not its
    square, as in the official code: ``zeta_i = zeta / ||r||`` on the squared norm). The norm is
    taken per sample (the official code uses batch size 1). ``s_y`` is only validated: DPS's step
    does not depend on it. One network evaluation and one VJP per step.
    """
    y, _, ts = prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    if zeta < 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")
    f = CountedNetwork(predict, clip)
    x = x_init
    for i in range(len(ts) - 1):
        (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
        x0, vjp = f.with_vjp(x, ts[i])
        r = y - operator.A(x0)
        norm = r.flatten(1).norm(dim=1).clamp_min(torch.finfo(r.dtype).tiny)
        ascent = vjp(operator.At(r / per_batch(norm, r.ndim)))  # = -grad ||r||
        fwd = max(0.0, s**2 - (a * sn / an) ** 2)  # variance of x_t given x_{t'}
        x = (fwd / s**2) * an * x0 + (sn**2 / s**2) * (a / an) * x
        if sn > 0 and fwd > 0:
            x = x + math.sqrt(sn**2 * fwd / s**2) * gaussian_like(x, generator)
        x = x + zeta * ascent
    return BaselineOutput(x.detach(), f.nfe, f.vjp)
