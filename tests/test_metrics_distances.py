"""FID, KID and MMD² between sample sets, on random feature matrices (no network needed).

References: scipy.linalg.sqrtm in the FID formula, the closed-form Fréchet distance of two Gaussians with
diagonal covariances, explicit double loops for the unbiased MMD² estimators, and unbiasedness over
repeated draws (mean within 4 standard errors of 0).
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import pdist

from exactps.metrics import fid, frechet_distance, gaussian_fit, gaussian_kl, kid, mmd2
from exactps.metrics.kernels import median_bandwidth


def _mixing(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)


def _correlated(n: int, d: int, g: torch.Generator, shift: float = 0.0) -> torch.Tensor:
    """``n`` draws of ``N(shift, M^T M)`` for a fixed random ``M`` (the same distribution at every call)."""
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ _mixing(d) + shift


def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """The usual FID code (TTUR / pytorch-fid): np.cov and scipy.linalg.sqrtm of the product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# -- FID ----------------------------------------------------------------------------------------------

# (N, M, D): fewer points than dimensions (singular value route) and more (covariance route)
SIZES = [(30, 40, 64), (300, 250, 16)]


@pytest.mark.parametrize(("n", "m", "d"), SIZES)
def test_fid_of_a_set_with_itself_is_zero(n, m, d):
    a = _correlated(n, d, torch.Generator().manual_seed(n))
    scale = a.var(0).sum().item()
    assert abs(fid(a, a)) < 1e-9 * scale
    assert abs(fid(a.float(), a.float())) < 1e-5 * scale


@pytest.mark.parametrize(("n", "m", "d"), SIZES)
def test_fid_matches_the_formula_with_scipy_sqrtm(n, m, d):
    g = torch.Generator().manual_seed(d)
    a, b = _correlated(n, d, g), _correlated(m, d, g, shift=0.3) * 1.5
    got = fid(a, b)
    assert got == pytest.approx(_fid_scipy(a.numpy(), b.numpy()), rel=1e-7)
    assert got == pytest.approx(fid(b, a), rel=1e-10)


def test_the_two_routes_agree():
    """With fewer points than dimensions the covariance route takes square roots of rounded zero eigenvalues
    (errors ~1e-8 relative); the singular value route does not."""
    g = torch.Generator().manual_seed(3)
    a, b = _correlated(20, 32, g), _correlated(25, 32, g, shift=0.1)
    cov = lambda t: torch.cov(t.T)  # noqa: E731
    assert fid(a, b) == pytest.approx(frechet_distance(a.mean(0), cov(a), b.mean(0), cov(b)), rel=1e-7)


def test_fid_of_two_gaussians_approaches_the_closed_form():
    """Diagonal covariances: ``|mu1 - mu2|² + sum_i (sqrt(a_i) - sqrt(b_i))²``."""
    g = torch.Generator().manual_seed(0)
    d, n = 4, 100_000
    f64 = dict(dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0, 0.5], **f64), torch.tensor([0.5, 1.0, 0.0, 0.0], **f64)
    var1, var2 = torch.tensor([1.0, 2.0, 0.5, 1.0], **f64), torch.tensor([2.0, 1.0, 0.5, 0.25], **f64)
    a = mu1 + var1.sqrt() * torch.randn(n, d, generator=g, dtype=torch.float64)
    b = mu2 + var2.sqrt() * torch.randn(n, d, generator=g, dtype=torch.float64)
    closed = ((mu1 - mu2) ** 2).sum() + ((var1.sqrt() - var2.sqrt()) ** 2).sum()
    assert fid(a, b) == pytest.approx(closed.item(), abs=0.03)
    assert frechet_distance(mu1, var1.diag(), mu2, var2.diag()) == pytest.approx(closed.item(), rel=1e-12)


# -- KID ----------------------------------------------------------------------------------------------


def _mmd2_loops(x: np.ndarray, y: np.ndarray, k) -> float:
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kid_on_whole_sets_is_the_unbiased_mmd2_with_the_cubic_kernel():
    g = torch.Generator().manual_seed(1)
    a, b = _correlated(12, 5, g), _correlated(12, 5, g, shift=0.4)
    cubic = lambda u, v: (u @ v / 5 + 1) ** 3  # noqa: E731
    mean, std = kid(a, b, subsets=3, subset_size=12, generator=g)  # every subset is a permutation of the sets
    assert mean == pytest.approx(_mmd2_loops(a.numpy(), b.numpy(), cubic), rel=1e-10)
    assert std == pytest.approx(0, abs=1e-12)


