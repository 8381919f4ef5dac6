"""Per-image ensemble scores: fair CRPS, the MMD² kernel score and interval coverage.

References: the direct O(J²) CRPS formula, the closed-form CRPS of a Gaussian (the fair estimator is
unbiased, so means over many images agree within 4 standard errors), explicit loops for the kernel
score with ``numpy``'s median of ``scipy``'s pairwise distances, ``numpy.quantile`` for coverage, and the
ordering of scores for true, shifted and under-dispersed Gaussian ensembles.
"""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from scipy.stats import norm

from exactps.metrics import coverage, crps, mmd2_score, prediction_coverage, prediction_half_width

F64 = dict(dtype=torch.float64)


def _crps_direct(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``(1/J) sum_j |x_j - x| - 1/(2J(J-1)) sum_{j≠k} |x_j - x_k|`` with all pairs in memory, per image."""
    j = samples.shape[0]
    skill = (samples - truth).abs().mean(0)
    pairs = (samples[:, None] - samples[None]).abs().sum((0, 1))  # the diagonal is 0
    return (skill - pairs / (2 * j * (j - 1))).flatten(1).mean(1)


def _crps_gaussian(mu: float, sigma: float, y: torch.Tensor) -> torch.Tensor:
    """``sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]``, ``z = (y - mu) / sigma`` (Gneiting et al. 2005)."""
    z = ((y - mu) / sigma).numpy()
    return torch.from_numpy(sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi)))


# -- CRPS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("j", [2, 3, 8])
def test_crps_matches_the_direct_pairwise_formula(j):
    g = torch.Generator().manual_seed(j)
    samples, truth = torch.randn(j, 4, 3, 5, 5, generator=g, **F64), torch.randn(4, 3, 5, 5, generator=g, **F64)
    torch.testing.assert_close(crps(samples, truth), _crps_direct(samples, truth), rtol=1e-12, atol=1e-12)
    ties = samples.round()  # equal values in the sort
    torch.testing.assert_close(crps(ties, truth), _crps_direct(ties, truth), rtol=1e-12, atol=1e-12)


def test_crps_keeps_the_dtype_and_works_on_features():
    g = torch.Generator().manual_seed(0)
    samples, truth = torch.randn(4, 6, 32, generator=g), torch.randn(6, 32, generator=g)
    got = crps(samples, truth)
    assert got.dtype == torch.float32 and got.shape == (6,)
    torch.testing.assert_close(got.double(), _crps_direct(samples.double(), truth.double()))


def test_crps_of_a_point_ensemble_is_the_absolute_error():
    truth = torch.tensor([[0.5, -0.5], [0.0, 1.0]])
    samples = torch.zeros(3, 2, 2)
    torch.testing.assert_close(crps(samples, truth), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("j", [4, 64])
def test_crps_is_unbiased_for_the_closed_form_of_a_gaussian(j):
    """Truth ~ N(0, 1), samples from N(0.3, 0.7²): the fair CRPS matches the forecast's CRPS on average."""
    g = torch.Generator().manual_seed(j)
    truth = torch.randn(2000, 8, generator=g, **F64)
    samples = 0.3 + 0.7 * torch.randn(j, 2000, 8, generator=g, **F64)
    diff = crps(samples, truth) - _crps_gaussian(0.3, 0.7, truth).mean(1)
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(len(diff))


def test_crps_prefers_the_true_distribution():
    g = torch.Generator().manual_seed(1)
    truth = torch.randn(500, 16, generator=g, **F64)
    true = crps(torch.randn(8, 500, 16, generator=g, **F64), truth).mean()
    assert true < crps(0.2 * torch.randn(8, 500, 16, generator=g, **F64), truth).mean()
    assert true < crps(0.5 + torch.randn(8, 500, 16, generator=g, **F64), truth).mean()


# -- MMD² kernel score --------------------------------------------------------------------------------


def _score_loops(samples: np.ndarray, truth: np.ndarray, h: float) -> float:
    k = lambda u, v: math.exp(-((u - v) ** 2).sum() / (2 * h * h))  # noqa: E731
    j = len(samples)
    pairs = sum(k(samples[a], samples[b]) for a in range(j) for b in range(j) if a != b) / (j * (j - 1))
    return pairs - 2 * sum(k(s, truth) for s in samples) / j


