"""Samplers that only need an x0-predictor ``(x_t, t) -> x0_hat`` (METHOD.md, "Sampling").

The same code samples the prior (predictor of ``E[x0 | x_t]``) and the posterior (EPS:
``E[x0 | x_t, y]`` via :class:`~exactps.posterior.PosteriorPredictor`). Every sampler runs on a
decreasing time grid ``t_0 = t_max > ... > t_{N-1} > t_N = 0``; the predictor is never called at
``t = 0``. Each returns the sample and the number of predictor evaluations (NFE).

* :func:`ddim_sample`: DDIM with ``eta`` (0: deterministic; 1: DDPM's posterior variance),
  written for any interpolant: ``x' = a' x0 + sqrt(s'^2 - c^2) e_hat + c z``,
  ``c = eta s' sqrt(1 - (a s' / (a' s))^2)``.
* :func:`ddpm_sample`: ancestral sampling of ``q(x' | x_t, x0_hat)`` with the posterior
  ("small") or forward-transition ("large", DDPM's ``beta``) variance.
* :func:`euler_sample`, :func:`heun_sample`: the probability-flow ODE
  ``dx/dt = a' x0_hat + s' e_hat`` in the interpolant's own time (EDM's sampler for VE, the
  flow ODE for linear flows). Heun skips its correction on the last step, as in EDM.
* :func:`dpmpp_2m_sample`: DPM-Solver++(2M), multistep in ``lambda = log(a/s)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.interpolants import Interpolant, X0Predictor, as_time

__all__ = [
    "MIN_NFE",
    "SAMPLERS",
    "SampleOutput",
    "UnstableSamplerWarning",
    "alpha_sigma",
    "check_nfe",
    "ddim_sample",
    "ddim_step",
    "ddpm_sample",
    "dpmpp_2m_sample",
    "euler_sample",
    "gaussian_like",
    "heun_sample",
    "initial_noise",
    "sample",
    "steps_for_nfe",
    "time_grid",
]


class UnstableSamplerWarning(UserWarning):
    """A sampler run with fewer evaluations than it is known to need (:data:`MIN_NFE`)."""


@dataclass
class SampleOutput:
    x: Tensor
    nfe: int


class _Counter:
    """Wraps a predictor and counts its calls."""

    def __init__(self, predict: X0Predictor):
        self.predict = predict
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        x0 = self.predict(x, t)
        if x0.shape != x.shape:
            raise ValueError(f"the predictor returned shape {tuple(x0.shape)} for input {tuple(x.shape)}")
        return x0


def time_grid(
    interp: Interpolant,
    steps: int,
    kind: str = "edm",
    ratio_min: float = 0.002,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``steps + 1`` decreasing times from ``t_max`` to ``0``.

    ``edm``: Karras et al.'s ``rho``-spaced noise ratios ``s/a`` from ``r(t_max)`` to
    ``ratio_min``; ``logsnr``: uniform in ``log(s/a)`` over the same range; ``uniform``:
    uniform in ``t`` from ``t_max`` to the ``t`` of ``ratio_min``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    r_max = interp.ratio_max()
    if not 0 < ratio_min < r_max:
        raise ValueError(f"ratio_min must be in (0, {r_max}), got {ratio_min}")
    u = torch.linspace(0, 1, steps, dtype=torch.float64)
    if kind == "edm":
        r = (r_max ** (1 / rho) + u * (ratio_min ** (1 / rho) - r_max ** (1 / rho))) ** rho
        t = interp.t_from_ratio(r)
    elif kind == "logsnr":
        r = torch.exp(math.log(r_max) + u * (math.log(ratio_min) - math.log(r_max)))
        t = interp.t_from_ratio(r)
    elif kind == "uniform":
        t_lo = float(interp.t_from_ratio(torch.tensor(ratio_min, dtype=torch.float64)))
        t = interp.t_max + u * (t_lo - interp.t_max)
    else:
        raise ValueError(f"unknown time grid {kind!r}; choose edm, logsnr or uniform")
    t[0] = interp.t_max  # exact start despite round-off in t_from_ratio
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)]).to(dtype)


def initial_noise(
    interp: Interpolant,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``x_{t_max} ~ N(0, s(t_max)^2 I)`` (the ``a(t_max) x0`` term is neglected)."""
    s = float(interp.sigma(as_time(interp.t_max)))
    return s * torch.randn(shape, generator=generator, dtype=dtype, device=device)


