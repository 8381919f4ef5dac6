"""Distances between two sample sets (or a sample set and a distribution): sliced W2 and atom TV for the
exactness report, and FID, KID and MMD² between sets of images or of their features.

FID and KID take feature matrices ``(N, D)``, so any extractor ``images -> features`` can be used
(:class:`exactps.metrics.InceptionFeatures` for the usual Inception pool features).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exactps.metrics._checks import check_features
from exactps.metrics.kernels import (
    gaussian_kernel,
    median_bandwidth,
    mmd2_unbiased,
    polynomial_kernel,
    sq_distances,
)

__all__ = ["atom_tv", "fid", "frechet_distance", "gaussian_fit", "gaussian_kl", "kid", "mmd2", "sliced_w2"]


def sliced_w2(x: Tensor, y: Tensor, n_proj: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance ``sqrt(E_u W2^2(<u, x>, <u, y>))`` over ``n_proj`` random directions.

    ``x`` and ``y`` are sample sets with the same number of samples (flattened per sample).
    """
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    yf = y.reshape(y.shape[0], -1).to(torch.float64)
    if xf.shape != yf.shape:
        raise ValueError(f"sample sets must have equal shapes, got {tuple(xf.shape)} and {tuple(yf.shape)}")
    u = torch.randn(xf.shape[1], n_proj, generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    px, _ = torch.sort(xf @ u, dim=0)
    py, _ = torch.sort(yf @ u, dim=0)
    return math.sqrt(((px - py) ** 2).mean().item())


def atom_tv(indices: Tensor, weights: Tensor) -> float:
    """Total variation ``1/2 sum_k |freq_k - w_k|`` between atom frequencies of samples and ``weights``."""
    freq = torch.bincount(indices, minlength=weights.shape[0]).to(torch.float64) / indices.numel()
    return 0.5 * (freq - weights.to(torch.float64)).abs().sum().item()


# -- FID ----------------------------------------------------------------------------------------------


def _check_feature_pair(a: Tensor, b: Tensor, min_rows: int = 2) -> None:
    check_features("features_a", a, min_rows)
    check_features("features_b", b, min_rows)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")


def _psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clamped at 0)."""
    evals, evecs = torch.linalg.eigh(s)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def _trace_sqrt_product_cov(s1: Tensor, s2: Tensor) -> Tensor:
    """``Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}``: eigenvalues of a symmetric PSD matrix, float64."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    return torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()


def _trace_sqrt_product_data(ac: Tensor, bc: Tensor) -> Tensor:
    """``Tr (S1 S2)^{1/2}`` for ``S1 = Ac^T Ac / (n-1)``, ``S2 = Bc^T Bc / (m-1)`` (centred data, float64):
    the nuclear norm of ``Bc Ac^T`` over ``sqrt((n-1)(m-1))``. No square root of a rounded eigenvalue is
    taken, so the rank-deficient case (fewer points than dimensions) stays accurate."""
    scale = math.sqrt((ac.shape[0] - 1) * (bc.shape[0] - 1))
    return torch.linalg.svdvals(bc @ ac.T).sum() / scale


def _frechet(mu1: Tensor, mu2: Tensor, tr1: Tensor, tr2: Tensor, tr_sqrt: Tensor) -> float:
    return ((mu1 - mu2).square().sum() + tr1 + tr2 - 2 * tr_sqrt).item()


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet distance between Gaussians ``|mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (float64).

    The square root is taken as ``(S1^{1/2} S2 S1^{1/2})^{1/2}``, which has the trace of ``(S1 S2)^{1/2}`` and
    is symmetric, so only symmetric eigendecompositions are used (no complex parts to drop)."""
    mu1, mu2, s1, s2 = (t.to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    return _frechet(mu1, mu2, s1.trace(), s2.trace(), _trace_sqrt_product_cov(s1, s2))


def gaussian_kl(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """``KL(N(mu1, S1) || N(mu2, S2)) = (Tr(S2^{-1} S1) + (mu2 - mu1)^T S2^{-1} (mu2 - mu1) - d
    + log det S2 - log det S1) / 2`` in nats (float64, Cholesky factors; both covariances positive
    definite)."""
    mu1, mu2, s1, s2 = (t.to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    l1, l2 = _cholesky(s1, "cov1"), _cholesky(s2, "cov2")
    d = mu1.shape[0]
    m = torch.linalg.solve_triangular(l2, l1, upper=False)  # L2^{-1} L1: Tr(S2^{-1} S1) = ||M||_F^2
    z = torch.linalg.solve_triangular(l2, (mu2 - mu1)[:, None], upper=False)
    log_det = 2.0 * (l2.diagonal().log().sum() - l1.diagonal().log().sum())
    return 0.5 * float(m.square().sum() + z.square().sum() - d + log_det)


def _cholesky(cov: Tensor, name: str) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError(f"{name} is not positive definite (a Gaussian KL needs invertible covariances)")
    return chol


def gaussian_fit(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (float64) of ``samples`` ``(N, ...)``, flattened per sample."""
    x = samples.reshape(samples.shape[0], -1).to(torch.float64)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {x.shape[0]}")
    c = x - x.mean(0)
    return x.mean(0), c.T @ c / (x.shape[0] - 1)


