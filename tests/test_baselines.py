"""Training-free baselines: each must reproduce a property it is known for, so a broken port fails.

Tiny problems (images ``(1, 4, 4)``, float64) with exact priors: a random Gaussian mixture, whose
exact denoiser is the oracle x0-predictor, and the standard Gaussian ``N(0, I)``, for which PiGDM's
likelihood approximation is exact. DDRM, DDNM(+) and DiffPIR are also checked step by step against
dense-matrix re-implementations of their update equations (a full SVD of ``A``), which exercises
the thin-``V`` (super-resolution) and real-FFT (blur) plumbing of the spectral operators. DAPS,
MPGD and DDNM's time travel are checked against transcriptions of their official loops (DAPS in
EDM variables, MPGD in DDPM notation with autograd, DDNM's ``get_schedule_jump``), DAPS's Langevin
stage against its Gaussian target.
"""

from __future__ import annotations

import itertools
import math

import deepinv as dinv
import pytest
import torch

from exactps.baselines import (
    BASELINES,
    DAPS_PRESETS,
    daps_grid,
    daps_sample,
    ddnm_sample,
    ddpm_grid,
    ddrm_sample,
    diffpir_sample,
    dps_sample,
    mpgd_sample,
    pigdm_sample,
    travel_schedule,
)
from exactps.interpolants import VE, VPLinear
from exactps.metrics import sliced_w2
from exactps.operators import AvgPoolSR, Blur, DenseOperator, Inpaint, MatrixFreeOperator, gaussian_kernel
from exactps.posterior import PosteriorPredictor
from exactps.priors import GaussianMixture, dense_matrix
from exactps.samplers import ddim_sample, ddpm_sample, initial_noise

F64 = torch.float64
SHAPE = (1, 4, 4)
D = 16
INTERP = VPLinear()
GRADIENT_BASED = {"dps", "pigdm"}
#: network evaluations per step of a grid ``ts`` at the default settings (DAPS: its 5 ODE steps per annealing level)
NFE_PER_STEP = {"daps": 5}


