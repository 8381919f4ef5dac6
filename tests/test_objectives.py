"""The EPS training objective: EDM-weighted regression on the pivot, and its draws."""

from __future__ import annotations

import math

import torch

from exactps.covariance import IsotropicNoise, SpectralNoise
from exactps.objectives import edm_weight, eps_loss, sample_rho, sample_sigma_y
from exactps.operators import Inpaint, random_masks

SHAPE = (1, 2, 4)


def inpaint_operator(batch: int, seed: int) -> Inpaint:
    """Random inpainting of half the pixels, one mask per sample."""
    return Inpaint(random_masks(SHAPE, batch, 0.5, torch.Generator().manual_seed(seed)), SHAPE)


def test_eps_loss_is_the_edm_weighted_regression():
    """Identity model (``D(m) = m``) without operator: ``loss = mean lambda(rho) rho^2 mean(e^2)``."""
    x0 = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    seen = {}

    def model(m, noise):
        seen["noise"] = noise
        return m

    loss = eps_loss(model, x0, None, 0.1, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    rho = sample_rho(16, g)
    e = torch.randn(x0.shape, generator=g)
    expected = (edm_weight(rho) * (rho[:, None] ** 2 * e.flatten(1) ** 2).mean(1)).mean()
    assert isinstance(seen["noise"], IsotropicNoise)
    assert torch.allclose(seen["noise"].rho, rho)
    assert torch.allclose(loss, expected, rtol=1e-6)
    assert torch.allclose(edm_weight(torch.tensor([0.5])), torch.tensor([8.0]))



def test_eps_loss_with_operator_feeds_the_pivot_and_its_covariance():
    x0 = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(0))
    op = inpaint_operator(8, 2)
    seen = {}

    def model(m, noise):
        seen["m"], seen["noise"] = m, noise
        return x0

    loss = eps_loss(model, x0, op, 0.0, torch.Generator().manual_seed(3))
    assert loss.item() == 0.0
    noise = seen["noise"]
    assert isinstance(noise, SpectralNoise)
    mask = op.physics.mask.bool().expand(x0.shape)
    # s_y = 0: measured pixels of the pivot are y = x0 exactly, with zero variance
    assert torch.allclose(seen["m"][mask], x0[mask])
    assert (noise.var.expand(x0.shape)[mask] == 0).all()



def test_sigma_y_and_rho_draws():
    g = torch.Generator().manual_seed(0)
    fixed = sample_sigma_y(0.05, 5, g)
    assert torch.equal(fixed, torch.full((5,), 0.05))
    drawn = sample_sigma_y((0.01, 0.1), 4000, g)
    assert drawn.min() >= 0.01 and drawn.max() <= 0.1
    assert abs(drawn.log().mean().item() - math.log(math.sqrt(0.01 * 0.1))) < 0.05  # log-uniform
    lin = sample_sigma_y((0.0, 0.2), 4000, g)
    assert lin.min() >= 0 and abs(lin.mean().item() - 0.1) < 0.01
    rho = sample_rho(20000, g)
    assert abs(rho.log().mean().item() + 1.2) < 0.05 and abs(rho.log().std().item() - 1.2) < 0.05
