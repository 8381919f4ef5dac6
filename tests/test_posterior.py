import math

import pytest
import torch

from exactps.covariance import IsotropicNoise
from exactps.interpolants import VE, LinearFlow, Trigonometric, VPCosine, VPLinear
from exactps.operators import (
    AvgPoolSR,
    Blur,
    Colorize,
    Denoise,
    DenseOperator,
    Inpaint,
    OrthogonalCS,
    SeparableSR,
    motion_kernels,
)
from exactps.posterior import (
    PosteriorPredictor,
    ZeroShotPredictor,
    isotropic_level,
    pivot,
    posterior_eps,
    posterior_score,
    posterior_x0,
)
from exactps.priors import GaussianMixture, dense_matrix

ALL = [VPLinear(), VPCosine(), VE(), LinearFlow(), Trigonometric()]
IDS = ["vp-linear", "vp-cosine", "ve", "flow", "trig"]
F64 = torch.float64


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _problem(op, gmm, sigma_y, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = gmm.sample(1, g)
    y = op.measure(x0, sigma_y, g)
    return y, g


@pytest.mark.parametrize("interp", ALL, ids=IDS)
@pytest.mark.parametrize("sigma_y", [0.0, 0.05, 0.7])
def test_eps_score_equals_direct_gmm_posterior_score_dense(interp, sigma_y):
    """grad log p(x_t | y) from the pivot identity == Gaussian conditioning of the mixture."""
    shape = (1, 3, 4)
    # well-conditioned covariances so that float64 round-off stays far below the tolerance
    gmm = GaussianMixture.random(shape, 3, torch.Generator().manual_seed(1), decades=1.0)
    a_mat = torch.randn(5, 12, generator=torch.Generator().manual_seed(2), dtype=F64)
    op = DenseOperator(a_mat, shape)
    y, g = _problem(op, gmm, sigma_y)
    post = gmm.posterior(a_mat, y, sigma_y)
    for frac in (0.05, 0.3, 0.9):
        t = frac * interp.t_max
        tt = torch.tensor(t, dtype=F64)
        x_t = interp.alpha(tt) * gmm.sample(6, g) + interp.sigma(tt) * torch.randn(6, *shape, generator=g, dtype=F64)
        ours = posterior_score(gmm.denoise, interp, x_t, t, op, y, sigma_y)
        ref = post.score(interp, x_t, t)
        assert _rel(ours, ref) < 1e-10, (t, sigma_y)


def _spectral_ops(shape):
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(1, 1, *shape[1:], generator=g) > 0.5).to(F64)
    return {
        "inpaint": Inpaint(mask, shape),
        "sr-avg": AvgPoolSR(shape, 2, dtype=F64),
        "sr-bicubic": SeparableSR(shape, 2, dtype=F64),
        "blur": Blur(motion_kernels(1, 3, g).to(F64), shape),
        "colorize": Colorize(shape, dtype=F64),
    }


@pytest.mark.parametrize("name", ["inpaint", "sr-avg", "sr-bicubic", "blur", "colorize"])
@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_eps_score_equals_direct_score_spectral_operators(name, sigma_y):
    shape = (3, 4, 4)
    gmm = GaussianMixture.random(shape, 2, torch.Generator().manual_seed(3))
    op = _spectral_ops(shape)[name]
    y, g = _problem(op, gmm, sigma_y)
    post = gmm.posterior(dense_matrix(op), y, sigma_y)
    for interp in (VE(), VPLinear(), LinearFlow()):
        t = 0.2 * interp.t_max
        x_t = torch.randn(4, *shape, generator=g, dtype=F64)
        ours = posterior_score(gmm.denoise, interp, x_t, t, op, y, sigma_y)
        assert _rel(ours, post.score(interp, x_t, t)) < 1e-9


def test_eps_x0_and_score_are_consistent():
    shape = (1, 2, 2)
    gmm = GaussianMixture.random(shape, 2, torch.Generator().manual_seed(0))
    op = DenseOperator(torch.randn(2, 4, dtype=F64, generator=torch.Generator().manual_seed(1)), shape)
    y, g = _problem(op, gmm, 0.1)
    interp = VPLinear()
    t = 0.4
    x_t = torch.randn(3, *shape, generator=g, dtype=F64)
    x0 = posterior_x0(gmm.denoise, interp, x_t, t, op, y, 0.1)
    eps = posterior_eps(gmm.denoise, interp, x_t, t, op, y, 0.1)
    score = posterior_score(gmm.denoise, interp, x_t, t, op, y, 0.1)
    a, s = interp.alpha(torch.tensor(t, dtype=F64)), interp.sigma(torch.tensor(t, dtype=F64))
    torch.testing.assert_close(a * x0 + s * eps, x_t)
    torch.testing.assert_close(score, -eps / s)


