"""Fitting a Gaussian mixture by EM: it recovers a known mixture, never loses likelihood, and round-trips
through its file; bad input is refused by name."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from safetensors.torch import save_file

from exactps.data import open_data
from exactps.mixture_fit import fit_gaussian_mixture, load_mixture, mixture_log_likelihood, save_mixture
from exactps.priors import GaussianMixture


def _two_blobs() -> GaussianMixture:
    """Two well-separated components in 3 dimensions with different covariances and weights."""
    covs = torch.stack([torch.diag(torch.tensor([0.04, 0.01, 0.02])), torch.eye(3, dtype=torch.float64) * 0.03])
    covs[0, 0, 1] = covs[0, 1, 0] = 0.01
    means = torch.tensor([[2.0, 0.0, 0.0], [-2.0, 1.0, 0.5]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), means, covs.to(torch.float64), (3,))


def test_em_recovers_a_known_mixture_and_never_loses_likelihood():
    truth = _two_blobs()
    x = truth.sample(4000, torch.Generator().manual_seed(0))
    fit = fit_gaussian_mixture(x, 2, iters=60, reg=1e-6, generator=torch.Generator().manual_seed(1))
    ll = fit.log_likelihood
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(ll[:-1])), ll  # EM is monotone
    order = torch.argsort(fit.mixture.means[:, 0], descending=True)  # component 0 of the truth is at x = +2
    torch.testing.assert_close(fit.mixture.means[order], truth.means, atol=0.03, rtol=0)
    torch.testing.assert_close(fit.mixture.covs[order], truth.covs, atol=4e-3, rtol=0)
    torch.testing.assert_close(fit.mixture.weights[order], truth.weights, atol=0.03, rtol=0)
    # the fit explains the data at least as well as the truth does (up to sampling error)
    assert ll[-1] > mixture_log_likelihood(truth, x) - 0.01


def test_log_likelihood_matches_a_direct_computation():
    mix = _two_blobs()
    x = mix.sample(50, torch.Generator().manual_seed(2))
    dens = [torch.distributions.MultivariateNormal(mix.means[k], mix.covs[k]).log_prob(x) for k in range(2)]
    direct = torch.logsumexp(torch.stack(dens) + mix.weights.log()[:, None], 0).mean()
    assert math.isclose(mixture_log_likelihood(mix, x), float(direct), rel_tol=1e-10)


def test_images_keep_their_shape_and_the_file_round_trips(tmp_path):
    x = torch.rand(300, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    fit = fit_gaussian_mixture(x, 3, iters=5, generator=torch.Generator().manual_seed(0))
    assert fit.mixture.img_shape == (1, 2, 2)
    path = tmp_path / "mix.safetensors"
    save_mixture(fit.mixture, path)
    back = load_mixture(path)
    assert back.img_shape == (1, 2, 2)
    for name in ("weights", "means", "covs"):
        assert torch.equal(getattr(back, name), getattr(fit.mixture, name))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": 11}, "n_components"),
        ({"n_components": 2, "iters": 0}, "iters"),
        ({"n_components": 2, "reg": 0.0}, "reg"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_gaussian_mixture(torch.rand(10, 3), **kwargs)


def test_nan_points_are_refused():
    x = torch.rand(10, 3)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_gaussian_mixture(x, 2)


def test_missing_and_foreign_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Gaussian-mixture file"):
        load_mixture(tmp_path / "absent.safetensors")
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a Gaussian-mixture file"):
        load_mixture(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_mixture(garbage)


def test_a_mixture_file_is_training_data_of_the_right_shape(tmp_path):
    path = tmp_path / "mix.safetensors"
    save_mixture(GaussianMixture.random((3, 4, 4), 2, torch.Generator().manual_seed(0)), path)
    data = open_data(str(path), 4, 3)
    assert data.sample(5, torch.Generator().manual_seed(0)).shape == (5, 3, 4, 4)
    with pytest.raises(ValueError, match="--size 4 --channels 3"):
        open_data(str(path), 8, 3)
