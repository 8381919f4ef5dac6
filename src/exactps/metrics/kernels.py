"""Kernels and the unbiased MMD² estimator shared by :func:`~exactps.metrics.mmd2`,
:func:`~exactps.metrics.mmd2_score` and :func:`~exactps.metrics.kid`. Everything is computed in float64.

* squared distances ``D_ij = |x_i - y_j|²``;
* Gaussian (RBF) kernel ``k(x, y) = exp(-|x - y|² / (2 h²))`` with bandwidth ``h``;
* median heuristic ``h = median_{i<j} |x_i - x_j|`` over the distinct pairs of one point set;
* cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³`` (KID, ``d`` = feature dimension);
* unbiased MMD² ``1/(n(n-1)) sum_{i≠i'} k(x_i, x_i') + 1/(m(m-1)) sum_{j≠j'} k(y_j, y_j')
  - 2/(nm) sum_{i,j} k(x_i, y_j)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "gaussian_kernel",
    "median_bandwidth",
    "mmd2_unbiased",
    "off_diagonal_mean",
    "polynomial_kernel",
    "sq_distances",
]

_MIN_BANDWIDTH = 1e-12


def sq_distances(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|²`` for ``x (..., N, D)`` and ``y (..., M, D)`` → ``(..., N, M)`` (float64, clamped at 0)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    xx = (x * x).sum(-1).unsqueeze(-1)
    yy = (y * y).sum(-1).unsqueeze(-2)
    return (xx + yy - 2 * x @ y.transpose(-1, -2)).clamp_min(0)


def _median(v: Tensor) -> Tensor:
    """Median over the last dimension, averaging the two middle values for an even count (as ``numpy.median``)."""
    s, _ = torch.sort(v, dim=-1)
    n = s.shape[-1]
    return 0.5 * (s[..., (n - 1) // 2] + s[..., n // 2])


def median_bandwidth(x: Tensor) -> Tensor:
    """Median heuristic ``h = median_{i<j} |x_i - x_j|`` for ``x (..., N, D)`` with ``N >= 2`` → ``(...)``.

    Floored at 1e-12 so that a set of identical points still gives a usable kernel."""
    n = x.shape[-2]
    if n < 2:
        raise ValueError(f"the median heuristic needs at least 2 points, got {n}")
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    return _median(sq_distances(x, x)[..., i, j].sqrt()).clamp_min(_MIN_BANDWIDTH)


def gaussian_kernel(sq_dist: Tensor, bandwidth: Tensor | float) -> Tensor:
    """``exp(-D / (2 h²))`` from squared distances ``D (..., N, M)`` and bandwidths ``h`` (a float or ``(...)``)."""
    h = torch.as_tensor(bandwidth, dtype=torch.float64, device=sq_dist.device)
    h2 = (h * h).reshape(*h.shape, 1, 1)
    return torch.exp(-sq_dist / (2 * h2))


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """KID's cubic kernel ``(x·y / d + 1)³`` for ``x (N, d)``, ``y (M, d)`` → ``(N, M)`` (float64)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    return (x @ y.T / x.shape[-1] + 1) ** 3


def off_diagonal_mean(k: Tensor) -> Tensor:
    """``1/(n(n-1)) sum_{i≠j} k_ij`` of square matrices ``k (..., n, n)``, ``n >= 2``."""
    n = k.shape[-1]
    return (k.sum((-2, -1)) - k.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))


def mmd2_unbiased(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> Tensor:
    """Unbiased MMD² from the kernel matrices ``k(x, x) (..., n, n)``, ``k(y, y) (..., m, m)``, ``k(x, y) (..., n, m)``:
    ``mean_{i≠i'} kxx + mean_{j≠j'} kyy - 2 mean kxy`` (``n, m >= 2``)."""
    return off_diagonal_mean(kxx) + off_diagonal_mean(kyy) - 2 * kxy.mean((-2, -1))
