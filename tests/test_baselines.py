"""Training-free baselines: each must reproduce a property it is known for, so a broken port fails.

Tiny problems (images ``(1, 4, 4)``, float64) with exact priors: a random Gaussian mixture, whose
exact denoiser is the oracle x0-predictor, and the standard Gaussian ``N(0, I)``, for which PiGDM's
likelihood approximation is exact. DDRM, DDNM(+) and DiffPIR are also checked step by step against
dense-matrix re-implementations of their update equations (a full SVD of ``A``), which exercises
the thin-``V`` (super-resolution) and real-FFT (blur) plumbing of the spectral operators.
"""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch

from exactps.baselines import (
    BASELINES,
    ddnm_sample,
    ddpm_grid,
    ddrm_sample,
    diffpir_sample,
    dps_sample,
    pigdm_sample,
)
from exactps.interpolants import VPLinear
from exactps.operators import AvgPoolSR, Blur, DenseOperator, Inpaint, MatrixFreeOperator, gaussian_kernel
from exactps.posterior import PosteriorPredictor
from exactps.priors import GaussianMixture, dense_matrix
from exactps.samplers import ddim_sample, ddpm_sample, initial_noise

F64 = torch.float64
SHAPE = (1, 4, 4)
D = 16
INTERP = VPLinear()
GRADIENT_BASED = {"dps", "pigdm"}


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
    """Published step counts; DPS and PiGDM pay one VJP per network evaluation, the others none."""
    expected = {"dps": 1000, "pigdm": 100, "ddrm": 20, "diffpir": 100, "ddnm": 100}[name]
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
    assert out.nfe == 7 and out.vjp == (7 if name in GRADIENT_BASED else 0)


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


@pytest.mark.parametrize("name", ["pigdm", "ddrm", "ddnm"])
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
