"""Evaluation on fixed draws: the exact GMM denoiser must give the exact Gaussian-conditioning posterior mean."""

from __future__ import annotations

import math

import pytest
import torch

from exactps.conditional import conditioning_image
from exactps.evaluation import DrawSpec, denoiser_estimate, denoiser_psnr, fixed_draw, heldout_loss
from exactps.metrics import psnr
from exactps.objectives import eps_loss
from exactps.priors import GaussianMixture, dense_matrix

SHAPE = (1, 8, 8)
F64 = torch.float64


def _gmm() -> GaussianMixture:
    return GaussianMixture.random(SHAPE, 3, torch.Generator().manual_seed(0))


def _x0(gmm: GaussianMixture, n: int = 1) -> torch.Tensor:
    return gmm.sample(n, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("task", ["sr4", "inpaint-box", "deblur-motion"])
@pytest.mark.parametrize("rho", [0.3, 1e4])
def test_exact_denoiser_gives_the_posterior_mean_given_x_t_and_y(task, rho):
    """E[x0 | x_t/a, y] by direct Gaussian conditioning on the stacked measurement [I/rho; A/s_y]."""
    gmm, spec = _gmm(), DrawSpec(task, 0.1, seed=3)
    x0 = _x0(gmm)
    est = denoiser_estimate(gmm.denoise, "eps", x0, spec, rho)
    d = fixed_draw(x0, spec, rho)
    a_mat = dense_matrix(d.operator)
    stacked = torch.cat([torch.eye(64, dtype=F64) / rho, a_mat / 0.1])
    obs = torch.cat([d.x_scaled.reshape(-1) / rho, d.y.reshape(-1) / 0.1])
    post = gmm.posterior(stacked, obs, 1.0)
    ref = (post.weights.unsqueeze(1) * post.means).sum(0)
    assert (est.reshape(-1) - ref).abs().max() < (1e-8 if rho < 1 else 1e-6)  # rho = 1e4: conditioning
    if rho > 1e3:  # x_t carries nothing: the MMSE restoration from y alone
        post_y = gmm.posterior(a_mat, d.y, 0.1)
        ref_y = (post_y.weights.unsqueeze(1) * post_y.means).sum(0)
        assert (est.reshape(-1) - ref_y).abs().max() < 1e-4  # x_t still moves it by ~C x_t / rho^2


def test_draws_are_shared_across_rho_and_models():
    gmm = _gmm()
    x0 = _x0(gmm, 2)
    spec = DrawSpec("inpaint-random", 0.05, seed=7)
    a, b = fixed_draw(x0, spec, 0.5), fixed_draw(x0, spec, 2.0)
    assert torch.allclose((a.x_scaled - x0) / 0.5, (b.x_scaled - x0) / 2.0)
    assert torch.equal(a.y, b.y)
    assert not torch.equal(fixed_draw(x0, DrawSpec("inpaint-random", 0.05, seed=8), 0.5).y, a.y)


def test_denoiser_psnr_and_no_operator_and_conditional_calls():
    gmm = _gmm()
    x0 = _x0(gmm, 3)
    out = denoiser_psnr(gmm.denoise, "eps", x0, [DrawSpec("none", 0.0), DrawSpec("sr4", 0.05)], [0.1, 10.0])
    assert set(out) == {("none", 0.0, 0.1), ("none", 0.0, 10.0), ("sr4", 0.05, 0.1), ("sr4", 0.05, 10.0)}
    assert out[("none", 0.0, 0.1)] > out[("none", 0.0, 10.0)]  # less noise, better estimate
    assert out[("sr4", 0.05, 10.0)] > out[("none", 0.0, 10.0)]  # a measurement helps
    ref = float(psnr(denoiser_estimate(gmm.denoise, "eps", x0, DrawSpec("sr4", 0.05), 0.1).clamp(-1, 1), x0).mean())
    assert out[("sr4", 0.05, 0.1)] == pytest.approx(ref)

    seen = {}

    def conditional(x_scaled, rho, cond, sigma_y):
        seen.update(x=x_scaled, rho=rho, cond=cond, sy=sigma_y)
        return x_scaled

    spec = DrawSpec("sr4", 0.05, seed=2)
    denoiser_estimate(conditional, "conditional", x0, spec, 0.7)
    d = fixed_draw(x0, spec, 0.7)
    assert torch.equal(seen["x"], d.x_scaled) and torch.equal(seen["cond"], conditioning_image(d.operator, d.y))
    denoiser_estimate(conditional, "conditional", x0, DrawSpec("none", 0.0), 0.7)
    assert torch.isinf(seen["sy"]).all() and not seen["cond"].any()
    with pytest.raises(ValueError, match="rho"):
        fixed_draw(x0, spec, 0.0)


def test_heldout_loss_is_the_training_loss_on_fixed_draws():
    gmm = _gmm()
    x0 = _x0(gmm, 4)
    spec = DrawSpec("inpaint-box", 0.05, seed=11)
    exact = heldout_loss(gmm.denoise, "eps", x0, spec, draws=3)
    assert exact == heldout_loss(gmm.denoise, "eps", x0, spec, draws=3)
    assert heldout_loss(lambda m, noise: m, "eps", x0, spec, draws=3) > exact  # identity is a worse denoiser
    assert math.isfinite(exact) and exact > 0
    # one draw equals eps_loss with the documented seeds
    from exactps.evaluation import task_operator

    g = torch.Generator().manual_seed(spec.seed + 1)
    ref = float(eps_loss(gmm.denoise, x0, task_operator(spec, x0), 0.05, g))
    assert heldout_loss(gmm.denoise, "eps", x0, spec, draws=1) == pytest.approx(ref)


def test_committed_demo_model_restores_held_out_crops():
    """The fp16 demo model in models/ (EPS for 4x SR at 16x16, fine-tuned on the built-in photographs'
    train split) loads, and the mean of 4 posterior samples beats the measurement view on test crops."""
    from pathlib import Path

    from exactps.data import builtin_crops
    from exactps.evaluation import measurement_view_psnr, model_samples
    from exactps.loading import load_model

    model = load_model(Path(__file__).parents[1] / "models" / "sr4-tiny-16px", device="cpu")
    assert (model.objective, model.img_shape, model.tasks) == ("eps", (3, 16, 16), ("sr4",))
    x0 = builtin_crops(16, 16, torch.Generator().manual_seed(0), split="test")
    spec = DrawSpec("sr4", 0.05, seed=0)
    xs = model_samples(model, x0, spec, 4, "heun", 35)
    mean_psnr = float(psnr(xs.mean(0), x0).mean())
    assert mean_psnr > measurement_view_psnr(x0, spec) + 1.0
