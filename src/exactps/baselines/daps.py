"""DAPS: decoupled annealing posterior sampling (Zhang et al. 2025, CVPR; arXiv:2407.01521).

Defaults and their sources: :mod:`exactps.baselines`. Checked against the official code
(zhangbingliang2019/DAPS): the first release (commit 25471a8, Aug. 2024, ``sampler.py`` and
``config/``), which produced the paper's DAPS-1K results, and the 2025 refactor (``cores/``,
``configs/``). Where they differ we follow the first release and say so.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exactps.baselines.common import BaselineOutput, CountedNetwork, prepare
from exactps.batch import per_batch
from exactps.interpolants import Interpolant, X0Predictor
from exactps.operators.base import LinearOperator
from exactps.samplers import alpha_sigma, ddim_step, gaussian_like

__all__ = ["DAPS_LR", "DAPS_PRESETS", "daps_grid", "daps_sample"]

#: Langevin step size ``lr`` of the official pixel-space configs (``config/task/*.yaml`` of the first
#: release, ``configs/task/*.yaml`` group ``pixel`` of the refactor; FFHQ/ImageNet 256, ``s_y = 0.05``):
#: 4x SR, Gaussian deblur and 70% random inpainting 1e-4; 128x128 box inpainting and motion deblur 5e-5.
#: All other Langevin settings are shared (100 steps, ``tau = 0.01``, ``lr_min_ratio = 0.01``).
#: ``inpainting`` is the box task (the DPS/DAPS ``inpainting`` config), ``inpainting_random`` the random one.
DAPS_LR: dict[str, float] = {
    "sr": 1e-4,
    "inpainting": 5e-5,
    "inpainting_random": 1e-4,
    "gaussian_deblur": 1e-4,
    "motion_deblur": 5e-5,
}

#: Budgets: ``annealing_steps x ode_steps`` network evaluations. ``daps-1k`` is the paper's DAPS-1K (the
#: official ``commands/``: ``annealing_scheduler_config.num_steps=200``, ``diffusion_scheduler_config.num_steps=5``);
#: ``daps-100`` is our split of the 100-NFE budget of the EPS comparison (BENCHMARK.md; not a published
#: setting: the EPS paper does not say how it ran DAPS at 100 NFE): both factors of DAPS-1K shrunk by about
#: ``sqrt(10)`` (200 -> 50 levels, 5 -> 2 ODE steps), Langevin settings unchanged (100 steps per level).
DAPS_PRESETS: dict[str, dict[str, int]] = {
    "daps-1k": {"annealing_steps": 200, "ode_steps": 5},
    "daps-100": {"annealing_steps": 50, "ode_steps": 2},
}


def _poly_ratios(r_max: float, r_min: float, n: int, rho: float) -> Tensor:
    """``n`` noise ratios ``(r_max^(1/rho) + u (r_min^(1/rho) - r_max^(1/rho)))^rho``, ``u = linspace(0, 1, n)``
    (the official ``Scheduler`` with ``timestep='poly-7'``, ``schedule='linear'``; EDM's grid)."""
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    return (r_max ** (1 / rho) + u * (r_min ** (1 / rho) - r_max ** (1 / rho))) ** rho


def _times(interp: Interpolant, ratios: Tensor) -> Tensor:
    """Times of the noise ratios ``s/a``; ratios at or above ``r(t_max)`` map to ``t_max``."""
    t = interp.t_from_ratio(ratios)
    return torch.where(ratios >= interp.ratio_max(), torch.full_like(t, interp.t_max), t)


def daps_grid(
    interp: Interpolant,
    annealing_steps: int = 200,
    sigma_max: float = 100.0,
    sigma_min: float = 0.1,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """DAPS's annealing levels as ``annealing_steps + 1`` decreasing times ending at 0.

    The noise ratios ``sigma_i = s/a`` run from ``min(sigma_max, r(t_max))`` to ``sigma_min`` on EDM's
    ``rho = 7`` grid, both ends included, then 0 (the official first release: ``Scheduler(num_steps=200,
    sigma_max=100, sigma_min=0.1, sigma_final=0, timestep='poly-7')``). ``sigma_max`` is clipped to the
    interpolant's range (VP-linear reaches ``s/a`` of about 152; VE and VP-cosine stop at 80).
    """
    if annealing_steps < 1:
        raise ValueError(f"annealing_steps must be >= 1, got {annealing_steps}")
    r_max = min(float(sigma_max), interp.ratio_max())
    if not 0 < sigma_min < r_max:
        raise ValueError(f"sigma_min must be in (0, {r_max}) (sigma_max clipped to the interpolant), got {sigma_min}")
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    t = _times(interp, _poly_ratios(r_max, sigma_min, annealing_steps, rho))
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)]).to(dtype)


def _check_positive(name: str, v: float) -> None:
    if not v > 0:
        raise ValueError(f"{name} must be positive, got {v}")


