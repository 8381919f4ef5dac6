"""DDNM and DDNM+: denoising diffusion null-space models (Wang et al. 2023).

Defaults and their sources: :mod:`exactps.baselines`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exactps.baselines.common import (
    BaselineOutput,
    CountedNetwork,
    Spectrum,
    check_fraction,
    prepare,
)
from exactps.interpolants import Interpolant, X0Predictor
from exactps.operators.base import LinearOperator
from exactps.samplers import alpha_sigma, gaussian_like

__all__ = ["ddnm_sample"]



def ddnm_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 100,
    eta: float = 0.85,
    plus: bool = True,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """DDNM / DDNM+ (Wang et al. 2023): range-null-space correction of ``x0``, then a DDIM(``eta``) step.

    DDNM: ``x0_y = x0 + A^+ (y - A x0)``, ``x' = a' x0_y + s' (eta z + sqrt(1-eta^2) e)`` (network ``e``).
    DDNM+ (Eq. 17-19, the official ``Lambda`` and ``Lambda_noise``), per coefficient: ``x0_y = x0 -
    V diag(lam) V^T A^+ (A x0 - y)`` with ``lam = k s' sqrt(1-eta^2) / (a' s_y)`` where ``k s' < a' s_y``
    (else 1); fresh noise ``s' eta z`` there and ``sqrt(s'^2 - a'^2 s_y^2 / k^2) z`` where ``k s' > a' s_y``,
    so ``x'`` keeps noise std ``s'``. ``plus=True`` (default) is the official runner: DDNM+ for noisy
    ``y``, which is exactly DDNM when ``s_y = 0``; ``plus=False`` forces the plain projection for any
    ``s_y`` (an ablation). Needs a SpectralOperator; no VJP.
    """
    y, sy, ts = prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    check_fraction("eta", eta)
    sp = Spectrum(operator, x_init, "DDNM")
    syb = sp.batch(sy if plus else torch.zeros_like(sy))
    f = CountedNetwork(predict, clip)
    x = x_init
    with torch.no_grad():
        for i in range(len(ts) - 1):
            (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
            x0 = f(x, ts[i])
            eps = (x - a * x0) / s
            # Eq. 17 (Lambda): lam = k s' sqrt(1-eta^2) / (a' s_y) where k s' < a' s_y, else 1
            small = sp.measured & (sp.k * sn < an * syb)
            lam = torch.where(small, sp.k * sn * math.sqrt(1 - eta**2) / (an * torch.where(small, syb, 1.0)), 1.0)
            x0 = x0 - sp.v(lam * sp.inv_k * sp.ut(operator.A(x0) - y))
            # Eq. 19 (Lambda_noise): fresh noise completes the std s' left by the noise of A^+ y
            z = gaussian_like(x, generator)
            default = sn * (eta * z + math.sqrt(1 - eta**2) * eps)
            big = sp.measured & (sp.k * sn > an * syb) & (syb > 0)
            d1 = torch.where(big, torch.sqrt((sn**2 - an**2 * syb**2 * sp.inv_k**2).clamp_min(0)), sn * eta)
            noisy = sp.measured & (syb > 0) & (small | big)
            noise = torch.where(noisy, d1 * sp.vt(z), sp.vt(default))
            x = an * x0 + sp.override(default, noise)
    return BaselineOutput(x, f.nfe, f.vjp)