class _MatrixPhysics(dinv.physics.LinearPhysics):
    """``A x = M vec(x)`` known only through ``A`` and ``A^T`` (no SVD)."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.register_buffer("m", matrix)

    def A(self, x, **kwargs):
        return x.reshape(x.shape[0], -1) @ self.m.T

    def A_adjoint(self, y, **kwargs):
        return (y @ self.m).reshape(y.shape[0], *SHAPE)


def _matrix(seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, D, generator=g, dtype=F64) / 4


def _operators() -> dict:
    g = torch.Generator().manual_seed(7)
    mask = (torch.rand(1, 1, 4, 4, generator=g) > 0.5).to(F64)
    return {
        "inpaint": Inpaint(mask, SHAPE),
        "avgpool": AvgPoolSR(SHAPE, 2, dtype=F64),  # thin V
        "blur": Blur(gaussian_kernel(0.7, 3).to(F64), SHAPE),  # V = real FFT
        "dense": DenseOperator(_matrix(), SHAPE),
    }


OPS = _operators()


@pytest.fixture(scope="module")
def gmm() -> GaussianMixture:
    return GaussianMixture.random(SHAPE, 3, torch.Generator().manual_seed(0))


def _standard_gaussian() -> GaussianMixture:
    return GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, D, dtype=F64), torch.eye(D, dtype=F64)[None], SHAPE)


def _problem(prior: GaussianMixture, op, sigma_y: float, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x0 = prior.sample(1, generator=g)
    return op.measure(x0, sigma_y, generator=g)


def _x_init(n: int, seed: int = 5) -> torch.Tensor:
    return initial_noise(INTERP, (n, *SHAPE), torch.Generator().manual_seed(seed), F64)


def _residual(op, x, y) -> torch.Tensor:
    return (op.A(x) - y).flatten(1).norm(dim=1)


def _gen(seed: int = 11) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- grids and bookkeeping ------------------------------------------------------------------------
def test_ddpm_grid_matches_the_official_index_sequences():
    ddrm = ddpm_grid(INTERP, 20)  # DDRM: seq = range(0, 1000, 50), reversed
    assert ddrm.shape == (21,) and ddrm[0].item() == pytest.approx(0.951) and ddrm[-2].item() == pytest.approx(0.001)
    assert ddpm_grid(INTERP, 1000)[0].item() == pytest.approx(1.0)
    quad = ddpm_grid(INTERP, 100, "quad")  # DiffPIR: dense near the data
    assert quad.shape == (101,) and quad[0].item() == pytest.approx(1.0) and quad[-2].item() == pytest.approx(0.001)
    gaps = quad[:-2] - quad[1:-1]
    assert gaps[0] > 10 * gaps[-1]
    for ts in (ddrm, quad):
        assert ts[-1].item() == 0.0 and bool((ts[1:] < ts[:-1]).all())
    with pytest.raises(ValueError, match="steps"):
        ddpm_grid(INTERP, 0)
    with pytest.raises(ValueError, match="spacing"):
        ddpm_grid(INTERP, 10, "cosine")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_default_step_counts(name):
    """Published step counts; DPS and PiGDM pay one VJP per network evaluation, the others none.
    DAPS-1K: 200 annealing levels x 5 ODE steps."""
    expected = {"dps": 1000, "pigdm": 100, "ddrm": 20, "diffpir": 100, "ddnm": 100, "daps": 1000, "mpgd": 100}[name]
    prior = _standard_gaussian()
    op = OPS["inpaint"]
    y = _problem(prior, op, 0.05)
    out = BASELINES[name](PosteriorPredictor(prior.denoise, INTERP), INTERP, op, y, 0.05, _x_init(1))
    assert out.nfe == expected
    assert out.vjp == (expected if name in GRADIENT_BASED else 0)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_uniform_signature_and_counts(name, gmm):
    op = OPS["avgpool"]
    y = _problem(gmm, op, 0.05)
    ts = ddpm_grid(INTERP, 7)
    out = BASELINES[name](
        PosteriorPredictor(gmm.denoise, INTERP), INTERP, op, y, 0.05, _x_init(4), ts=ts, generator=_gen()
    )
    assert out.x.shape == (4, *SHAPE) and out.x.dtype == F64 and torch.isfinite(out.x).all()
    assert not out.x.requires_grad
    assert out.nfe == 7 * NFE_PER_STEP.get(name, 1) and out.vjp == (7 if name in GRADIENT_BASED else 0)


# -- properties each method is known for -----------------------------------------------------------
@pytest.mark.parametrize("op_name", sorted(OPS))
@pytest.mark.parametrize("method", ["ddrm", "ddnm", "diffpir"])
def test_noiseless_outputs_are_measurement_consistent(method, op_name, gmm):
    """DDRM (eta_b = 1), DDNM and DiffPIR (rho = 0) end on ``A x = y`` exactly when ``s_y = 0``."""
    op = OPS[op_name]
    y = _problem(gmm, op, 0.0)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    out = BASELINES[method](predict, INTERP, op, y, 0.0, _x_init(16), steps=10, generator=_gen())
    assert _residual(op, out.x, y).max().item() < 1e-10 * (1 + y.norm().item())


def test_ddnm_plus_is_ddnm_without_noise_and_plain_ddnm_projects_noisy_y(gmm):
    op = OPS["blur"]
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    y = _problem(gmm, op, 0.0)
    plus = ddnm_sample(predict, INTERP, op, y, 0.0, _x_init(8), steps=10, generator=_gen())
    plain = ddnm_sample(predict, INTERP, op, y, 0.0, _x_init(8), steps=10, plus=False, generator=_gen())
    torch.testing.assert_close(plus.x, plain.x, rtol=0, atol=1e-12)
    y = _problem(gmm, op, 0.1)
    plain = ddnm_sample(predict, INTERP, op, y, 0.1, _x_init(8), steps=10, plus=False, generator=_gen())
    assert _residual(op, plain.x, y).max() < 1e-10  # hard projection onto the noisy y
    plus = ddnm_sample(predict, INTERP, op, y, 0.1, _x_init(8), steps=10, generator=_gen())
    assert _residual(op, plus.x, y).min() > 1e-3  # DDNM+ does not fit the noise


def test_ddnm_plus_and_ddrm_share_the_noisy_update(gmm):
    """Per coefficient, DDNM+ (Eq. 17-19) is DDRM with ``eta_b = 1``; they differ only in ``x_T``, which an
    invertible ``A`` forgets after the first step (two independently written code paths must agree)."""
    op = OPS["blur"]
    y = _problem(gmm, op, 0.1)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    ts = ddpm_grid(INTERP, 12)
    a = ddrm_sample(predict, INTERP, op, y, 0.1, _x_init(8), ts, generator=_gen())
    b = ddnm_sample(predict, INTERP, op, y, 0.1, _x_init(8), ts, generator=_gen())
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-10)


def test_dps_without_guidance_is_ddpm_and_guidance_cuts_the_residual(gmm):
    """zeta = 0 is the plain DDPM ancestral sampler; DPS's step pulls ``A x`` towards ``y``."""
    op = OPS["inpaint"]
    y = _problem(gmm, op, 0.05)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    ts = ddpm_grid(INTERP, 200)
    prior = ddpm_sample(predict, INTERP, _x_init(128), ts, generator=_gen())
    plain = dps_sample(predict, INTERP, op, y, 0.05, _x_init(128), ts, zeta=0.0, generator=_gen())
    torch.testing.assert_close(plain.x, prior.x, rtol=0, atol=1e-12)
    guided = dps_sample(predict, INTERP, op, y, 0.05, _x_init(128), ts, zeta=0.3, generator=_gen())
    assert _residual(op, guided.x, y).mean() < 0.3 * _residual(op, prior.x, y).mean()


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("op_name", ["avgpool", "dense", "matrix-free"])
def test_pigdm_is_exact_for_a_standard_gaussian_prior(op_name, sigma_y):
    """For ``x0 ~ N(0, I)``, ``p(x0 | x_t) = N(x0_hat, r_t^2 I)`` with ``r_t^2 = s^2 / (a^2 + s^2)``, so the
    PiG likelihood score is exact and PiGDM is DDIM with the exact posterior x0-prediction (EPS)."""
    prior = _standard_gaussian()
    op = MatrixFreeOperator(_MatrixPhysics(_matrix()), SHAPE) if op_name == "matrix-free" else OPS[op_name]
    y = _problem(prior, op, sigma_y)
    ts = ddpm_grid(INTERP, 25)
    exact = PosteriorPredictor(prior.denoise, INTERP, op, y, sigma_y)
    ref = ddim_sample(exact, INTERP, _x_init(32), ts, eta=1.0, generator=_gen())
    out = pigdm_sample(
        PosteriorPredictor(prior.denoise, INTERP), INTERP, op, y, sigma_y, _x_init(32), ts, generator=_gen()
    )
    torch.testing.assert_close(out.x, ref.x, rtol=0, atol=1e-7)
    plain = pigdm_sample(
        PosteriorPredictor(prior.denoise, INTERP),
        INTERP,
        op,
        y,
        sigma_y,
        _x_init(32),
        ts,
        guidance=0.0,
        generator=_gen(),
    )
    prior_ddim = ddim_sample(PosteriorPredictor(prior.denoise, INTERP), INTERP, _x_init(32), ts, 1.0, _gen())
    torch.testing.assert_close(plain.x, prior_ddim.x, rtol=0, atol=1e-12)