def test_kid_is_unbiased_and_sees_a_shift():
    g = torch.Generator().manual_seed(2)
    same = torch.tensor(
        [kid(_correlated(40, 8, g), _correlated(40, 8, g), subsets=1, generator=g)[0] for _ in range(300)]
    )
    se = same.std().item() / math.sqrt(len(same))
    assert abs(same.mean().item()) < 4 * se
    shifted = kid(_correlated(40, 8, g), _correlated(40, 8, g, shift=0.5), subsets=20, generator=g)[0]
    assert shifted > 20 * se


def test_kid_subsets_are_reproducible_and_spread():
    a, b = (_correlated(50, 4, torch.Generator().manual_seed(s)) for s in (5, 6))
    first = kid(a, b, subsets=10, subset_size=20, generator=torch.Generator().manual_seed(0))
    assert first == kid(a, b, subsets=10, subset_size=20, generator=torch.Generator().manual_seed(0))
    assert first[1] > 0


# -- MMD² ---------------------------------------------------------------------------------------------


def test_mmd2_matches_the_double_loop_and_the_median_heuristic_matches_pdist():
    g = torch.Generator().manual_seed(4)
    x, y = _correlated(9, 3, g), _correlated(7, 3, g, shift=0.5)
    rbf = lambda u, v: math.exp(-((u - v) ** 2).sum() / (2 * 0.8**2))  # noqa: E731
    assert mmd2(x, y, bandwidth=0.8) == pytest.approx(_mmd2_loops(x.numpy(), y.numpy(), rbf), rel=1e-10)
    pooled = torch.cat([x, y])
    assert median_bandwidth(pooled).item() == pytest.approx(np.median(pdist(pooled.numpy())), rel=1e-12)
    h = float(np.median(pdist(pooled.numpy())))
    assert mmd2(x, y) == pytest.approx(mmd2(x, y, bandwidth=h), rel=1e-12)


def test_mmd2_flattens_image_sets():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 1, 2, 2, generator=g), torch.randn(5, 1, 2, 2, generator=g)
    assert mmd2(x, y) == pytest.approx(mmd2(x.flatten(1), y.flatten(1)))


@pytest.mark.parametrize("bandwidth", [1.5, None])
def test_mmd2_is_about_zero_for_one_distribution_and_positive_for_another(bandwidth):
    g = torch.Generator().manual_seed(6)
    same = torch.tensor([mmd2(_correlated(30, 5, g), _correlated(30, 5, g), bandwidth) for _ in range(200)])
    shifted = torch.tensor([mmd2(_correlated(30, 5, g), _correlated(30, 5, g, 0.5), bandwidth) for _ in range(20)])
    se = same.std().item() / math.sqrt(len(same))
    assert shifted.mean() > 10 * se
    if bandwidth is not None:  # unbiased for a fixed kernel
        assert abs(same.mean().item()) < 4 * se
    else:  # the data-chosen bandwidth adds a small bias
        assert abs(same.mean().item()) < 0.05 * shifted.mean().item()


def _spd(d: int, seed: int) -> torch.Tensor:
    m = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return m @ m.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_gaussian_kl_matches_torch_distributions():
    d = 6
    mu1, mu2 = (torch.randn(d, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (1, 2))
    s1, s2 = _spd(d, 3), _spd(d, 4)
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mu1, s1), torch.distributions.MultivariateNormal(mu2, s2)
    )
    assert math.isclose(gaussian_kl(mu1, s1, mu2, s2), float(ref), rel_tol=1e-10)
    assert abs(gaussian_kl(mu1, s1, mu1, s1)) < 1e-12
    with pytest.raises(ValueError, match="cov1 is not positive definite"):
        gaussian_kl(mu1, torch.zeros(d, d, dtype=torch.float64), mu2, s2)


def test_gaussian_fit_is_the_sample_mean_and_unbiased_covariance():
    x = torch.randn(40, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    mean, cov = gaussian_fit(x)
    flat = x.reshape(40, -1).to(torch.float64)
    torch.testing.assert_close(mean, flat.mean(0))
    torch.testing.assert_close(cov, torch.cov(flat.T))
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_fit(x[:1])
