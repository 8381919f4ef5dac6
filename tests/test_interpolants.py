import pytest
import torch

from exactps.interpolants import (
    VE,
    LinearFlow,
    Trigonometric,
    VPCosine,
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