def fid(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet Inception Distance between two feature sets ``(N, D)``, ``(M, D)`` (``N, M >= 2``):
    ``|mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` with the feature means and unbiased covariances
    (as ``numpy.cov``). Computed in float64; ``Tr (S_a S_b)^{1/2}`` from the centred data (a singular
    value decomposition of ``M x N``) when both sets have at most ``D`` points, else from the covariances
    (:func:`frechet_distance`). FID is biased upward for small ``N``: compare methods at equal ``N``."""
    _check_feature_pair(features_a, features_b)
    a, b = features_a.to(torch.float64), features_b.to(torch.float64)
    (n, d), m = a.shape, b.shape[0]
    ac, bc = a - a.mean(0), b - b.mean(0)
    if max(n, m) > d:
        return frechet_distance(a.mean(0), ac.T @ ac / (n - 1), b.mean(0), bc.T @ bc / (m - 1))
    tr_a, tr_b = ac.square().sum() / (n - 1), bc.square().sum() / (m - 1)
    return _frechet(a.mean(0), b.mean(0), tr_a, tr_b, _trace_sqrt_product_data(ac, bc))


# -- KID and MMD² -------------------------------------------------------------------------------------


def kid(
    features_a: Tensor,
    features_b: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance ``(mean, std)`` over ``subsets`` random subsets (Bińkowski et al. 2018).

    Each subset draws ``m = min(subset_size, N, M)`` rows of each set without replacement and computes the
    unbiased MMD² with the cubic kernel ``k(x, y) = (x·y / d + 1)³``:
    ``1/(m(m-1)) sum_{i≠j} [k(a_i, a_j) + k(b_i, b_j)] - 2/m² sum_{i,j} k(a_i, b_j)``.
    ``std`` is the spread over subsets (``ddof=0``, as torch-fidelity), not a standard error."""
    _check_feature_pair(features_a, features_b)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(subset_size, features_a.shape[0], features_b.shape[0])
    if m < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    values = torch.stack([_kid_subset(features_a, features_b, m, generator) for _ in range(subsets)])
    return values.mean().item(), values.std(correction=0).item()


def _kid_subset(a: Tensor, b: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    x = a[torch.randperm(a.shape[0], generator=generator)[:m].to(a.device)]
    y = b[torch.randperm(b.shape[0], generator=generator)[:m].to(b.device)]
    return mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD² between sample sets ``x (N, ...)`` and ``y (M, ...)`` (flattened to ``(N, D)``, ``N, M >= 2``)
    with the Gaussian kernel ``k(u, v) = exp(-|u - v|² / (2 h²))``:
    ``mean_{i≠i'} k(x_i, x_i') + mean_{j≠j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j)``.

    ``h = bandwidth``, or by the median heuristic ``h = median |z_i - z_j|`` over the distinct pairs of the
    pooled set ``z = x ∪ y`` when None. Unbiased for a fixed bandwidth (about 0, either sign, for two draws of
    one distribution); the data-chosen median bandwidth adds a small bias."""
    xf, yf = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    _check_feature_pair(xf, yf)
    h = median_bandwidth(torch.cat([xf, yf])) if bandwidth is None else bandwidth
    k = [gaussian_kernel(sq_distances(u, v), h) for u, v in ((xf, xf), (yf, yf), (xf, yf))]
    return mmd2_unbiased(*k).item()
