import math

import numpy as np
import pytest
import torch

from exactps.interpolants import (
    VE,
    LinearFlow,
    Trigonometric,
    VPCosine,
    VPDiscrete,
    VPLinear,
    eps_from_x0,
    get_interpolant,
    score_from_x0,
    velocity_from_x0,
    vpred_from_x0,
    x0_from_eps,
    x0_from_score,
    x0_from_velocity,
    x0_from_vpred,
)

ALL = [VPLinear(), VPCosine(), VE(), LinearFlow(), Trigonometric()]
IDS = ["vp-linear", "vp-cosine", "ve", "flow", "trig"]


def _times(interp):
    return torch.linspace(0.02, 0.98, 7, dtype=torch.float64) * interp.t_max


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_derivatives_match_finite_differences(interp):
    t = _times(interp)
    h = 1e-6 * interp.t_max
    fd_a = (interp.alpha(t + h) - interp.alpha(t - h)) / (2 * h)
    fd_s = (interp.sigma(t + h) - interp.sigma(t - h)) / (2 * h)
    torch.testing.assert_close(interp.d_alpha(t), fd_a, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(interp.d_sigma(t), fd_s, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_t_from_ratio_inverts_ratio(interp):
    t = _times(interp)
    torch.testing.assert_close(interp.t_from_ratio(interp.ratio(t)), t, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_boundary_values(interp):
    zero = torch.zeros((), dtype=torch.float64)
    assert float(interp.alpha(zero)) == pytest.approx(1.0, abs=1e-12)
    assert float(interp.sigma(zero)) == pytest.approx(0.0, abs=1e-7)
    tmax = torch.tensor(interp.t_max, dtype=torch.float64)
    assert interp.alpha(tmax) > 0 and interp.sigma(tmax) > 0
    assert interp.ratio_max() > 50  # samplers start from (nearly) pure noise


@pytest.mark.parametrize("interp", [VPLinear(), VPCosine()], ids=["vp-linear", "vp-cosine"])
def test_variance_preserving(interp):
    t = _times(interp)
    torch.testing.assert_close(interp.alpha(t) ** 2 + interp.sigma(t) ** 2, torch.ones_like(t))


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_prediction_conversions_round_trip(interp):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    t = _times(interp)[1:5]  # one time per batch element
    tb = t.reshape(-1, 1, 1, 1)
    x_t = interp.alpha(tb) * x0 + interp.sigma(tb) * eps
    torch.testing.assert_close(eps_from_x0(interp, x_t, x0, t), eps)
    torch.testing.assert_close(x0_from_eps(interp, x_t, eps, t), x0)
    score = score_from_x0(interp, x_t, x0, t)
    torch.testing.assert_close(score, -eps / interp.sigma(tb))
    torch.testing.assert_close(x0_from_score(interp, x_t, score, t), x0)
    v = velocity_from_x0(interp, x_t, x0, t)
    torch.testing.assert_close(v, interp.d_alpha(tb) * x0 + interp.d_sigma(tb) * eps)
    torch.testing.assert_close(x0_from_velocity(interp, x_t, v, t), x0)
    torch.testing.assert_close(x0_from_vpred(interp, x_t, vpred_from_x0(interp, x_t, x0, t), t), x0)


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_check_t_rejects_out_of_range(interp):
    with pytest.raises(ValueError, match="t must lie in"):
        interp.check_t(0.0)
    with pytest.raises(ValueError, match="t must lie in"):
        interp.check_t(interp.t_max * 1.01)
    with pytest.raises(ValueError, match="finite"):
        interp.check_t(float("nan"))
    interp.check_t(interp.t_max)  # the start of every sampler is valid


def test_get_interpolant_names():
    for name, cls in zip(IDS, [VPLinear, VPCosine, VE, LinearFlow, Trigonometric], strict=True):
        assert isinstance(get_interpolant(name), cls)
    with pytest.raises(ValueError, match="unknown interpolant"):
        get_interpolant("nope")


# -- the discrete DDPM schedule (VPDiscrete) ---------------------------------------------------------------


def _numpy_alphas_cumprod(schedule: str, b0: float, b1: float, n: int) -> np.ndarray:
    """Independent references: guided diffusion's ``get_named_beta_schedule`` and diffusers' ``scaled_linear``."""
    if schedule == "linear":
        betas = np.linspace(b0, b1, n, dtype=np.float64)
    elif schedule == "scaled_linear":
        betas = np.linspace(b0**0.5, b1**0.5, n, dtype=np.float64) ** 2
    else:
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)])
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_discrete_schedule_is_ddpms(schedule):
    interp = VPDiscrete(schedule, 8.5e-4, 1.2e-2, 1000)
    ref = _numpy_alphas_cumprod(schedule, 8.5e-4, 1.2e-2, 1000)
    np.testing.assert_allclose(interp.alphas_cumprod.numpy(), ref, rtol=1e-12)
    k = torch.arange(1000, dtype=torch.float64)
    np.testing.assert_allclose(interp.ratio(k).numpy(), np.sqrt((1 - ref) / ref), rtol=1e-10)
    torch.testing.assert_close(interp.alpha(k) ** 2 + interp.sigma(k) ** 2, torch.ones_like(k))


def test_discrete_t_from_ratio_is_the_timestep_on_the_grid_and_interpolates_log_abar():
    interp = VPDiscrete()
    ab = _numpy_alphas_cumprod("linear", 1e-4, 2e-2, 1000)
    k = np.array([0, 1, 17, 500, 998, 999])
    r = torch.tensor(np.sqrt((1 - ab[k]) / ab[k]))
    torch.testing.assert_close(interp.t_from_ratio(r), torch.tensor(k, dtype=torch.float64), rtol=0, atol=1e-9)
    # between grid points: t linear in log abar = -log(1 + r^2) (np.interp over the grid, abar = 1 at t = -1)
    r = torch.tensor([0.005, 0.0123, 0.37, 1.0, 4.2, 80.0], dtype=torch.float64)
    grid = np.concatenate([[0.0], -np.log(ab)])  # increasing
    ref = np.interp(np.log1p(r.numpy() ** 2), grid, np.arange(-1, 1000))
    np.testing.assert_allclose(interp.t_from_ratio(r).numpy(), ref, rtol=1e-10, atol=1e-10)
    t = torch.tensor([-0.7, 0.25, 33.3, 998.9], dtype=torch.float64)
    torch.testing.assert_close(interp.t_from_ratio(interp.ratio(t)), t, rtol=1e-9, atol=1e-9)
    assert interp.t_from_ratio(torch.tensor([1e6], dtype=torch.float64)).item() == interp.t_max


def test_discrete_derivatives_and_data_end():
    interp = VPDiscrete()
    t = torch.tensor([-0.5, 3.3, 250.6, 998.2], dtype=torch.float64)
    h = 1e-6
    fd_a = (interp.alpha(t + h) - interp.alpha(t - h)) / (2 * h)
    fd_s = (interp.sigma(t + h) - interp.sigma(t - h)) / (2 * h)
    torch.testing.assert_close(interp.d_alpha(t), fd_a, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(interp.d_sigma(t), fd_s, rtol=1e-6, atol=1e-10)
    t_min = torch.tensor(interp.t_min, dtype=torch.float64)
    assert interp.sigma(t_min).item() == 0 and interp.alpha(t_min).item() == 1


def test_discrete_schedule_refuses_unknown_names():
    with pytest.raises(ValueError, match=r"unknown beta schedule 'sigmoid'.*linear"):
        VPDiscrete("sigmoid")