def test_pigdm_moves_a_mixture_prior_towards_the_posterior(gmm):
    op = OPS["avgpool"]
    sigma_y = 0.05
    y = _problem(gmm, op, sigma_y)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    ts = ddpm_grid(INTERP, 100)
    prior = ddim_sample(predict, INTERP, _x_init(256), ts, eta=1.0, generator=_gen())
    out = pigdm_sample(predict, INTERP, op, y, sigma_y, _x_init(256), ts, generator=_gen())
    assert _residual(op, out.x, y).mean() < 0.5 * _residual(op, prior.x, y).mean()
    post = gmm.posterior(dense_matrix(op), y, sigma_y)
    post_mean = post.weights @ post.means
    prior_mean = gmm.weights @ gmm.means
    err = (out.x.flatten(1).mean(0) - post_mean).norm()
    assert err < 0.5 * (prior_mean - post_mean).norm()


# -- step-by-step references with a dense SVD ------------------------------------------------------
class _DenseSVD:
    """``A = U diag(k) V^T`` with a full ``V`` (d x d); negligible ``k`` set to zero."""

    def __init__(self, op):
        a = dense_matrix(op)
        self.a = a
        u, k, vt = torch.linalg.svd(a, full_matrices=True)
        self.u, self.v = u, vt.T
        r = k.shape[0]
        kk = torch.zeros(D, dtype=F64)
        kk[:r] = torch.where(k > 1e-5 * k.max(), k, 0.0)  # default_rcond(float64)
        self.k = kk
        self.meas = kk > 0
        self.inv_k = torch.where(self.meas, 1 / torch.where(self.meas, kk, 1.0), 0.0)
        self.r = r

    def vt(self, x):
        return x.reshape(x.shape[0], -1) @ self.v

    def img(self, c):
        return (c @ self.v.T).reshape(c.shape[0], *SHAPE)

    def ut_y(self, y):  # U^T y padded to d coefficients
        out = torch.zeros(y.shape[0], D, dtype=F64)
        out[:, : self.r] = (y.reshape(y.shape[0], -1) @ self.u)[:, : self.r]
        return out


def _ab(t):
    return float(INTERP.alpha(t)), float(INTERP.sigma(t))


def _ddrm_reference(predict, svd, y, sy, x, ts, eta, eta_b, gen):
    """Kawar et al. 2022, Eq. 7-8, coefficient by coefficient with the dense SVD."""
    uty, k, ik, meas = svd.ut_y(y), svd.k, svd.inv_k, svd.meas
    ybar = ik * uty
    a, s = _ab(ts[0])
    sig = s / a
    cz = svd.vt(x / s)
    informed = meas & (k * sig > sy)
    x = a * svd.img(torch.where(informed, ybar + torch.sqrt((sig**2 - sy**2 * ik**2).clamp_min(0)) * cz, sig * cz))
    for i in range(len(ts) - 1):
        (a, s), (an, sn) = _ab(ts[i]), _ab(ts[i + 1])
        x0 = predict(x, ts[i])
        c0, ce = svd.vt(x0), svd.vt((x - a * x0) / s)
        sig = sn / an
        cz = svd.vt(torch.randn(x.shape, generator=gen, dtype=F64))
        missing = c0 + math.sqrt(1 - eta**2) * sig * ce + eta * sig * cz
        before = meas & (k * sig >= sy)
        after = meas & ~before
        c_b = (1 - eta_b) * c0 + eta_b * ybar + torch.sqrt((sig**2 - eta_b**2 * sy**2 * ik**2).clamp_min(0)) * cz
        c_a = c0 + math.sqrt(1 - eta**2) * sig * (uty - k * c0) / (sy if sy > 0 else 1.0) + eta * sig * cz
        x = an * svd.img(torch.where(before, c_b, torch.where(after, c_a, missing)))
    return x


def _ddnm_plus_reference(predict, svd, y, sy, x, ts, eta, gen):
    """Wang et al. 2023, Eq. 17-19 (the official ``Lambda`` and ``Lambda_noise``) with the dense SVD."""
    k, ik, meas = svd.k, svd.inv_k, svd.meas
    for i in range(len(ts) - 1):
        (a, s), (an, sn) = _ab(ts[i]), _ab(ts[i + 1])
        x0 = predict(x, ts[i])
        c0, ce = svd.vt(x0), svd.vt((x - a * x0) / s)
        small = meas & (k * sn < an * sy)
        big = meas & (k * sn > an * sy) & (sy > 0)
        lam = torch.where(small, k * sn * math.sqrt(1 - eta**2) / (an * sy if sy > 0 else 1.0), 1.0)
        c0 = c0 - lam * ik * svd.ut_y(x0.reshape(x0.shape[0], -1) @ svd.a.T - y.reshape(y.shape[0], -1))
        cz = svd.vt(torch.randn(x.shape, generator=gen, dtype=F64))
        d1 = torch.where(big, torch.sqrt((sn**2 - an**2 * sy**2 * ik**2).clamp_min(0)), sn * eta)
        d2 = torch.where(small | big, 0.0, sn * math.sqrt(1 - eta**2))
        x = svd.img(an * c0 + d1 * cz + d2 * ce)
    return x