def alpha_sigma(interp: Interpolant, t: Tensor) -> tuple[float, float]:
    """``(a(t), s(t))`` of a scalar time as floats (the coefficients of one sampler step)."""
    return float(interp.alpha(t)), float(interp.sigma(t))


def gaussian_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``z ~ N(0, I)`` with the shape, dtype and device of ``x``."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def ddim_step(
    x: Tensor, x0: Tensor, a: float, s: float, an: float, sn: float, eta: float, generator: torch.Generator | None
) -> Tensor:
    """One DDIM step from ``(a, s)`` to ``(a', s')``: ``x' = a' x0 + sqrt(s'^2 - c^2) e + c z``,
    ``e = (x - a x0)/s``, ``c = eta s' sqrt(1 - (a s' / (a' s))^2)``."""
    eps = (x - a * x0) / s
    c = eta * sn * math.sqrt(max(0.0, 1 - (a * sn / (an * s)) ** 2)) if sn > 0 else 0.0
    out = an * x0 + math.sqrt(max(0.0, sn**2 - c**2)) * eps
    return out + c * gaussian_like(out, generator) if c > 0 else out


def ddim_sample(
    predict: X0Predictor,
    interp: Interpolant,
    x: Tensor,
    ts: Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """DDIM (Song et al. 2021) for any interpolant; ``eta = 1`` is DDPM's ancestral sampler."""
    f = _Counter(predict)
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        a, s = alpha_sigma(interp, t)
        an, sn = alpha_sigma(interp, tn)
        x = ddim_step(x, f(x, t.to(x.dtype)), a, s, an, sn, eta, generator)
    return SampleOutput(x, f.nfe)


def ddpm_sample(
    predict: X0Predictor,
    interp: Interpolant,
    x: Tensor,
    ts: Tensor,
    variance: str = "posterior",
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Ancestral sampling from ``q(x_{t'} | x_t, x0_hat)`` (Ho et al. 2020).

    Mean ``(f^2/s^2) a' x0_hat + (s'^2/s^2)(a/a') x_t`` with ``f^2 = s^2 - (a s'/a')^2`` the
    forward transition variance; variance ``s'^2 f^2 / s^2`` (``posterior``) or ``f^2``
    (``forward``, DDPM's ``beta_t``).
    """
    if variance not in ("posterior", "forward"):
        raise ValueError(f"variance must be 'posterior' or 'forward', got {variance!r}")
    f = _Counter(predict)
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        a, s = alpha_sigma(interp, t)
        an, sn = alpha_sigma(interp, tn)
        x0 = f(x, t.to(x.dtype))
        fwd = max(0.0, s**2 - (a * sn / an) ** 2)
        x = (fwd / s**2) * an * x0 + (sn**2 / s**2) * (a / an) * x
        var = sn**2 * fwd / s**2 if variance == "posterior" else fwd
        if sn > 0 and var > 0:
            x = x + math.sqrt(var) * gaussian_like(x, generator)
    return SampleOutput(x, f.nfe)


def _velocity(interp: Interpolant, x: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    a, s = alpha_sigma(interp, t)
    da, ds = float(interp.d_alpha(t)), float(interp.d_sigma(t))
    return da * x0 + ds * (x - a * x0) / s


def euler_sample(
    predict: X0Predictor,
    interp: Interpolant,
    x: Tensor,
    ts: Tensor,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Euler on the probability-flow ODE ``dx/dt = a' x0_hat + s' e_hat``."""
    f = _Counter(predict)
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        x0 = f(x, t.to(x.dtype))
        if float(tn) == 0.0:
            an, _ = alpha_sigma(interp, tn)
            x = an * x0  # the exact endpoint of the last step (s(0) = 0)
        else:
            x = x + float(tn - t) * _velocity(interp, x, x0, t)
    return SampleOutput(x, f.nfe)


def heun_sample(
    predict: X0Predictor,
    interp: Interpolant,
    x: Tensor,
    ts: Tensor,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Heun (2nd order) on the probability-flow ODE; Euler on the last step (EDM, Alg. 1)."""
    f = _Counter(predict)
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        x0 = f(x, t.to(x.dtype))
        if float(tn) == 0.0:
            an, _ = alpha_sigma(interp, tn)
            x = an * x0
            continue
        d = _velocity(interp, x, x0, t)
        x_pred = x + float(tn - t) * d
        d2 = _velocity(interp, x_pred, f(x_pred, tn.to(x.dtype)), tn)
        x = x + float(tn - t) * 0.5 * (d + d2)
    return SampleOutput(x, f.nfe)


def dpmpp_2m_sample(
    predict: X0Predictor,
    interp: Interpolant,
    x: Tensor,
    ts: Tensor,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep data prediction in ``lambda``."""
    f = _Counter(predict)
    prev_x0, prev_h = None, None
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        a, s = alpha_sigma(interp, t)
        an, sn = alpha_sigma(interp, tn)
        x0 = f(x, t.to(x.dtype))
        if sn == 0.0:
            x = an * x0
            break
        h = math.log(an / sn) - math.log(a / s)
        d = x0
        if prev_x0 is not None:
            r = prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
        x = (sn / s) * x - an * math.expm1(-h) * d
        prev_x0, prev_h = x0, h
    return SampleOutput(x, f.nfe)


SAMPLERS: dict[str, Callable[..., SampleOutput]] = {
    "ddim": ddim_sample,
    "ddim-eta1": lambda p, i, x, ts, generator=None: ddim_sample(p, i, x, ts, 1.0, generator),
    "ddpm": ddpm_sample,
    "euler": euler_sample,
    "heun": heun_sample,
    "dpmpp-2m": dpmpp_2m_sample,
}


# The fewest predictor evaluations with which a sampler is usable, and why: below it the sampler is
# known to diverge. Measured with the shipped model models/sr4-tiny-16px (sr4, s_y 0.05, VE, EDM grid,
# 4 skimage photographs x 4 samples, mean PSNR of the samples): Heun gives 18.9 dB at 1-2 NFE (one
# step: a single x0 prediction), 5.1 dB at 3-4, 7.5 dB at 5-6 (saturated noise, below the 18-19 dB
# of every other sampler at any NFE), 11.3 dB at 7-8, 14.0 dB at 10, 17.0 dB at 15, 18.0 dB at 35;
# DDIM, Euler, DDPM and DPM++(2M) stay within 17.9-19.5 dB from 1 NFE on. The exactness report
# (README) agrees: Heun at 10 NFE is 36-1244x the Monte-Carlo floor (the prior alone is ~176x).
MIN_NFE: dict[str, tuple[int, str]] = {
    "heun": (
        7,
        "Heun on the EDM grid takes (NFE + 1) // 2 steps from the largest noise level (s/a = 80 for VE): with "
        "3-6 NFE that is 2-3 steps, and its second-order correction over such steps diverges (samples are "
        "saturated noise, 5-8 dB on the shipped model); it is still far from converged below ~20 NFE. Use "
        "20 NFE or more (35 is the default), or a first-order sampler (ddim, euler, dpmpp-2m) for few NFE",
    ),
}


def check_nfe(sampler: str, nfe: int) -> str | None:
    """``None`` if ``sampler`` is usable with ``nfe`` evaluations, else why not (see :data:`MIN_NFE`)."""
    if sampler in MIN_NFE and nfe < MIN_NFE[sampler][0]:
        least, why = MIN_NFE[sampler]
        return f"sampler {sampler} needs at least {least} NFE, got {nfe}: {why}"
    return None


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Grid steps that spend ``nfe`` evaluations (Heun: ``2 steps - 1``)."""
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def sample(
    predict: X0Predictor,
    interp: Interpolant,
    shape: tuple[int, ...],
    sampler: str = "ddim",
    nfe: int = 50,
    grid: str = "edm",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SampleOutput:
    """Draw ``shape[0]`` samples with ``sampler`` spending about ``nfe`` predictor evaluations."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    problem = check_nfe(sampler, nfe)
    if problem is not None:  # a warning, not an error: tests and sweeps may run it on purpose (the CLI refuses)
        warnings.warn(problem, UnstableSamplerWarning, stacklevel=2)
    ts = time_grid(interp, steps_for_nfe(sampler, nfe), kind=grid)
    x = initial_noise(interp, shape, generator, dtype, device)
    return SAMPLERS[sampler](predict, interp, x, ts, generator=generator)
