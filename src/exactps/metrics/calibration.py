"""Per-image scores of an ensemble of ``J`` posterior samples against the truth: the fair CRPS, the MMD² kernel
score and the coverage of central intervals.

Shapes: ``samples (J, B, ...)`` and ``truth (B, ...)`` (images ``(B, C, H, W)`` or features ``(B, D)``); each
score is ``(B,)``. All are computed in float64 and returned in the dtype of ``samples``.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import t as student_t
from torch import Tensor

from exactps.metrics._checks import check_ensemble
from exactps.metrics.kernels import gaussian_kernel, median_bandwidth, off_diagonal_mean, sq_distances

__all__ = ["coverage", "crps", "mmd2_score", "prediction_coverage", "prediction_half_width"]


def _per_image_mean(v: Tensor, like: Tensor) -> Tensor:
    """Mean over the element dimensions of ``v (B, ...)`` → ``(B,)``, in the dtype of ``like`` when it is floating."""
    out = v.reshape(v.shape[0], -1).mean(1)
    return out.to(like.dtype) if like.is_floating_point() else out


def mean_abs_difference(samples: Tensor) -> Tensor:
    """``1/(J(J-1)) sum_{j≠k} |x_j - x_k|`` over the first dimension, per element, in ``O(J log J)``:
    with the sorted values ``x_(1) <= ... <= x_(J)``, ``sum_{j≠k} |x_j - x_k| = 2 sum_i (2i - J - 1) x_(i)``."""
    j = samples.shape[0]
    s, _ = torch.sort(samples, dim=0)
    w = 2 * torch.arange(1, j + 1, dtype=s.dtype, device=s.device) - j - 1
    return 2 * torch.tensordot(w, s, dims=1) / (j * (j - 1))


def crps(samples: Tensor, truth: Tensor) -> Tensor:
    """Fair (unbiased) ensemble CRPS per image, averaged over the elements (pixels or feature dimensions):
    ``CRPS_fair = (1/J) sum_j |x_j - x| - 1/(2J(J-1)) sum_{j≠k} |x_j - x_k|`` per element (Ferro 2014).

    Unbiased for the CRPS of the sampler's predictive distribution, whatever ``J >= 2``; proper, so the exact
    posterior minimises it in expectation. In the units of the data (``[-1, 1]`` images: multiply by 127.5
    for 0-255 units). The pair sum is computed by sorting, ``O(J log J)`` time and ``O(J)`` memory per element."""
    check_ensemble(samples, truth)
    x, y = samples.to(torch.float64), truth.to(torch.float64)
    per_element = (x - y).abs().mean(0) - 0.5 * mean_abs_difference(x)
    return _per_image_mean(per_element, samples)


def mmd2_score(samples: Tensor, truth: Tensor, bandwidth: float | None = None) -> Tensor:
    """MMD² kernel score per image (BENCHMARK.md section 3): for samples ``x^(j)`` and truth ``x`` (flattened),
    ``1/(J(J-1)) sum_{j≠k} k(x^j, x^k) - (2/J) sum_j k(x^j, x)``, the unbiased MMD² between the ensemble and the
    point mass at the truth with the constant truth-truth term ``k(x, x) = 1`` dropped. Lower is better.

    Kernel ``k(u, v) = exp(-|u - v|² / (2 h²))``; ``h = bandwidth``, or per image the median heuristic
    ``h = median_{j<k} |x^j - x^k|`` over the samples alone (the truth does not choose the kernel it is scored
    with). With a fixed ``h`` the score is proper; the median heuristic makes it scale-free but lets the
    forecast choose its kernel, so give one fixed bandwidth when propriety matters."""
    check_ensemble(samples, truth)
    j, b = samples.shape[:2]
    x = samples.reshape(j, b, -1).transpose(0, 1)  # (B, J, D)
    y = truth.reshape(b, 1, -1)
    h = median_bandwidth(x) if bandwidth is None else bandwidth
    k_xx = gaussian_kernel(sq_distances(x, x), h)
    k_xy = gaussian_kernel(sq_distances(x, y), h)
    score = off_diagonal_mean(k_xx) - 2 * k_xy.mean((-2, -1))
    return score.to(samples.dtype) if samples.is_floating_point() else score


def _sorted_quantile(s: Tensor, q: float) -> Tensor:
    """Quantile ``q`` over the first dimension of sorted values, with linear interpolation (``numpy.quantile``)."""
    pos = q * (s.shape[0] - 1)
    lo = int(pos)
    hi = min(lo + 1, s.shape[0] - 1)
    frac = pos - lo
    return s[lo] * (1 - frac) + s[hi] * frac


def coverage(samples: Tensor, truth: Tensor, level: float = 0.9) -> Tensor:
    """Fraction of elements per image whose truth lies in the central ``level`` interval of the samples:
    ``mean_p 1[q_{(1-level)/2} <= x_p <= q_{(1+level)/2}]`` with the empirical quantiles ``q`` of the ``J``
    samples of element ``p`` (linear interpolation, as ``numpy.quantile``).

    For a calibrated sampler the expected coverage is about ``level`` (for large ``J``; with few samples the
    interval between empirical quantiles is narrower: for ``J = 4`` Gaussian samples and ``level = 0.9`` it expects
    about 0.56). Too narrow ensembles cover less, too wide ones more."""
    check_ensemble(samples, truth)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s, _ = torch.sort(samples.to(torch.float64), dim=0)
    y = truth.to(torch.float64)
    inside = (_sorted_quantile(s, (1 - level) / 2) <= y) & (y <= _sorted_quantile(s, (1 + level) / 2))
    return _per_image_mean(inside.to(torch.float64), samples)


def prediction_half_width(samples: Tensor, level: float = 0.9) -> Tensor:
    """Half-width of the central ``level`` prediction interval of a new draw, per element:
    ``t_{J-1, (1+level)/2} s sqrt(1 + 1/J)`` with ``s`` the samples' standard deviation (``J - 1`` in the
    denominator) and ``t`` Student's quantile: the interval ``mean ± half-width`` holds a new draw of a
    Gaussian with probability exactly ``level`` whatever ``J >= 2``."""
    j = samples.shape[0]
    if j < 2:
        raise ValueError(f"a prediction interval needs J >= 2 samples, got {j}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    q = float(student_t.ppf((1 + level) / 2, j - 1))
    return q * math.sqrt(1 + 1 / j) * samples.to(torch.float64).std(0)


def prediction_coverage(samples: Tensor, truth: Tensor, level: float = 0.9) -> Tensor:
    """Fraction of elements per image whose truth lies in the ``level`` prediction interval
    ``mean ± t_{J-1,(1+level)/2} s sqrt(1 + 1/J)`` of the ``J`` samples (:func:`prediction_half_width`).

    If the truth is one more draw of the distribution the samples come from (a calibrated posterior
    sampler) and that distribution is Gaussian per element, the expected coverage is ``level`` at any
    ``J`` (unlike :func:`coverage`, whose empirical-quantile interval is too narrow for small ``J``)."""
    check_ensemble(samples, truth)
    s = samples.to(torch.float64)
    inside = (truth.to(torch.float64) - s.mean(0)).abs() <= prediction_half_width(s, level)
    return _per_image_mean(inside.to(torch.float64), samples)
