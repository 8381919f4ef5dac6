"""Restoring one image with its uncertainty: shapes, the std map, the report, and calibration with an
exact posterior (a Gaussian prior's oracle denoiser): the 90% prediction interval covers 90%."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from exactps.loading import LoadedModel
from exactps.models import ModelConfig
from exactps.operators import Inpaint, random_masks
from exactps.priors import GaussianMixture
from exactps.restore import restore, scores

SHAPE = (1, 4, 4)


class OracleDenoiser(nn.Module):
    """The exact denoiser of a prior, as a module (so that it has a device)."""

    def __init__(self, prior: GaussianMixture):
        super().__init__()
        self.prior = prior
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, m, noise):
        return self.prior.denoise(m.double(), noise).to(m.dtype)


def _oracle(prior: GaussianMixture) -> LoadedModel:
    config = ModelConfig(preset="tiny", channels=1, resolution=4)
    return LoadedModel(OracleDenoiser(prior), "eps", config, Path("oracle"))


@pytest.fixture(scope="module")
def gaussian():
    """One Gaussian (the posterior is Gaussian) in [-1, 1]-like scale."""
    return GaussianMixture.random(SHAPE, 1, torch.Generator().manual_seed(0), scale=0.5, decades=1.0)


def test_restore_shapes_report_and_exact_pass_through(gaussian):
    loaded = _oracle(gaussian)
    x0 = gaussian.sample(1, torch.Generator().manual_seed(1)).float().clamp(-1, 1)  # samples are clamped
    op = Inpaint(random_masks(SHAPE, 1, 0.5, torch.Generator().manual_seed(2)), SHAPE)
    y = op.measure(x0, 0.0)
    r = restore(loaded, op, y, 0.0, 3, truth=x0, nfe=20, generator=0)
    assert r.samples.shape == (3, *SHAPE) and r.mean.shape == SHAPE and r.std_map.shape == SHAPE[1:]
    observed = op.physics.mask[0].bool()
    assert torch.allclose(r.samples[:, observed], x0[0][observed].expand(3, -1), atol=1e-5)  # measured exactly
    assert r.std[observed].abs().max() < 1e-5 and r.std[~observed].min() > 0
    report = scores(r)
    assert set(report) == {"mean_std", "psnr_measurement", "psnr_mean", "psnr_samples", "coverage90"}
    assert report["mean_std"] == pytest.approx(float(r.std.mean()) / 2)
    assert "psnr_mean" not in scores(restore(loaded, op, y, 0.0, 2, nfe=20, generator=0))
    with pytest.raises(ValueError, match="at least 2 samples"):
        restore(loaded, op, y, 0.0, 1)
    with pytest.raises(ValueError, match="one measurement"):
        restore(loaded, op, y.expand(2, -1, -1, -1), 0.0, 2)


def test_exact_posterior_samples_are_calibrated(gaussian):
    """Truth drawn from the prior, measured with noise, restored with the exact posterior denoiser and
    Heun at 35 NFE: the per-pixel 90% prediction interval of J = 6 samples covers 0.90 +- 0.03 of the
    pixels over 40 measurements (640 pixels)."""
    loaded = _oracle(gaussian)
    op = Inpaint(random_masks(SHAPE, 1, 0.5, torch.Generator().manual_seed(3)), SHAPE)
    covered = []
    for i in range(40):
        x0 = gaussian.sample(1, torch.Generator().manual_seed(100 + i)).float()
        y = op.measure(x0, 0.1, torch.Generator().manual_seed(200 + i))
        covered.append(scores(restore(loaded, op, y, 0.1, 6, truth=x0, nfe=35, generator=i))["coverage90"])
    assert abs(sum(covered) / len(covered) - 0.9) < 0.03, sum(covered) / len(covered)