def _diffpir_reference(predict, svd, y, sy, x, ts, lam, zeta, gen):
    """Zhu et al. 2023, Alg. 1: ``x0_y = (A^T A + rho I)^+ (A^T y + rho x0)`` (pseudo-inverse when rho = 0)."""
    a_mat, yv = svd.a, y.reshape(y.shape[0], -1)
    for i in range(len(ts) - 1):
        (a, s), (an, sn) = _ab(ts[i]), _ab(ts[i + 1])
        x0 = predict(x, ts[i]).reshape(x.shape[0], -1)
        rho = lam * (sy / 2) ** 2 / (s / a) ** 2  # s_y on [0, 1] images, data in [-1, 1]
        x0 = x0 + ((yv - x0 @ a_mat.T) @ torch.linalg.pinv(a_mat @ a_mat.T + rho * torch.eye(a_mat.shape[0])).T) @ a_mat
        x0 = x0.reshape(x.shape)
        eps = (x - a * x0) / s
        z = torch.randn(x.shape, generator=gen, dtype=F64)
        x = an * x0 + sn * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * z)
    return x


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("op_name", ["avgpool", "blur", "dense"])
@pytest.mark.parametrize("method", ["ddrm", "ddnm", "diffpir"])
def test_spectral_updates_match_a_dense_svd_reference(method, op_name, sigma_y, gmm):
    op = OPS[op_name]
    y = _problem(gmm, op, sigma_y)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    svd = _DenseSVD(op)
    ts = ddpm_grid(INTERP, 6)
    x_init = _x_init(8)
    if method == "ddrm":
        out = ddrm_sample(predict, INTERP, op, y, sigma_y, x_init, ts, eta=0.7, eta_b=0.9, generator=_gen())
        ref = _ddrm_reference(predict, svd, y, sigma_y, x_init, ts, 0.7, 0.9, _gen())
    elif method == "ddnm":
        out = ddnm_sample(predict, INTERP, op, y, sigma_y, x_init, ts, eta=0.7, generator=_gen())
        ref = _ddnm_plus_reference(predict, svd, y, sigma_y, x_init, ts, 0.7, _gen())
    else:
        out = diffpir_sample(predict, INTERP, op, y, sigma_y, x_init, ts, lam=2.0, zeta=0.3, generator=_gen())
        ref = _diffpir_reference(predict, svd, y, sigma_y, x_init, ts, 2.0, 0.3, _gen())
    # one step agrees to ~1e-15; the sharp mixture denoiser amplifies round-off over several steps
    torch.testing.assert_close(out.x, ref, rtol=0, atol=1e-6)


def test_diffpir_matrix_free_matches_spectral(gmm):
    """The proximal data step by conjugate gradients equals the closed form."""
    spectral = DenseOperator(_matrix(), SHAPE)
    free = MatrixFreeOperator(_MatrixPhysics(_matrix()), SHAPE)
    y = _problem(gmm, spectral, 0.1)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    a = diffpir_sample(predict, INTERP, spectral, y, 0.1, _x_init(8), steps=8, generator=_gen())
    b = diffpir_sample(predict, INTERP, free, y, 0.1, _x_init(8), steps=8, generator=_gen())
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-7)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_bad_input_names_the_argument(name, gmm):
    op = OPS["avgpool"]
    y = _problem(gmm, op, 0.05)
    fn = BASELINES[name]
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    x = _x_init(2)
    ts = ddpm_grid(INTERP, 3)
    with pytest.raises(ValueError, match="y"):
        fn(predict, INTERP, op, y[..., :1], 0.05, x, ts)
    with pytest.raises(ValueError, match="y has batch size"):
        fn(predict, INTERP, op, y.expand(3, *y.shape[1:]), 0.05, x, ts)
    with pytest.raises(ValueError, match="sigma_y"):
        fn(predict, INTERP, op, y, -0.1, x, ts)
    with pytest.raises(ValueError, match="x_init"):
        fn(predict, INTERP, op, y, 0.05, x[..., :2], ts)
    with pytest.raises(ValueError, match="ts"):
        fn(predict, INTERP, op, y, 0.05, x, ts.flip(0))
    with pytest.raises(ValueError, match="clip"):
        fn(predict, INTERP, op, y, 0.05, x, ts, clip=-1.0)


@pytest.mark.parametrize("name", ["pigdm", "ddrm", "ddnm", "mpgd"])
def test_bad_eta(name, gmm):
    op = OPS["avgpool"]
    y = _problem(gmm, op, 0.05)
    with pytest.raises(ValueError, match="eta"):
        BASELINES[name](PosteriorPredictor(gmm.denoise, INTERP), INTERP, op, y, 0.05, _x_init(2), eta=1.5)


@pytest.mark.parametrize("name", ["ddrm", "ddnm"])
def test_svd_methods_reject_operators_without_svd(name, gmm):
    op = MatrixFreeOperator(_MatrixPhysics(_matrix()), SHAPE)
    y = _problem(gmm, op, 0.05)
    with pytest.raises(TypeError, match="SpectralOperator"):
        BASELINES[name](PosteriorPredictor(gmm.denoise, INTERP), INTERP, op, y, 0.05, _x_init(2), steps=2)


def test_dps_needs_only_a_and_its_adjoint(gmm):
    op = MatrixFreeOperator(_MatrixPhysics(_matrix()), SHAPE)
    y = _problem(gmm, op, 0.05)
    out = dps_sample(
        PosteriorPredictor(gmm.denoise, INTERP), INTERP, op, y, 0.05, _x_init(2), steps=5, generator=_gen()
    )
    assert out.nfe == 5 and out.vjp == 5 and torch.isfinite(out.x).all()