@pytest.mark.parametrize("interp", [VPLinear(), LinearFlow()], ids=["vp", "flow"])
def test_pivot_given_x0_is_gaussian_with_covariance_S(interp):
    """m = pivot(a x0 + s e, A x0 + s_y n) ~ N(x0, S_t): Monte-Carlo mean and covariance."""
    shape, n, sigma_y, t = (1, 2, 3), 40000, 0.3, 0.5 * interp.t_max
    g = torch.Generator().manual_seed(0)
    op = DenseOperator(torch.randn(3, 6, generator=g, dtype=F64), shape)
    x0 = torch.randn(1, *shape, generator=g, dtype=F64).expand(n, *shape)
    tt = torch.tensor(t, dtype=F64)
    x_t = interp.alpha(tt) * x0 + interp.sigma(tt) * torch.randn(n, *shape, generator=g, dtype=F64)
    y = op.measure(x0, sigma_y, g)
    m, noise = pivot(interp, x_t, t, op, y, sigma_y)
    s_dense = noise.to_dense(shape)[0]
    err = (m - x0).reshape(n, -1)
    se = torch.sqrt(torch.diagonal(s_dense) / n)
    assert (err.mean(0).abs() < 4.5 * se).all()
    cov = torch.cov(err.T)
    assert ((cov - s_dense).norm() / s_dense.norm()).item() < 0.03
    # and a wrong covariance (the isotropic one of the unconditional denoiser) is rejected
    iso = (interp.sigma(tt) / interp.alpha(tt)) ** 2 * torch.eye(6, dtype=F64)
    assert ((cov - iso).norm() / iso.norm()).item() > 0.2


def test_pivot_is_the_proximal_point():
    """m minimises ||A x - y||^2 / s_y^2 + (a^2/s^2) ||x - x_t/a||^2: the gradient vanishes there."""
    shape, sigma_y, interp, t = (1, 3, 3), 0.2, VPCosine(), 0.3
    g = torch.Generator().manual_seed(4)
    a_mat = torch.randn(4, 9, generator=g, dtype=F64)
    op = DenseOperator(a_mat, shape)
    x_t = torch.randn(2, *shape, generator=g, dtype=F64)
    y = torch.randn(2, 4, generator=g, dtype=F64)
    m, _ = pivot(interp, x_t, t, op, y, sigma_y)
    tt = torch.tensor(t, dtype=F64)
    a, s = float(interp.alpha(tt)), float(interp.sigma(tt))
    mf = m.reshape(2, -1)
    data_term = (mf @ a_mat.T - y) @ a_mat / sigma_y**2
    prox_term = (a / s) ** 2 * (mf - x_t.reshape(2, -1) / a)
    assert data_term.abs().max() > 1.0  # the two terms are large and cancel exactly
    assert (data_term + prox_term).abs().max().item() < 1e-10 * data_term.abs().max().item()


