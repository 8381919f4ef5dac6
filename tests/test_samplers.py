import pytest
import torch

from exactps.interpolants import VE, LinearFlow, Trigonometric, VPCosine, VPLinear, get_interpolant
from exactps.posterior import PosteriorPredictor
from exactps.priors import GaussianMixture
from exactps.samplers import (
    SAMPLERS,
    ddim_sample,
    ddpm_sample,
    initial_noise,
    sample,
    steps_for_nfe,
    time_grid,
)
from exactps.verify import gmm_sw2_ratio, make_gmm_problem

F64 = torch.float64
ALL = [VPLinear(), VPCosine(), VE(), LinearFlow(), Trigonometric()]
IDS = ["vp-linear", "vp-cosine", "ve", "flow", "trig"]


@pytest.mark.parametrize("interp", ALL, ids=IDS)
@pytest.mark.parametrize("kind", ["edm", "logsnr", "uniform"])
def test_time_grid(interp, kind):
    ts = time_grid(interp, 12, kind=kind, ratio_min=0.01)
    assert ts.shape == (13,)
    assert ts[0].item() == pytest.approx(interp.t_max)
    assert ts[-1].item() == 0.0
    assert (ts[1:] < ts[:-1]).all()
    assert interp.ratio(ts[-2]).item() == pytest.approx(0.01, rel=1e-6)
    with pytest.raises(ValueError, match="steps"):
        time_grid(interp, 0)
    with pytest.raises(ValueError, match="unknown time grid"):
        time_grid(interp, 3, kind="nope")


def _gmm_predictor(interp):
    gmm = GaussianMixture.random((1, 2, 2), 2, torch.Generator().manual_seed(0))
    return PosteriorPredictor(gmm.denoise, interp)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nfe_is_counted(name):
    calls = []

    def predict(x, t):
        calls.append(float(t))
        return torch.zeros_like(x)

    out = sample(predict, VE(), (3, 1, 2, 2), name, nfe=10, generator=torch.Generator().manual_seed(0))
    assert out.nfe == len(calls)
    assert out.nfe == (9 if name == "heun" else 10)
    assert min(calls) > 0  # never evaluated at t = 0
    assert steps_for_nfe(name, 10) == (5 if name == "heun" else 10)


def test_ddpm_posterior_variance_equals_ddim_eta_one():
    """Two derivations of the same ancestral step (DDPM posterior q(x'|x, x0) and DDIM eta=1)."""
    interp = VPLinear()
    predict = _gmm_predictor(interp)
    ts = time_grid(interp, 15)
    x = initial_noise(interp, (50, 1, 2, 2), torch.Generator().manual_seed(1), dtype=F64)
    a = ddim_sample(predict, interp, x, ts, eta=1.0, generator=torch.Generator().manual_seed(2))
    b = ddpm_sample(predict, interp, x, ts, variance="posterior", generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.x, b.x, rtol=1e-10, atol=1e-10)
    c = ddpm_sample(predict, interp, x, ts, variance="forward", generator=torch.Generator().manual_seed(2))
    assert (c.x - a.x).abs().max() > 1e-3  # the large-variance variant is a different sampler


def test_samplers_reject_bad_predictor_output():
    with pytest.raises(ValueError, match="predictor returned shape"):
        sample(lambda x, t: x[:1], VE(), (2, 1, 2, 2), "ddim", nfe=3)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(lambda x, t: x, VE(), (2, 1, 2, 2), "nope", nfe=3)


@pytest.fixture(scope="module")
def box_problem():
    return make_gmm_problem("inpaint-box", img_shape=(1, 4, 4), n_samples=1000, seed=3)


def _ratio(problem, interp, name, nfe, use_y=True):
    g = torch.Generator().manual_seed(11)
    shape = (problem.reference.shape[0], *problem.operator.img_shape)
    out = sample(problem.predictor(interp, use_y), interp, shape, name, nfe, generator=g, dtype=F64)
    return gmm_sw2_ratio(problem, out.x)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_draws_the_exact_posterior(box_problem, name):
    """SW2 / Monte-Carlo floor: <= 1.5 at 200 NFE, lower than at 10 NFE; the prior is far off."""
    interp = VE()
    high = _ratio(box_problem, interp, name, 200)
    low = _ratio(box_problem, interp, name, 10)
    assert high <= 1.5, high
    assert low > high
    prior = _ratio(box_problem, interp, "ddim", 200, use_y=False)
    assert prior > 5 * 1.5


@pytest.mark.parametrize("name", IDS)
def test_every_interpolant_draws_the_exact_posterior(box_problem, name):
    interp = get_interpolant(name)
    assert _ratio(box_problem, interp, "dpmpp-2m", 100) <= 1.5


@pytest.mark.parametrize("name", IDS)
def test_float32_sampling_starts_at_t_max_for_every_interpolant(name):
    """t_max rounded to float32 (0.999 -> 0.99900001) must still be accepted."""
    interp = get_interpolant(name)
    out = sample(_gmm_predictor(interp), interp, (4, 1, 2, 2), "ddim", nfe=3, dtype=torch.float32)
    assert out.x.dtype == torch.float32 and torch.isfinite(out.x).all()


def test_min_nfe_table_warns_below_the_measured_threshold():
    """Heun with 3-6 NFE diverges (2-3 steps from s/a = 80); ``sample`` warns, with the reason, from one
    table (``MIN_NFE``) that the CLI turns into an error."""
    from exactps.samplers import MIN_NFE, UnstableSamplerWarning, check_nfe

    assert set(MIN_NFE) <= set(SAMPLERS) and MIN_NFE["heun"][0] == 7
    assert check_nfe("heun", 7) is None and check_nfe("ddim", 1) is None
    assert "needs at least 7 NFE, got 3" in check_nfe("heun", 3)
    interp = VE()

    def predict(x, t):
        return torch.zeros_like(x)

    with pytest.warns(UnstableSamplerWarning, match="Heun on the EDM grid"):
        sample(predict, interp, (1, 1, 2, 2), "heun", 4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample(predict, interp, (1, 1, 2, 2), "heun", 7)
        sample(predict, interp, (1, 1, 2, 2), "ddim", 2)