# -- DAPS, MPGD and DDNM's time travel ---------------------------------------------------------------
def _mixture_setup(gmm, op_name: str = "avgpool", sigma_y: float = 0.05):
    op = OPS[op_name]
    return op, _problem(gmm, op, sigma_y), PosteriorPredictor(gmm.denoise, INTERP)


def test_daps_grid_is_the_official_annealing_schedule():
    """First release: ``Scheduler(num_steps=200, sigma_max=100, sigma_min=0.1, sigma_final=0, timestep='poly-7')``."""
    ts = daps_grid(INTERP)
    assert ts.shape == (201,) and ts[-1].item() == 0.0 and bool((ts[1:] < ts[:-1]).all())
    u = torch.linspace(0, 1, 200, dtype=F64)
    poly = (100 ** (1 / 7) + u * (0.1 ** (1 / 7) - 100 ** (1 / 7))) ** 7
    torch.testing.assert_close(INTERP.ratio(ts[:-1]), poly, rtol=1e-9, atol=0)
    ve = daps_grid(VE(), 10)  # sigma_max = 100 is clipped to the interpolant's s/a range (VE: 80)
    assert ve[0].item() == 80.0 and ve[-2].item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="annealing_steps"):
        daps_grid(INTERP, 0)
    with pytest.raises(ValueError, match="sigma_min"):
        daps_grid(INTERP, 10, sigma_min=200.0)


def test_daps_nfe_is_annealing_levels_times_ode_steps(gmm):
    op, y, predict = _mixture_setup(gmm)
    for kwargs, nfe in ((DAPS_PRESETS["daps-100"], 100), ({"annealing_steps": 3, "ode_steps": 4}, 12)):
        out = daps_sample(predict, INTERP, op, y, 0.05, _x_init(2), langevin_steps=2, generator=_gen(), **kwargs)
        assert out.nfe == nfe and out.vjp == 0 and torch.isfinite(out.x).all()
    assert DAPS_PRESETS["daps-1k"] == {"annealing_steps": 200, "ode_steps": 5}


