"""Training objectives (METHOD.md, "The EPS denoiser and its training objective").

For ``x0 ~ data``, a noise ratio ``rho = s/a``, ``e ~ N(0, I)``, an operator ``A`` from the task
distribution and ``y = A x0 + s_y n``, form ``x_t / a = x0 + rho e`` and the pivot

    (m, S_t) = pivot(x_t / a, rho, y, s_y),      m | x0 ~ N(x0, S_t),

and minimise the EDM-weighted regression loss

    L = E[ lambda(rho) * mean_pixels || D_theta(m; S_t) - x0 ||^2 ],
    lambda(rho) = (rho^2 + sd^2) / (rho sd)^2,      log rho ~ N(P_mean, P_std^2)

(EDM: ``P_mean = -1.2``, ``P_std = 1.2``, ``sd = 0.5``). Its minimiser is the MMSE denoiser
``D*(m; S_t) = E[x0 | m]``. ``lambda`` is EDM's weight at the unmeasured-direction noise level
``rho``: it makes the loss of the unmeasured (hardest) directions unit-scale, while measured
directions, whose error is at most ``l_i <= rho^2``, weigh less.

The objective is interpolant-agnostic: the EPS denoiser depends on ``(x_t, t)`` only through ``m``
and ``S_t``, which depend on ``(a, s)`` only through ``rho = s/a`` and ``x_t / a``. So drawing
``rho`` directly (no interpolant, no time) trains one network that serves every interpolant and
sampler (VP, VE, flows, ...), exactly as an EDM denoiser does.

With ``A = 0`` (``operator=None``) the EPS loss is the unconditional EDM denoiser loss
(``m = x_t/a``, ``S_t = rho^2 I``). The training-based baseline's loss
(:func:`exactps.conditional.conditional_loss`) uses the same draws (:func:`draw_training_example`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.batch import as_batch, per_batch
from exactps.covariance import IsotropicNoise, PivotNoise
from exactps.operators.base import LinearOperator

__all__ = [
    "NetworkInputs",
    "TrainingDraw",
    "draw_training_example",
    "edm_weight",
    "eps_loss",
    "pivot_or_isotropic",
    "regression_loss",
    "sample_rho",
    "sample_sigma_y",
    "sigma_y_range",
    "weighted_mse",
]

#: ``(x_t/a, rho, A, y, s_y) -> args``: how a network is fed one draw (``A``, ``y`` None without a
#: measurement): :func:`pivot_or_isotropic` for EPS, the baseline's in :mod:`exactps.conditional`.
NetworkInputs = Callable[[Tensor, Tensor, "LinearOperator | None", "Tensor | None", Tensor], tuple]


def sigma_y_range(spec: float | Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` of a fixed ``s_y`` (``lo = hi``) or of a ``(lo, hi)`` range."""
    if isinstance(spec, int | float):
        return float(spec), float(spec)
    if len(spec) != 2:
        raise ValueError(f"sigma_y must be a value or a (lo, hi) pair, got {spec}")
    return float(spec[0]), float(spec[1])


def sample_rho(
    batch: int,
    generator: torch.Generator | None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """EDM's training noise levels: ``log rho ~ N(P_mean, P_std^2)``, shape ``(batch,)``."""
    z = torch.randn(batch, generator=generator, device=device, dtype=dtype)
    return torch.exp(p_mean + p_std * z)


def sample_sigma_y(
    spec: float | Sequence[float],
    batch: int,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``s_y`` per sample, shape ``(batch,)``: fixed, or drawn from ``(lo, hi)`` (log-uniform if ``lo > 0``)."""
    lo, hi = sigma_y_range(spec)
    if lo == hi:
        return torch.full((batch,), lo, device=device, dtype=dtype)
    u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
    if lo > 0:
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


def edm_weight(rho: Tensor, sigma_data: float = 0.5) -> Tensor:
    """``lambda(rho) = (rho^2 + sd^2) / (rho sd)^2`` (EDM's loss weight)."""
    return (rho**2 + sigma_data**2) / (rho * sigma_data) ** 2


def weighted_mse(pred: Tensor, x0: Tensor, rho: Tensor, sigma_data: float = 0.5) -> Tensor:
    """``mean_b lambda(rho_b) mean_pixels (pred_b - x0_b)^2``."""
    per_sample = (pred.to(x0.dtype) - x0).square().flatten(1).mean(1)
    return (edm_weight(rho, sigma_data) * per_sample).mean()


@dataclass
class TrainingDraw:
    """One draw of the objective: ``rho``, ``x_t/a = x0 + rho e``, and ``y = A x0 + s_y n`` with its
    ``s_y`` (``y`` is None when there is no operator)."""

    rho: Tensor
    x_scaled: Tensor
    sigma_y: Tensor
    y: Tensor | None


def draw_training_example(
    x0: Tensor,
    operator: LinearOperator | None,
    sigma_y: float | Tensor,
    generator: torch.Generator | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> TrainingDraw:
    """``rho ~ logN(P_mean, P_std^2)``, ``e ~ N(0, I)``, then ``n ~ N(0, I)`` for ``y`` (in this order
    from ``generator``, so every objective sees the same draws)."""
    rho = sample_rho(x0.shape[0], generator, p_mean, p_std, x0.device, x0.dtype)
    e = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    sy = as_batch(sigma_y, x0)
    y = None if operator is None else operator.measure(x0, sy, generator)
    return TrainingDraw(rho, x0 + per_batch(rho, x0.ndim) * e, sy, y)


def pivot_or_isotropic(
    x_scaled: Tensor, rho: Tensor, operator: LinearOperator | None, y: Tensor | None, sigma_y: Tensor
) -> tuple[Tensor, PivotNoise]:
    """The EPS denoiser's inputs ``(m, S_t)``: the pivot, or ``(x_t/a, rho^2 I)`` without a measurement."""
    if operator is None or y is None:
        return x_scaled, IsotropicNoise(rho)
    return operator.pivot(x_scaled, rho, y, sigma_y)


def regression_loss(
    model: Callable[..., Tensor],
    inputs: NetworkInputs,
    x0: Tensor,
    operator: LinearOperator | None,
    sigma_y: float | Tensor,
    generator: torch.Generator | None = None,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma_data: float = 0.5,
) -> Tensor:
    """``mean_b lambda(rho_b) mean ||model(*inputs(x_t/a, rho, A, y, s_y)) - x0||^2`` on one
    :func:`draw_training_example`: the loss of every objective, which differ only in ``inputs``."""
    d = draw_training_example(x0, operator, sigma_y, generator, p_mean, p_std)
    return weighted_mse(model(*inputs(d.x_scaled, d.rho, operator, d.y, d.sigma_y)), x0, d.rho, sigma_data)


def eps_loss(
    model: Callable[[Tensor, PivotNoise], Tensor],
    x0: Tensor,
    operator: LinearOperator | None,
    sigma_y: float | Tensor,
    generator: torch.Generator | None = None,
    **kw: float,
) -> Tensor:
    """The EPS training loss of one batch: ``mean_b lambda(rho_b) mean ||model(m, S_t) - x0||^2`` with
    ``(m, S_t) = pivot(x_t/a, rho, y, s_y)`` (``m = x_t/a``, ``S_t = rho^2 I`` if ``operator`` is None).
    ``kw``: ``p_mean``, ``p_std``, ``sigma_data`` of :func:`regression_loss`."""
    return regression_loss(model, pivot_or_isotropic, x0, operator, sigma_y, generator, **kw)