def test_no_measurement_is_the_unconditional_denoiser_input():
    interp, t = VPLinear(), 0.3
    x_t = torch.randn(2, 1, 4, 4, dtype=F64)
    m, noise = pivot(interp, x_t, t)
    tt = torch.tensor(t, dtype=F64)
    torch.testing.assert_close(m, x_t / interp.alpha(tt))
    assert isinstance(noise, IsotropicNoise)
    torch.testing.assert_close(noise.rho, (interp.sigma(tt) / interp.alpha(tt)).reshape(1))
    # a huge s_y makes the measurement irrelevant: the same pivot and (s/a)^2 I
    op = Inpaint(torch.ones(1, 1, 4, 4, dtype=F64), (1, 4, 4))
    m_big, noise_big = pivot(interp, x_t, t, op, torch.randn(2, 1, 4, 4, dtype=F64), 1e9)
    torch.testing.assert_close(m_big, m, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(noise_big.to_dense((1, 4, 4)), noise.to_dense((1, 4, 4)), rtol=1e-9, atol=0)


def test_per_batch_times_match_separate_calls():
    shape = (1, 4, 4)
    interp = LinearFlow()
    g = torch.Generator().manual_seed(0)
    gmm = GaussianMixture.random(shape, 2, g)
    op = AvgPoolSR(shape, 2, dtype=F64)
    x_t = torch.randn(3, *shape, generator=g, dtype=F64)
    y = torch.randn(3, 1, 2, 2, generator=g, dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    joint = PosteriorPredictor(gmm.denoise, interp, op, y, 0.1)(x_t, t)
    for b in range(3):
        one = PosteriorPredictor(gmm.denoise, interp, op, y[b : b + 1], 0.1)(x_t[b : b + 1], t[b])
        torch.testing.assert_close(joint[b : b + 1], one)


def _setup():
    shape = (1, 4, 4)
    op = AvgPoolSR(shape, 2, dtype=F64)
    return VE(), op, torch.randn(2, *shape, dtype=F64), torch.randn(2, 1, 2, 2, dtype=F64)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"x_t": torch.randn(2, 1, 4, 5, dtype=F64)}, ValueError, "x_t"),
        ({"x_t": torch.randn(2, 4, 4, dtype=F64)}, ValueError, "x_t"),
        ({"y": torch.randn(2, 1, 3, 2, dtype=F64)}, ValueError, "y"),
        ({"y": torch.randn(3, 1, 2, 2, dtype=F64)}, ValueError, "y"),
        ({"y": torch.full((2, 1, 2, 2), math.nan, dtype=F64)}, ValueError, "y"),
        ({"x_t": torch.full((2, 1, 4, 4), math.inf, dtype=F64)}, ValueError, "x_t"),
        ({"sigma_y": -0.1}, ValueError, "sigma_y"),
        ({"sigma_y": math.nan}, ValueError, "sigma_y"),
        ({"sigma_y": torch.tensor([0.1, 0.2, 0.3])}, ValueError, "sigma_y"),
        ({"t": 0.0}, ValueError, "t must"),
        ({"t": 81.0}, ValueError, "t must"),
        ({"t": torch.tensor([1.0, 2.0, 3.0])}, ValueError, "t must"),
        ({"x_t": torch.randn(2, 1, 4, 4)}, TypeError, "x_t"),
        ({"y": torch.randn(2, 1, 2, 2)}, TypeError, "y"),
        ({"x_t": torch.ones(2, 1, 4, 4, dtype=torch.int64)}, TypeError, "x_t"),
        ({"y": None}, ValueError, "without the measurement y"),
        ({"operator": None}, ValueError, "without an operator"),
    ],
)
def test_bad_input_is_rejected_with_a_named_error(kwargs, exc, name):
    interp, op, x_t, y = _setup()
    args = {"x_t": x_t, "t": 1.0, "operator": op, "y": y, "sigma_y": 0.05, **kwargs}
    with pytest.raises(exc, match=name):
        pivot(interp, args["x_t"], args["t"], args["operator"], args["y"], args["sigma_y"])


# -- the zero-shot pivot --------------------------------------------------------------------------------


def _posterior_mean_reference(gmm, a_mat, y, sigma_y, interp, x_t, t):
    """``E[x0 | x_t, y]`` without the pivot: the mixture conditioned on ``y`` (Gaussian conditioning),
    then its exact denoiser at ``x_t / a`` with noise ``(s/a)^2 I``."""
    tt = torch.tensor(t, dtype=F64)
    a, rho = interp.alpha(tt), interp.ratio(tt)
    return gmm.posterior(a_mat, y, sigma_y).denoise(x_t / a, IsotropicNoise(rho.reshape(1)))


def _orthogonal(rows, d, gamma, seed):
    """``gamma Q`` with ``Q`` (rows x d, rows >= d) of orthonormal columns: ``A^T A = gamma^2 I``."""
    q, _ = torch.linalg.qr(torch.randn(rows, d, generator=torch.Generator().manual_seed(seed), dtype=F64))
    return gamma * q