def test_daps_ode_stage_is_ddim_on_its_poly_grid(gmm):
    """Step (i): ``ode_steps`` Euler steps of the probability-flow ODE in ``sigma = s/a`` (EDM's Euler, i.e.
    deterministic DDIM) on the rho-7 grid from the level's ``sigma`` to ``ode_sigma_min``, then Tweedie. With
    one annealing level and no Langevin step, DAPS returns that ``x0_hat``."""
    op, y, predict = _mixture_setup(gmm)
    t0 = INTERP.t_from_ratio(torch.tensor(3.0, dtype=F64))
    ts = torch.stack([t0, torch.zeros((), dtype=F64)])
    x = _x_init(8)
    out = daps_sample(predict, INTERP, op, y, 0.05, x, ts, ode_steps=4, langevin_steps=0, generator=_gen())
    u = torch.linspace(0, 1, 4, dtype=F64)
    sig = (3.0 ** (1 / 7) + u * (0.01 ** (1 / 7) - 3.0 ** (1 / 7))) ** 7
    inner = torch.cat([ts[:1], INTERP.t_from_ratio(sig[1:]), torch.zeros(1, dtype=F64)])
    ref = ddim_sample(predict, INTERP, x, inner, eta=0.0)
    assert out.nfe == 4 == ref.nfe and out.vjp == 0
    torch.testing.assert_close(out.x, ref.x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("op_name", ["avgpool", "dense"])
def test_daps_langevin_samples_its_gaussian_target(op_name, gmm):
    """Step (ii): from ``x0_hat`` the chain samples ``N(x0; x0_hat, r^2 I) N(y; A x0, tau^2 I)`` with
    ``r = r_scale sigma``. One annealing level (the output is the chain's end): whitened with the exact
    precision ``A^T A / tau^2 + I / r^2`` around the exact mean, the samples are ``N(0, I)`` (the 2025
    refactor's factor 2 on the data term moves the mean by about 0.4 and an eigenvalue to 0.6-0.8;
    ``r = sigma`` puts eigenvalues near 11)."""
    op, y, predict = _mixture_setup(gmm, op_name)
    sigma, r_scale, tau = 1.0, 0.25, 0.2
    r = r_scale * sigma
    ts = torch.stack([INTERP.t_from_ratio(torch.tensor(sigma, dtype=F64)), torch.zeros((), dtype=F64)])
    x = _x_init(4096)
    out = daps_sample(
        predict,
        INTERP,
        op,
        y,
        0.05,
        x,
        ts,
        ode_steps=1,
        langevin_steps=500,
        lr=1e-3,
        tau=tau,
        r_scale=r_scale,
        generator=_gen(),
    )
    a = dense_matrix(op)
    x0_hat = predict(x, ts[0]).flatten(1)
    prec = a.T @ a / tau**2 + torch.eye(D, dtype=F64) / r**2
    mean = torch.linalg.solve(prec, (a.T @ y.flatten() / tau**2)[:, None] + x0_hat.T / r**2).T
    z = (out.x.flatten(1) - mean) @ torch.linalg.cholesky(prec)
    assert z.mean(0).abs().max() < 0.08
    eig = torch.linalg.eigvalsh(torch.cov(z.T))
    assert eig.min() > 0.8 and eig.max() < 1.2, eig


def _daps_reference(predict, op, y, x, n_anneal, n_ode, lgv_steps, lr, tau, gen):
    """The official first release (zhangbingliang2019/DAPS 25471a8, ``sampler.py``) in EDM variables
    ``x_VE = x_t / a`` with ``D(x_VE, sigma) = f(a x_VE, t(sigma))``: ``Scheduler`` (poly-7, ``schedule='linear'``,
    ``sigma_final=0``), ``DiffusionSampler._euler`` (``x += factor score / 2``), ``LangevinDynamics`` (SGD(lr)
    on ``||A x - y||^2/(2 tau^2) + ||x - x0hat||^2/(2 sigma^2)``, then ``+ sqrt(2 lr) z``; ``lr_min_ratio``
    0.01), re-noising ``x0y + sigma' z``."""

    def scheduler(n, sigma_max, sigma_min):
        u = torch.linspace(0, 1, n, dtype=F64)
        sig = torch.cat(
            [(sigma_max ** (1 / 7) + u * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7, torch.zeros(1, dtype=F64)]
        )
        return sig, [2 * sig[i] * (sig[i] - sig[i + 1]) for i in range(n)]

    def denoise(xv, sigma):
        t = INTERP.t_from_ratio(torch.as_tensor(float(sigma), dtype=F64))
        return predict(float(INTERP.alpha(t)) * xv, t)

    xt = x / float(INTERP.alpha(INTERP.t_from_ratio(torch.tensor(100.0, dtype=F64))))
    annealing, _ = scheduler(n_anneal, 100.0, 0.1)
    for step in range(n_anneal):
        sigma = float(annealing[step])
        sig, factor = scheduler(n_ode, sigma, 0.01)
        xo = xt
        for k in range(n_ode):
            xo = xo + factor[k] * (denoise(xo, sig[k]) - xo) / sig[k] ** 2 * 0.5
        x0hat, lr_k = xo, (1 + step / n_anneal * (0.01 - 1)) * lr
        xl = x0hat
        for _ in range(lgv_steps):
            xl = xl - lr_k * (op.At(op.A(xl) - y) / tau**2 + (xl - x0hat) / sigma**2)
            xl = xl + (2 * lr_k) ** 0.5 * torch.randn(xl.shape, generator=gen, dtype=F64)
        xt = (
            xl + float(annealing[step + 1]) * torch.randn(xl.shape, generator=gen, dtype=F64)
            if step + 1 < n_anneal
            else xl
        )
    return xt


@pytest.mark.parametrize("op_name", ["avgpool", "inpaint"])
def test_daps_matches_the_official_loop(op_name, gmm):
    op, y, predict = _mixture_setup(gmm, op_name)
    kwargs = {"annealing_steps": 6, "ode_steps": 3, "langevin_steps": 20, "lr": 1e-4, "tau": 0.05}
    out = daps_sample(predict, INTERP, op, y, 0.05, _x_init(8), generator=_gen(), **kwargs)
    ref = _daps_reference(predict, op, y, _x_init(8), 6, 3, 20, 1e-4, 0.05, _gen())
    assert out.nfe == 18 and out.vjp == 0
    torch.testing.assert_close(out.x, ref, rtol=0, atol=1e-6)


def _mpgd_reference(predict, op, y, x, ts, eta, scale, gen):
    """Official ``WoProjSampling`` + ``DDIMx0`` in DDPM notation (``abar = a^2`` on VP): ``x0 -= scale
    grad ||y - A x0|| / sqrt(abar_prev)`` (autograd, per sample), DDIM with the unguided ``eps``."""
    for i in range(len(ts) - 1):
        ab, ab_prev = float(INTERP.alpha(ts[i])) ** 2, float(INTERP.alpha(ts[i + 1])) ** 2
        x0 = predict(x, ts[i])
        eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5
        x0v = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad((y - op.A(x0v)).flatten(1).norm(dim=1).sum(), x0v)
        x0 = x0 - scale * grad / ab_prev**0.5
        sig = eta * ((1 - ab_prev) / (1 - ab)) ** 0.5 * (1 - ab / ab_prev) ** 0.5
        x = ab_prev**0.5 * x0 + max(0.0, 1 - ab_prev - sig**2) ** 0.5 * eps
        if sig > 0:
            x = x + sig * torch.randn(x.shape, generator=gen, dtype=F64)
    return x


@pytest.mark.parametrize("op_name", ["inpaint", "avgpool", "dense"])
def test_mpgd_matches_the_official_update_and_is_ddim_without_guidance(op_name, gmm):
    op, y, predict = _mixture_setup(gmm, op_name)
    ts = ddpm_grid(INTERP, 12)
    out = mpgd_sample(predict, INTERP, op, y, 0.05, _x_init(8), ts, eta=0.5, scale=0.3, generator=_gen())
    ref = _mpgd_reference(predict, op, y, _x_init(8), ts, 0.5, 0.3, _gen())
    assert out.nfe == 12 and out.vjp == 0
    torch.testing.assert_close(out.x, ref, rtol=0, atol=1e-8)
    plain = mpgd_sample(predict, INTERP, op, y, 0.05, _x_init(8), ts, scale=0.0, generator=_gen())
    ddim = ddim_sample(predict, INTERP, _x_init(8), ts, eta=0.5, generator=_gen())
    assert torch.equal(plain.x, ddim.x)  # default eta 0.5 (the official diffusion config)


@pytest.mark.parametrize("method", ["daps", "mpgd"])
def test_daps_and_mpgd_move_a_mixture_prior_towards_the_posterior(method, gmm):
    """Exact posterior of a Gaussian mixture: at 100 NFE (DAPS: the ``daps-100`` preset; MPGD: ``scale`` 0.3,
    since the norm's gradient is a unit vector and the official 4 is for 256x256x3 images) the samples are
    much closer in sliced W2 to exact posterior samples than prior samples are, and fit ``y`` better."""
    op, y, predict = _mixture_setup(gmm)
    n = 256
    prior = ddim_sample(predict, INTERP, _x_init(n), ddpm_grid(INTERP, 100), eta=1.0, generator=_gen()).x
    kwargs = DAPS_PRESETS["daps-100"] if method == "daps" else {"scale": 0.3}
    out = BASELINES[method](predict, INTERP, op, y, 0.05, _x_init(n), generator=_gen(), **kwargs)
    assert out.nfe == 100 and out.vjp == 0
    exact = gmm.posterior(dense_matrix(op), y, 0.05).sample(n, torch.Generator().manual_seed(99))

    def dist(x: torch.Tensor) -> float:
        return sliced_w2(x, exact, 256, torch.Generator().manual_seed(3))

    assert dist(out.x) < 0.4 * dist(prior), (dist(out.x), dist(prior))
    assert _residual(op, out.x, y).mean() < 0.3 * _residual(op, prior, y).mean()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_samples_are_a_function_of_the_generator(name, gmm):
    op, y, predict = _mixture_setup(gmm)
    ts = ddpm_grid(INTERP, 5)

    def run(seed: int) -> torch.Tensor:
        return BASELINES[name](predict, INTERP, op, y, 0.05, _x_init(4), ts, generator=_gen(seed)).x

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("name", ["daps", "mpgd"])
def test_daps_and_mpgd_need_only_a_and_its_adjoint(name, gmm):
    spectral = DenseOperator(_matrix(), SHAPE)
    free = MatrixFreeOperator(_MatrixPhysics(_matrix()), SHAPE)
    y = _problem(gmm, spectral, 0.05)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    kwargs = {"annealing_steps": 4, "ode_steps": 2, "tau": 0.02} if name == "daps" else {"steps": 6}
    a = BASELINES[name](predict, INTERP, spectral, y, 0.05, _x_init(4), generator=_gen(), **kwargs)
    b = BASELINES[name](predict, INTERP, free, y, 0.05, _x_init(4), generator=_gen(), **kwargs)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"annealing_steps": 0}, "annealing_steps"),
        ({"ode_steps": 0}, "ode_steps"),
        ({"langevin_steps": -1}, "langevin_steps"),
        ({"lr": 0.0}, "lr"),
        ({"lr_min_ratio": -0.5}, "lr_min_ratio"),
        ({"tau": 0.0}, "tau"),
        ({"r_scale": 0.0}, "r_scale"),
        ({"sigma_min": 0.0}, "sigma_min"),
        ({"sigma_min": 0.05, "ode_sigma_min": 0.05}, "ode_sigma_min"),
    ],
)
def test_daps_bad_settings(kwargs, match, gmm):
    op, y, predict = _mixture_setup(gmm)
    with pytest.raises(ValueError, match=match):
        daps_sample(predict, INTERP, op, y, 0.05, _x_init(2), **{"annealing_steps": 3, **kwargs})


