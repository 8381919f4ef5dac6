"""DDNM and DDNM+: denoising diffusion null-space models (Wang et al. 2023).

Defaults and their sources: :mod:`exactps.baselines`.
"""

from __future__ import annotations

import itertools
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

__all__ = ["ddnm_sample", "travel_schedule"]


def travel_schedule(steps: int, travel_length: int = 1, travel_repeat: int = 1) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of grid positions (``ts[0]`` is 0, ``ts[steps] = 0`` is ``steps``): ``j = i + 1`` a
    denoising step, ``j = i - 1`` a jump back. The official ``get_schedule_jump(T_sampling, travel_length,
    travel_repeat)`` (DDNM ``functions/svd_ddnm.py``, from RePaint), whose index ``u`` is position
    ``steps - 1 - u``. ``travel_repeat = 1`` gives the plain ``(0, 1), ..., (steps - 1, steps)``.
    """
    for name, v in (("travel_length", travel_length), ("travel_repeat", travel_repeat)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if travel_repeat > 1 and travel_length >= steps:
        raise ValueError(
            f"travel_length must be below the number of steps ({steps}) for time travel, got {travel_length}"
        )
    jumps = {j: travel_repeat - 1 for j in range(0, steps - travel_length, travel_length)}
    u, idx = steps, []
    while u >= 1:
        u -= 1
        idx.append(u)
        if jumps.get(u, 0) > 0:
            jumps[u] -= 1
            for _ in range(travel_length):
                u += 1
                idx.append(u)
    pos = [steps - 1 - v for v in idx] + [steps]
    return list(itertools.pairwise(pos))


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
    travel_length: int = 1,
    travel_repeat: int = 1,
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

    Time travel (the paper's time-travel trick; the official ``get_schedule_jump`` of
    ``functions/svd_ddnm.py``, from RePaint): with ``N`` steps and ``L = travel_length``, each time the
    sampler lands on official index ``u = 0, L, 2L, ... < N - L`` (grid position ``N - 1 - u``) it jumps
    back ``L`` steps, ``travel_repeat - 1`` times: it re-noises the last network prediction ``x0`` (before
    the range-null correction, as the official code) to the earlier time, ``x = a x0 + s z``, and redoes
    the ``L`` steps. Default ``travel_repeat = 1`` is off (the official configs: length and repeat 1).
    Network evaluations: ``N + (travel_repeat - 1) L ceil((N - L) / L)`` (jumps cost none); see
    :func:`travel_schedule`.
    """
    y, sy, ts = prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    check_fraction("eta", eta)
    schedule = travel_schedule(len(ts) - 1, travel_length, travel_repeat)
    sp = Spectrum(operator, x_init, "DDNM")
    syb = sp.batch(sy if plus else torch.zeros_like(sy))
    f = CountedNetwork(predict, clip)
    x = x_init
    x0_net = x_init
    with torch.no_grad():
        for i, j in schedule:
            if j < i:  # time travel: re-noise the last prediction to the earlier (noisier) time
                aj, sj = alpha_sigma(interp, ts[j])
                x = aj * x0_net + sj * gaussian_like(x, generator)
                continue
            (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[j])
            x0 = x0_net = f(x, ts[i])
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