def _check_count(name: str, v: int, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")


def daps_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    annealing_steps: int = 200,
    ode_steps: int = 5,
    sigma_max: float = 100.0,
    sigma_min: float = 0.1,
    ode_sigma_min: float = 0.01,
    langevin_steps: int = 100,
    lr: float = 1e-4,
    lr_min_ratio: float = 0.01,
    tau: float | None = 0.01,
    r_scale: float = 1.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """Decoupled Annealing Posterior Sampling (Zhang et al. 2025), DAPS-1K by default.

    On the annealing levels ``sigma_0 > ... > sigma_{N-1}`` (noise ratios ``s/a`` of :func:`daps_grid`,
    or of ``ts``; ``x_init`` is the state at the first) each step ``i``

    1. solves the prior's probability-flow ODE from ``x_t`` to ``ode_sigma_min`` with ``ode_steps`` Euler
       steps on the same ``rho = 7`` grid (EDM's Euler in ``sigma``, i.e. deterministic DDIM in the
       interpolant), ``x0_hat`` = the prediction at its last node (``ode_steps = 1``: Tweedie's
       ``f(x_t, t)``);
    2. runs ``langevin_steps`` unadjusted Langevin steps from ``x0_hat`` on ``p(x0) ∝ N(x0; x0_hat, r_i^2 I)
       N(y; A x0, tau^2 I)``, ``r_i = r_scale sigma_i``: ``x0 <- x0 - lr_i (A^T (A x0 - y)/tau^2 +
       (x0 - x0_hat)/r_i^2) + sqrt(2 lr_i) z``, ``lr_i = lr (1 - (i/N)(1 - lr_min_ratio))``;
    3. re-noises to the next level: ``x' = a' x0 + s' z`` (the last level is 0: the output is ``x0``).

    Network evaluations: ``N ode_steps`` (1000 for DAPS-1K; see :data:`DAPS_PRESETS`). Langevin uses only
    ``A`` and ``A^T`` (any LinearOperator), no VJP. ``tau`` is the likelihood std the official code uses
    for every task (0.01, below the data's ``s_y = 0.05``); ``tau=None`` uses the true ``s_y`` (must be
    > 0), but the published ``lr`` is tuned with ``tau = 0.01`` and moves the chain ``(s_y / tau)^2``
    times slower then. Langevin is stable only for ``lr (k_max^2/tau^2 + 1/r^2) < 2`` (``k_max`` the
    largest singular value of ``A``); a run that diverges raises ``FloatingPointError`` (the official
    code returns zeros).

    The first release, which we follow, and the 2025 refactor (``cores/``) differ: the refactor drops
    the grid's last level ``sigma_min``, stops the ODE at ``ode_sigma_min`` without the final Tweedie
    call, and doubles the data term (its ``tau`` acts as ``tau / sqrt 2``). Both use ``r_i = sigma_i``
    (``r_scale = 1``; the paper's text on ``r_t`` was not checked) and no x0 clipping in the ODE.
    """
    for name, v, low in (("annealing_steps", annealing_steps, 1), ("ode_steps", ode_steps, 1)):
        _check_count(name, v, low)
    _check_count("langevin_steps", langevin_steps, 0)
    for name, v in (("lr", lr), ("lr_min_ratio", lr_min_ratio), ("r_scale", r_scale), ("ode_sigma_min", ode_sigma_min)):
        _check_positive(name, v)
    if tau is not None:
        _check_positive("tau", tau)
    grid = daps_grid(interp, annealing_steps, sigma_max, sigma_min) if ts is None else ts
    y, sy, ts = prepare(interp, operator, y, sigma_y, x_init, grid, annealing_steps)
    if tau is None:
        if not bool((sy > 0).all()):
            raise ValueError("tau=None uses the measurement's sigma_y, which must then be positive")
        tau2 = per_batch(sy, x_init.ndim) ** 2
    else:
        tau2 = tau**2
    n = len(ts) - 1
    ratios = interp.ratio(ts[:-1])
    if ode_steps > 1 and float(ratios.min()) <= ode_sigma_min:
        raise ValueError(
            f"ode_sigma_min ({ode_sigma_min}) must lie below every annealing noise ratio s/a "
            f"(the smallest is {float(ratios.min()):.4g})"
        )
    f = CountedNetwork(predict, clip)
    x = x_init
    with torch.no_grad():
        for i in range(n):
            sigma = float(ratios[i])
            # 1. x0_hat: Euler on the probability-flow ODE from sigma_i down to ode_sigma_min
            inner = _times(interp, _poly_ratios(sigma, ode_sigma_min, ode_steps, 7.0))
            inner[0] = ts[i]
            xj = x
            for j in range(ode_steps):
                x0_hat = f(xj, inner[j])
                if j + 1 < ode_steps:
                    (a, s), (an, sn) = alpha_sigma(interp, inner[j]), alpha_sigma(interp, inner[j + 1])
                    xj = ddim_step(xj, x0_hat, a, s, an, sn, 0.0, None)
            # 2. Langevin on N(x0; x0_hat, r^2 I) N(y; A x0, tau^2 I)
            r2 = (r_scale * sigma) ** 2
            step = lr * (1 - (i / n) * (1 - lr_min_ratio))
            x0 = x0_hat
            for _ in range(langevin_steps):
                grad = operator.At(operator.A(x0) - y) / tau2 + (x0 - x0_hat) / r2
                x0 = x0 - step * grad + math.sqrt(2 * step) * gaussian_like(x0, generator)
            if not bool(torch.isfinite(x0).all()):
                raise FloatingPointError(
                    f"DAPS Langevin diverged at annealing step {i} (s/a = {sigma:.4g}, lr = {step:.3g}): "
                    "lr (k_max^2 / tau^2 + 1 / r^2) must stay below 2"
                )
            # 3. re-noise to the next annealing level
            an, sn = alpha_sigma(interp, ts[i + 1])
            x = an * x0 + sn * gaussian_like(x0, generator) if sn > 0 else an * x0
    return BaselineOutput(x, f.nfe, f.vjp)