def test_daps_tau_from_sigma_y_and_divergence(gmm):
    """``tau=None`` takes the measurement's ``s_y`` (so it must be positive); a Langevin step beyond the
    stability limit ``lr (k^2 / tau^2 + 1 / r^2) < 2`` raises instead of returning garbage."""
    op, y, predict = _mixture_setup(gmm)
    out = daps_sample(predict, INTERP, op, y, 0.05, _x_init(2), annealing_steps=3, tau=None, generator=_gen())
    assert out.nfe == 15 and torch.isfinite(out.x).all()
    with pytest.raises(ValueError, match="sigma_y"):
        daps_sample(predict, INTERP, op, y, 0.0, _x_init(2), annealing_steps=3, tau=None)
    with pytest.raises(FloatingPointError, match="diverged"):
        daps_sample(predict, INTERP, op, y, 0.05, _x_init(2), annealing_steps=1, langevin_steps=300, lr=0.1)


def test_mpgd_bad_scale(gmm):
    op, y, predict = _mixture_setup(gmm)
    with pytest.raises(ValueError, match="scale"):
        mpgd_sample(predict, INTERP, op, y, 0.05, _x_init(2), steps=3, scale=-1.0)


def _official_schedule_jump(t_sampling: int, travel_length: int, travel_repeat: int) -> list[int]:
    """wyhuai/DDNM ``functions/svd_ddnm.py`` ``get_schedule_jump`` (from RePaint), transcribed."""
    jumps = {j: travel_repeat - 1 for j in range(0, t_sampling - travel_length, travel_length)}
    t, ts = t_sampling, []
    while t >= 1:
        t = t - 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] = jumps[t] - 1
            for _ in range(travel_length):
                t = t + 1
                ts.append(t)
    ts.append(-1)
    return ts