@pytest.mark.parametrize("interp", [VPLinear(), VE()], ids=["vp-linear", "ve"])
@pytest.mark.parametrize(
    ("case", "gamma", "sigma_y"),
    [("denoise", 1.0, 0.1), ("orthogonal", 0.5, 0.05), ("orthogonal", 2.0, 0.3), ("tight-frame", 1.5, 0.2)],
)
def test_zero_shot_pivot_is_exact_where_AtA_is_isotropic(interp, case, gamma, sigma_y):
    shape = (1, 2, 4)
    gmm = GaussianMixture.random(shape, 3, torch.Generator().manual_seed(1), decades=1.0)
    if case == "denoise":
        op, a_mat = Denoise(shape, dtype=F64), torch.eye(8, dtype=F64)
    else:
        a_mat = _orthogonal(8 if case == "orthogonal" else 12, 8, gamma, seed=3)
        op = DenseOperator(a_mat, shape)
    y, g = _problem(op, gmm, sigma_y)
    for frac in (0.02, 0.3, 0.9):
        t = frac * interp.t_max
        tt = torch.tensor(t, dtype=F64)
        x_t = interp.alpha(tt) * gmm.sample(4, g) + interp.sigma(tt) * torch.randn(4, *shape, generator=g, dtype=F64)
        ours = ZeroShotPredictor(gmm.denoise, interp, op, y, sigma_y)(x_t, torch.full((4,), t, dtype=F64))
        ref = _posterior_mean_reference(gmm, a_mat, y, sigma_y, interp, x_t, t)
        assert _rel(ours, ref) < 1e-9, (case, t)


@pytest.mark.parametrize("case", ["inpaint", "compressed-sensing"])
def test_zero_shot_pivot_is_only_an_approximation_elsewhere(case):
    """Inpainting and compressed sensing with fewer rows than pixels (``A^T A`` a projection): the
    zero-shot prediction differs from the exact posterior mean (which EPS reproduces)."""
    shape = (1, 2, 4)
    gmm = GaussianMixture.random(shape, 3, torch.Generator().manual_seed(1), decades=1.0)
    if case == "inpaint":
        op = Inpaint(torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=F64), shape)
    else:
        op = OrthogonalCS(shape, 4, torch.Generator().manual_seed(2), dtype=F64)
    a_mat = dense_matrix(op)
    interp, t, sigma_y = VE(), 1.0, 0.05
    y, g = _problem(op, gmm, sigma_y)
    x_t = gmm.sample(4, g) + t * torch.randn(4, *shape, generator=g, dtype=F64)
    tt = torch.full((4,), t, dtype=F64)
    ref = _posterior_mean_reference(gmm, a_mat, y, sigma_y, interp, x_t, t)
    assert _rel(PosteriorPredictor(gmm.denoise, interp, op, y, sigma_y)(x_t, tt), ref) < 1e-9
    assert _rel(ZeroShotPredictor(gmm.denoise, interp, op, y, sigma_y)(x_t, tt), ref) > 1e-2


def test_isotropic_level_is_the_mean_variance_of_S():
    """``tr(S_t)/d`` from the closed-form diagonal equals the trace of the dense ``S_t``."""
    shape = (1, 2, 4)
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=F64)
    op = Inpaint(mask, shape)
    x = torch.randn(2, *shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    rho = torch.tensor([0.5, 3.0], dtype=F64)
    _, noise = op.pivot(x, rho, op.A(x), torch.full((2,), 0.1, dtype=F64))
    dense = noise.to_dense(shape)
    expected = torch.diagonal(dense, dim1=-2, dim2=-1).mean(-1)
    assert torch.allclose(isotropic_level(noise, x), expected, rtol=1e-12)
    # by hand: 4 measured pixels at (1/rho^2 + 1/s_y^2)^-1, 4 unmeasured at rho^2
    by_hand = 0.5 * (1 / (1 / rho**2 + 1 / 0.01) + rho**2)
    assert torch.allclose(isotropic_level(noise, x), by_hand, rtol=1e-12)


def test_zero_shot_pivot_needs_a_closed_form_covariance():
    from exactps.operators import MatrixFreeOperator

    shape = (1, 2, 4)
    op = MatrixFreeOperator(DenseOperator(torch.eye(8, dtype=F64)[:4], shape).physics, shape)
    x = torch.randn(1, *shape, dtype=F64)
    predict = ZeroShotPredictor(lambda m, noise: m, VE(), op, op.A(x), 0.1)
    with pytest.raises(ValueError, match="zero-shot pivot needs the diagonal of S_t"):
        predict(x, torch.ones(1, dtype=F64))
