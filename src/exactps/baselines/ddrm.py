"""DDRM: denoising diffusion restoration models (Kawar et al. 2022).

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

__all__ = ["ddrm_sample"]



def _ddrm_init(sp: Spectrum, ybar: Tensor, sy: Tensor, z: Tensor, a: float, s: float) -> Tensor:
    """``x_T = a V c + s P_null z`` with ``c = ybar + sqrt(sigma^2 - s_y^2/k^2) V^T z`` where ``k sigma > s_y``."""
    sig = s / a
    cz = sp.vt(z)
    syb = sp.batch(sy)
    informed = sp.measured & (sp.k * sig > syb)
    c = torch.where(informed, ybar + torch.sqrt((sig**2 - syb**2 * sp.inv_k**2).clamp_min(0)) * cz, sig * cz)
    return a * sp.override(sig * z, c)


def ddrm_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 20,
    eta: float = 0.85,
    eta_b: float = 1.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """Denoising Diffusion Restoration Models (Kawar et al. 2022), per spectral coefficient.

    With ``sigma = s/a``, ``c0 = V^T x0``, ``ybar = U^T y / k``: unmeasured ``c' = c0 + sqrt(1-eta^2)
    sigma' V^T e + eta sigma' z``; ``k sigma' < s_y``: ``c' = c0 + sqrt(1-eta^2) sigma' (ybar - c0) k/s_y
    + eta sigma' z``; ``k sigma' >= s_y``: ``c' = (1-eta_b) c0 + eta_b ybar + sqrt(sigma'^2 - eta_b^2
    s_y^2/k^2) z``; ``x' = a' V c'``. ``x_T`` is drawn from DDRM's ``q(x_T | y)`` with the white noise
    ``x_init / s(t_0)``. ``>=`` (Eq. 8 of the paper; the code has ``>``) makes the noiseless output
    match ``y`` exactly. Needs a SpectralOperator; no VJP.
    """
    y, sy, ts = prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    check_fraction("eta", eta)
    check_fraction("eta_b", eta_b)
    sp = Spectrum(operator, x_init, "DDRM")
    f = CountedNetwork(predict, clip)
    ut_y = sp.ut(y)
    ybar = sp.inv_k * ut_y
    syb = sp.batch(sy)
    a0, s0 = alpha_sigma(interp, ts[0])
    with torch.no_grad():
        x = _ddrm_init(sp, ybar, sy, x_init / s0, a0, s0)
        for i in range(len(ts) - 1):
            (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
            x0 = f(x, ts[i])
            eps, sig = (x - a * x0) / s, sn / an
            z = gaussian_like(x, generator)
            x_def = x0 + math.sqrt(1 - eta**2) * sig * eps + eta * sig * z  # unmeasured directions
            c0, cz = sp.vt(x0), sp.vt(z)
            before = sp.measured & (sp.k * sig >= syb)
            c_before = (1 - eta_b) * c0 + eta_b * ybar
            c_before = c_before + torch.sqrt((sig**2 - eta_b**2 * syb**2 * sp.inv_k**2).clamp_min(0)) * cz
            after = sp.measured & ~before  # implies k sigma' < s_y, so s_y > 0
            gain = math.sqrt(1 - eta**2) * sig / torch.where(after, syb, 1.0)
            c_after = c0 + gain * (ut_y - sp.k * c0) + eta * sig * cz
            x = an * sp.override(x_def, torch.where(before, c_before, c_after))
    return BaselineOutput(x, f.nfe, f.vjp)