def test_ddnm_travel_schedule_follows_the_official_jumps():
    # hand-expanded official indices for T=4, L=1, r=2: 3 2 3 2 1 2 1 0 1 0 -1 (position = T - 1 - index)
    assert travel_schedule(4, 1, 2) == [(0, 1), (1, 0), (0, 1), (1, 2), (2, 1), (1, 2), (2, 3), (3, 2), (2, 3), (3, 4)]
    assert travel_schedule(5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    for t_sampling, length, repeat in ((100, 10, 3), (100, 1, 2), (20, 3, 4), (10, 9, 2)):
        pos = [t_sampling - 1 - u for u in _official_schedule_jump(t_sampling, length, repeat)]
        assert travel_schedule(t_sampling, length, repeat) == list(itertools.pairwise(pos))
        down = sum(j > i for i, j in travel_schedule(t_sampling, length, repeat))
        assert down == t_sampling + (repeat - 1) * length * math.ceil((t_sampling - length) / length)
    with pytest.raises(ValueError, match="travel_length"):
        travel_schedule(10, 0, 2)
    with pytest.raises(ValueError, match="travel_repeat"):
        travel_schedule(10, 2, 0)
    with pytest.raises(ValueError, match="travel_length"):
        travel_schedule(10, 10, 2)


def _ddnm_travel_reference(predict, svd, y, sy, x, ts, eta, length, repeat, gen):
    """The official loop: jump back by re-noising the last network ``x0`` (before its correction)."""
    n = len(ts) - 1
    times = _official_schedule_jump(n, length, repeat)
    x0_last = None
    for u, v in itertools.pairwise(times):
        p, q = n - 1 - u, n - 1 - v
        if v < u:
            x0_last = predict(x, ts[p])
            x = _ddnm_plus_reference(predict, svd, y, sy, x, ts[[p, q]], eta, gen)
        else:
            a, s = _ab(ts[q])
            x = a * x0_last + s * torch.randn(x.shape, generator=gen, dtype=F64)
    return x


@pytest.mark.parametrize(("op_name", "sigma_y"), [("avgpool", 0.0), ("blur", 0.1)])
def test_ddnm_time_travel_matches_the_official_loop(op_name, sigma_y, gmm):
    op, y, predict = _mixture_setup(gmm, op_name, sigma_y)
    ts = ddpm_grid(INTERP, 6)
    out = ddnm_sample(predict, INTERP, op, y, sigma_y, _x_init(8), ts, eta=0.7, travel_length=2, travel_repeat=3,
                      generator=_gen())  # fmt: skip
    assert out.nfe == 6 + 2 * 2 * 2 and out.vjp == 0  # jumps back from positions 0 and 2 from the end, twice each
    ref = _ddnm_travel_reference(predict, _DenseSVD(op), y, sigma_y, _x_init(8), ts, 0.7, 2, 3, _gen())
    torch.testing.assert_close(out.x, ref, rtol=0, atol=1e-6)
    if sigma_y == 0:  # the last step is a plain DDNM step: exact data consistency survives time travel
        assert _residual(op, out.x, y).max().item() < 1e-10 * (1 + y.norm().item())


def test_ddnm_without_travel_is_unchanged(gmm):
    """``travel_repeat = 1`` (the default) never jumps, whatever the length: bitwise the plain sampler."""
    op, y, predict = _mixture_setup(gmm, "blur", 0.1)
    base = ddnm_sample(predict, INTERP, op, y, 0.1, _x_init(8), steps=10, generator=_gen())
    off = ddnm_sample(predict, INTERP, op, y, 0.1, _x_init(8), steps=10, travel_length=5, generator=_gen())
    assert base.nfe == off.nfe == 10 and torch.equal(base.x, off.x)


@pytest.mark.parametrize("op_name", ["avgpool", "inpaint"])
def test_pigdm_reference_weighting_matches_a_transcription_of_the_reference_loop(gmm, op_name):
    """``weighting="reference"``: NVlabs/RED-diff ``algos/pgdm.py`` (``awd: True``, ``eta`` 0) in DDPM notation:
    ``xs = sqrt(abar_s) x0 + c2 e + grad_{x_t} <A^+ y - A^+ A x0, x0> sqrt(abar_s) sqrt(abar_t) w`` with the
    network's ``x0`` and ``e``, ``c2 = sqrt(1 - abar_s)``, and ``A^+`` a dense pseudo-inverse."""
    op = OPS[op_name]
    sigma_y, weight = 0.05, 3.0
    y = _problem(gmm, op, sigma_y)
    predict = PosteriorPredictor(gmm.denoise, INTERP)
    ts = ddpm_grid(INTERP, 12)
    pinv = torch.linalg.pinv(dense_matrix(op))
    x = _x_init(16)
    for i in range(len(ts) - 1):
        abar_t, abar_s = (INTERP.alpha(ts[j]) ** 2 for j in (i, i + 1))
        xt = x.clone().requires_grad_(True)
        x0 = predict(xt, ts[i].expand(16))
        mat = (pinv @ y.flatten() - (x0.flatten(1) @ dense_matrix(op).T) @ pinv.T).detach()
        (grad,) = torch.autograd.grad((mat * x0.flatten(1)).sum(), xt)
        x0 = x0.detach()
        e = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
        x = abar_s.sqrt() * x0 + (1 - abar_s).sqrt() * e + grad * abar_s.sqrt() * abar_t.sqrt() * weight
    out = pigdm_sample(
        predict, INTERP, op, y, sigma_y, _x_init(16), ts, eta=0.0, guidance=weight, weighting="reference"
    )
    torch.testing.assert_close(out.x, x, rtol=0, atol=1e-9)
    assert (out.nfe, out.vjp) == (12, 12)


def test_pigdm_refuses_an_unknown_weighting(gmm):
    op = OPS["avgpool"]
    y = _problem(gmm, op, 0.05)
    with pytest.raises(ValueError, match="weighting must be one of"):
        pigdm_sample(PosteriorPredictor(gmm.denoise, INTERP), INTERP, op, y, 0.05, _x_init(4), weighting="ref")