def test_mmd2_score_matches_the_double_loop_with_the_median_heuristic_of_the_samples():
    g = torch.Generator().manual_seed(2)
    samples, truth = torch.randn(5, 3, 2, 4, generator=g, **F64), torch.randn(3, 2, 4, generator=g, **F64)
    got = mmd2_score(samples, truth)
    for i in range(3):
        s, t = samples[:, i].flatten(1).numpy(), truth[i].flatten().numpy()
        assert got[i].item() == pytest.approx(_score_loops(s, t, float(np.median(pdist(s)))), rel=1e-10)
        assert mmd2_score(samples, truth, bandwidth=0.7)[i].item() == pytest.approx(_score_loops(s, t, 0.7), rel=1e-10)


@pytest.mark.parametrize("bandwidth", [None, 3.0])
def test_mmd2_score_is_lower_for_samples_from_the_true_distribution(bandwidth):
    g = torch.Generator().manual_seed(3)
    b, j, d = 400, 8, 8
    truth = torch.randn(b, d, generator=g, **F64)
    draw = lambda shift=0.0, scale=1.0: shift + scale * torch.randn(j, b, d, generator=g, **F64)  # noqa: E731
    true = mmd2_score(draw(), truth, bandwidth)
    for other in (draw(shift=0.7), draw(scale=0.3)):
        diff = mmd2_score(other, truth, bandwidth) - true
        assert diff.mean() > 4 * diff.std() / math.sqrt(b)


# -- coverage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_coverage_matches_numpy_quantiles(level):
    g = torch.Generator().manual_seed(4)
    samples, truth = torch.randn(7, 5, 40, generator=g), torch.randn(5, 40, generator=g)
    lo, hi = np.quantile(samples.numpy(), [(1 - level) / 2, (1 + level) / 2], axis=0)
    want = ((lo <= truth.numpy()) & (truth.numpy() <= hi)).mean(1)
    np.testing.assert_allclose(coverage(samples, truth, level).numpy(), want, atol=1e-7)


def test_coverage_of_gaussian_ensembles():
    g = torch.Generator().manual_seed(5)
    truth = torch.randn(20, 500, generator=g, **F64)
    right = coverage(torch.randn(400, 20, 500, generator=g, **F64), truth).mean().item()
    narrow = coverage(0.5 * torch.randn(400, 20, 500, generator=g, **F64), truth).mean().item()
    assert right == pytest.approx(0.9, abs=0.015)
    assert narrow == pytest.approx(2 * norm.cdf(0.5 * norm.ppf(0.95)) - 1, abs=0.03)  # about 0.59
    assert coverage(torch.randn(400, 20, 500, generator=g, **F64), truth, level=0.5).mean().item() == pytest.approx(
        0.5, abs=0.03
    )


@pytest.mark.parametrize("j", [2, 4, 16])
def test_prediction_coverage_is_exact_for_gaussian_draws(j):
    """Truth = one more draw of the samples' Gaussian: the expected coverage is the level at any J
    (Monte-Carlo over 200,000 elements with per-element means and scales: within 0.005)."""
    g = torch.Generator().manual_seed(j)
    mu, scale = torch.randn(1, 200_000, generator=g), torch.rand(1, 200_000, generator=g) + 0.1
    draws = mu + scale * torch.randn(j + 1, 200_000, generator=g, dtype=torch.float64)
    got = float(prediction_coverage(draws[:j, None], draws[j:j + 1])[0])
    assert abs(got - 0.9) < 0.005, got
    assert float(coverage(draws[:j, None], draws[j:j + 1])[0]) < got  # empirical quantiles: too narrow


def test_prediction_half_width_by_hand():
    s = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    # J = 3: s = 1, t_{2, 0.95} = 2.919986, sqrt(1 + 1/3)
    assert torch.allclose(prediction_half_width(s), torch.tensor([2.919986 * (4 / 3) ** 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="J >= 2"):
        prediction_half_width(s[:1])
