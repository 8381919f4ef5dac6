"""The pivot ``m`` and its covariance ``S_t`` against dense float64 linear algebra.

References are formed from the definitions (METHOD.md): ``P = I / rho^2 + A^T A / s_y^2``,
``S = P^{-1}``, ``m = S (x_t/a / rho^2 + A^T y / s_y^2)`` with a dense ``A`` read off the
operator (per batch element for per-batch operators), and for ``s_y = 0`` the pseudo-inverse
limit ``m = A^+ y + (I - A^+ A) x_t/a``, ``S = rho^2 (I - A^+ A)``. Samplers are checked by
Monte Carlo with fixed seeds, in whitened coordinates.
"""

import functools
import math
import warnings

import deepinv as dinv
import pytest
import torch

from exactps.covariance import IsotropicNoise, MatrixFreeNoise, SpectralNoise
from exactps.operators import (
    AvgPoolSR,
    Blur,
    Colorize,
    Denoise,
    DenseOperator,
    Inpaint,
    MatrixFreeOperator,
    OrthogonalCS,
    SeparableSR,
    conjugate_gradient,
    from_physics,
    gaussian_kernel,
    motion_kernels,
    random_masks,
)
from exactps.priors import dense_matrix

F64 = torch.float64
C3, C1 = (3, 8, 8), (1, 8, 8)
TOL = 1e-10  # closed form vs dense
TOL_CG = 1e-8  # conjugate gradients (relative residual 1e-10) vs dense


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """``||a - b|| / max(||b||, floor)``: ``floor`` is the natural scale where ``b`` may vanish
    (e.g. ``S = rho^2 (I - A^+ A) = 0`` for an invertible ``A`` at ``s_y = 0``)."""
    return (a - b).norm().item() / max(b.norm().item(), floor)


# -- operators --------------------------------------------------------------------------------


@functools.cache
def _make(name: str):
    if name == "denoise":
        return Denoise(C1, F64)
    if name == "inpaint":
        return Inpaint(random_masks(C3, 1, 0.4, _gen(1)).to(F64), C3)
    if name == "inpaint-batch":
        return Inpaint(random_masks(C3, 3, 0.5, _gen(2), per_channel=True).to(F64), C3)
    if name == "avgpool":
        return AvgPoolSR(C3, 2, F64)
    if name == "bicubic":
        return SeparableSR(C1, 2, dtype=F64)
    if name == "blur-gauss":
        return Blur(gaussian_kernel(0.6).to(F64), C3)
    if name == "blur-motion-batch":
        return Blur(motion_kernels(3, 5, _gen(3)).to(F64), C1)
    if name == "blur-gauss-batch":
        return Blur(torch.cat([gaussian_kernel(0.5, 3), gaussian_kernel(0.7, 3)]).to(F64), C3)
    if name == "colorize":
        return Colorize(C3, dtype=F64)
    if name == "cs":
        return OrthogonalCS(C1, 20, _gen(5), F64)
    if name == "dense":
        return DenseOperator(torch.randn(10, 16, generator=_gen(6), dtype=F64), (1, 4, 4))
    raise KeyError(name)


SPECTRAL = [
    "denoise",
    "inpaint",
    "inpaint-batch",
    "avgpool",
    "bicubic",
    "blur-gauss",
    "blur-motion-batch",
    "blur-gauss-batch",
    "colorize",
    "cs",
    "dense",
]
SHARED = ["inpaint", "avgpool", "bicubic", "blur-gauss", "colorize", "cs"]


@functools.cache
def _matrix_free(name: str) -> MatrixFreeOperator:
    """A matrix-free operator: a deepinv physics known only through ``A`` and ``A^T``."""
    if name == "closure":  # a LinearPhysics with explicit A and A^T from a dense random matrix
        mat = torch.randn(10, 16, generator=_gen(7), dtype=F64)
        physics = dinv.physics.LinearPhysics(
            A=lambda x: x.flatten(1) @ mat.T, A_adjoint=lambda y: (y @ mat).reshape(-1, 1, 4, 4)
        )
        return MatrixFreeOperator(physics, (1, 4, 4), dtype=F64)
    if name == "compressed-sensing":
        cs = dinv.physics.CompressedSensing(m=10, img_size=(1, 4, 4), dtype=F64, rng=_gen(8))
        op = from_physics(cs, (1, 4, 4))
        assert isinstance(op, MatrixFreeOperator)
        return op
    # any closed-form operator, but through CG on its physics' A and A^T
    spectral = _make(name.removeprefix("cg-"))
    return MatrixFreeOperator(spectral.physics, spectral.img_shape)


MATRIX_FREE = ["closure", "compressed-sensing"] + [f"cg-{n}" for n in SHARED]


def _any(name: str):
    return _matrix_free(name) if name in MATRIX_FREE else _make(name)


def _batch(op) -> int:
    return op.batch if op.batch > 1 else 2


def _dense(op, b: int) -> torch.Tensor:
    return dense_matrix(op.select(b))


# -- dense references ---------------------------------------------------------------------------


def _eig_p(a: torch.Tensor, rho: float, sy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition ``(mu, Q)`` of the precision ``P = I / rho^2 + A^T A / s_y^2``, from a
    dense full SVD of ``A`` (more accurate than ``eigh(P)`` when ``P`` is ill-conditioned)."""
    _, k, vh = torch.linalg.svd(a, full_matrices=True)
    k2 = torch.zeros(a.shape[1], dtype=F64)
    k2[: k.numel()] = k**2
    return 1.0 / rho**2 + k2 / sy**2, vh.T


def _dense_pivot(a, xs, y, rho, sy):
    """``(m, S)`` for one element from the definitions (``xs = x_t/a``, flattened)."""
    eye = torch.eye(a.shape[1], dtype=F64)
    if sy > 0:
        mu, q = _eig_p(a, rho, sy)
        s = (q / mu) @ q.T
        return q @ ((q.T @ (xs / rho**2 + a.T @ y / sy**2)) / mu), s
    pinv = torch.linalg.pinv(a)
    proj = pinv @ a
    return pinv @ y + (eye - proj) @ xs, rho**2 * (eye - proj)


def _dense_fn(a, rho, sy, fn):
    """``f(S)`` densely for ``s_y > 0``."""
    mu, q = _eig_p(a, rho, sy)
    return (q * fn(1.0 / mu)) @ q.T


def _params(kind: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rho, s_y)`` of shape ``(1,)`` or ``(batch,)``."""
    scalar = {"a": (0.7, 0.05), "b": (0.05, 0.5), "c": (3.0, 0.01)}
    if kind in scalar:
        rho, sy = scalar[kind]
        return torch.tensor([rho], dtype=F64), torch.tensor([sy], dtype=F64)
    rho = torch.linspace(0.1, 2.0, batch, dtype=F64)
    if kind == "batch-rho":
        return rho, torch.tensor([0.2], dtype=F64)
    if kind == "batch-both":
        return rho, torch.linspace(0.6, 0.02, batch, dtype=F64)
    if kind == "batch-sy-with-zero":
        return torch.tensor([0.8], dtype=F64), torch.linspace(0.0, 0.4, batch, dtype=F64)
    raise KeyError(kind)


PARAMS = ["a", "b", "c", "batch-rho", "batch-both"]


def _at(v: torch.Tensor, b: int) -> float:
    return float(v[b] if v.numel() > 1 else v[0])


def _problem(op, seed: int = 0):
    n = _batch(op)
    g = _gen(seed)
    xs = torch.randn(n, *op.img_shape, generator=g, dtype=F64)
    y = torch.randn(n, *op.meas_shape, generator=g, dtype=F64)
    return xs, y


def _check_against_dense(op, kind: str, tol: float, seed: int = 0, sqrt: bool = True):
    xs, y = _problem(op, seed)
    n = xs.shape[0]
    rho, sy = _params(kind, n)
    m, noise = op.pivot(xs, rho, y, sy)
    assert m.shape == xs.shape and m.dtype == F64
    dense_s = noise.to_dense(op.img_shape)
    assert dense_s.shape[0] == (n if (op.batch > 1 or rho.numel() > 1 or sy.numel() > 1) else 1)
    z = torch.randn(xs.shape, generator=_gen(seed + 1), dtype=F64)
    sz = noise.mul(z)
    all_positive = bool((sy > 0).all())
    if all_positive:
        pz = noise.solve(z)
    if sqrt and all_positive:
        half = noise.sqrt_mul(z)
        logz = noise.apply(torch.log, z)
        torch.testing.assert_close(noise.sqrt_mul(half), sz, rtol=0, atol=tol * sz.abs().max().item())
    for b in range(n):
        a = _dense(op, b)
        rb, sb = _at(rho, b), _at(sy, b)
        m_ref, s_ref = _dense_pivot(a, xs[b].flatten(), y[b].flatten(), rb, sb)
        assert _rel(m[b].flatten(), m_ref) < tol, ("m", b)
        assert _rel(dense_s[min(b, dense_s.shape[0] - 1)], s_ref, rb**2) < tol, ("to_dense", b)
        assert _rel(sz[b].flatten(), s_ref @ z[b].flatten(), rb**2 * z[b].norm().item()) < tol, ("mul", b)
        if all_positive:
            p_ref = torch.eye(a.shape[1], dtype=F64) / rb**2 + a.T @ a / sb**2
            # the reference S really is the inverse of the precision P
            assert _rel(s_ref @ p_ref, torch.eye(a.shape[1], dtype=F64)) < 1e-9
            assert _rel(pz[b].flatten(), p_ref @ z[b].flatten()) < tol, ("solve", b)
        if sqrt and all_positive:
            half_ref = _dense_fn(a, rb, sb, torch.sqrt) @ z[b].flatten()
            log_ref = _dense_fn(a, rb, sb, torch.log) @ z[b].flatten()
            assert _rel(half[b].flatten(), half_ref) < tol, ("sqrt", b)
            assert _rel(logz[b].flatten(), log_ref) < tol, ("log", b)
    return m, noise


# -- closed form ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*PARAMS, "batch-sy-with-zero"])
@pytest.mark.parametrize("name", SPECTRAL)
def test_spectral_pivot_and_covariance_match_dense(name, kind):
    _, noise = _check_against_dense(_make(name), kind, TOL)
    assert isinstance(noise, SpectralNoise)


def test_per_batch_operator_with_shared_parameters_gives_one_covariance_per_element():
    op = _make("inpaint-batch")
    xs, y = _problem(op)
    one = torch.ones(1, dtype=F64)
    _, noise = op.pivot(xs, 0.5 * one, y, 0.1 * one)
    assert noise.batch == op.batch == 3
    dense_s = noise.to_dense(op.img_shape)
    assert dense_s.shape == (3, 192, 192)
    for b in range(3):
        _, s_ref = _dense_pivot(_dense(op, b), xs[b].flatten(), y[b].flatten(), 0.5, 0.1)
        assert _rel(dense_s[b], s_ref) < TOL
        sel = noise._select(b)
        assert sel.batch == 1
        assert _rel(sel.to_dense(op.img_shape)[0], s_ref) < TOL


def test_rcond_threshold_on_singular_values():
    """At ``s_y = 0`` singular values above ``rcond * max k`` are inverted, those below are not."""
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=_gen(9), dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(16, 16, generator=_gen(10), dtype=F64))
    rcond = 1e-6
    k = torch.tensor([2.0, 1.0, 0.5, 20 * rcond, 0.05 * rcond, 0.0], dtype=F64)
    a = u @ torch.diag(k) @ v[:, :6].T
    op = DenseOperator(a, (1, 4, 4))
    op.rcond = rcond
    xs = torch.randn(1, 1, 4, 4, generator=_gen(11), dtype=F64)
    y = torch.randn(1, 6, generator=_gen(12), dtype=F64)
    m, noise = op.pivot(xs, torch.tensor([0.9], dtype=F64), y, torch.zeros(1, dtype=F64))
    m_ref, _ = _dense_pivot(a, xs.flatten(), y.flatten(), 0.9, 0.0)  # pinv cut at eps: keeps 4
    keep = torch.linalg.pinv(a, rtol=rcond)
    assert _rel(keep @ a, torch.linalg.pinv(a) @ a) > 0.1  # the 0.05 * rcond direction differs
    m_keep = keep @ y.flatten() + (torch.eye(16, dtype=F64) - keep @ a) @ xs.flatten()
    assert _rel(m.flatten(), m_keep) < 1e-8
    assert _rel(noise.to_dense((1, 4, 4))[0], 0.81 * (torch.eye(16, dtype=F64) - keep @ a)) < 1e-8
    assert _rel(m.flatten(), m_ref) > 1e-3


def test_solve_is_refused_when_singular():
    op = _make("avgpool")
    xs, y = _problem(op)
    _, noise = op.pivot(xs, torch.ones(1, dtype=F64), y, torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match="singular"):
        noise.solve(xs)
    mf = _matrix_free("closure")
    xs, y = _problem(mf)
    _, noise = mf.pivot(xs, torch.ones(1, dtype=F64), y, torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match="singular"):
        noise.solve(xs)


@pytest.mark.parametrize("name", ["avgpool", "blur-motion-batch", "cs"])
def test_no_measurement_limit_is_isotropic(name):
    """``s_y -> inf``: ``m -> x_t/a`` and ``S -> rho^2 I``, the unconditional denoiser."""
    op = _make(name)
    xs, y = _problem(op)
    rho = torch.linspace(0.2, 1.5, xs.shape[0], dtype=F64)
    m, noise = op.pivot(xs, rho, y, torch.tensor([1e7], dtype=F64))
    iso = IsotropicNoise(rho)
    assert _rel(m, xs) < 1e-12
    assert _rel(noise.to_dense(op.img_shape), iso.to_dense(op.img_shape)) < 1e-12


# -- isotropic ------------------------------------------------------------------------------


def test_isotropic_noise():
    rho = torch.tensor([0.3, 2.0], dtype=F64)
    iso = IsotropicNoise(rho)
    shape = (1, 4, 4)
    x = torch.randn(2, *shape, generator=_gen(13), dtype=F64)
    r2 = rho.reshape(2, 1, 1, 1) ** 2
    torch.testing.assert_close(iso.mul(x), r2 * x, rtol=1e-15, atol=0)
    torch.testing.assert_close(iso.solve(x), x / r2, rtol=1e-15, atol=0)
    torch.testing.assert_close(iso.sqrt_mul(x), r2.sqrt() * x, rtol=1e-15, atol=0)
    dense = iso.to_dense(shape)
    assert dense.shape == (2, 16, 16)
    torch.testing.assert_close(dense, (rho**2).reshape(2, 1, 1) * torch.eye(16, dtype=F64))
    assert iso._select(1).rho.item() == 2.0
    shared = IsotropicNoise(torch.tensor(0.5, dtype=F64))
    assert shared.batch == 1 and shared._select(4).rho.item() == 0.5
    like = torch.zeros(20000, *shape, dtype=F64)
    _assert_gaussian(shared.sample(like, _gen(14)).flatten(1), 0.25 * torch.eye(16, dtype=F64), 0.25)


# -- s_y -> 0 -------------------------------------------------------------------------------


CONTINUITY = SPECTRAL + MATRIX_FREE


@pytest.mark.parametrize("name", CONTINUITY)
def test_noiseless_limit(name):
    """At ``s_y = 0``: ``A^+ y`` on ``range(A^T)``, ``x_t/a`` with variance ``rho^2`` off it;
    ``s_y = 1e-6`` is close to it."""
    op = _any(name)
    xs, y = _problem(op, seed=3)
    n = xs.shape[0]
    rho = torch.linspace(0.3, 1.2, n, dtype=F64)
    m0, noise0 = op.pivot(xs, rho, y, torch.zeros(1, dtype=F64))
    m1, noise1 = op.pivot(xs, rho, y, torch.tensor([1e-6], dtype=F64))
    s0, s1 = noise0.to_dense(op.img_shape), noise1.to_dense(op.img_shape)
    z = torch.randn(xs.shape, generator=_gen(4), dtype=F64)
    sz = noise0.mul(z)
    tol = TOL_CG if name in MATRIX_FREE else TOL
    for b in range(n):
        a = _dense(op, b)
        pinv = torch.linalg.pinv(a)
        proj = pinv @ a
        null = torch.eye(a.shape[1], dtype=F64) - proj
        r2 = rho[b].item() ** 2
        assert _rel(proj @ m0[b].flatten(), pinv @ y[b].flatten()) < tol
        assert _rel(null @ m0[b].flatten(), null @ xs[b].flatten(), xs[b].norm().item()) < tol
        assert _rel(s0[b], r2 * null, r2) < tol
        assert _rel(sz[b].flatten(), r2 * null @ z[b].flatten(), r2 * z[b].norm().item()) < tol
    assert _rel(m1, m0) < 1e-7
    assert (s1 - s0).abs().max() < 1e-7 * rho.max() ** 2


@pytest.mark.parametrize("name", ["inpaint-batch", "blur-gauss", "cg-avgpool", "closure"])
def test_mixed_noiseless_batch(name):
    """Per-batch ``s_y`` with zeros: each element equals its own computation; no CG warning."""
    op = _any(name)
    tol = TOL_CG if name in MATRIX_FREE else TOL
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m, noise = _check_against_dense(op, "batch-sy-with-zero", tol, seed=5)
        draw = noise.sample(m, _gen(6))
    # element 0 has s_y = 0: its noise lies in the null space of A
    a = _dense(op, 0)
    measured = torch.linalg.pinv(a) @ a
    assert (measured @ draw[0].flatten()).norm() < 1e-7 * 0.8 * math.sqrt(a.shape[1])  # rho = 0.8
    assert draw[1:].norm() > 0


# -- matrix-free ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PARAMS)
@pytest.mark.parametrize("name", MATRIX_FREE)
def test_matrix_free_matches_dense(name, kind):
    op = _matrix_free(name)
    _, noise = _check_against_dense(op, kind, TOL_CG, sqrt=False)
    assert isinstance(noise, MatrixFreeNoise)


@pytest.mark.parametrize("name", SHARED)
def test_matrix_free_matches_closed_form(name):
    spectral, mf = _make(name), _matrix_free(f"cg-{name}")
    xs, y = _problem(spectral, seed=7)
    rho, sy = _params("batch-both", xs.shape[0])
    m_s, n_s = spectral.pivot(xs, rho, y, sy)
    m_m, n_m = mf.pivot(xs, rho, y, sy)
    assert _rel(m_m, m_s) < TOL_CG
    z = torch.randn(xs.shape, generator=_gen(8), dtype=F64)
    assert _rel(n_m.mul(z), n_s.mul(z)) < TOL_CG
    assert _rel(n_m.solve(z), n_s.solve(z)) < 1e-12


def test_matrix_free_has_no_spectral_functions():
    op = _matrix_free("closure")
    xs, y = _problem(op)
    _, noise = op.pivot(xs, torch.ones(1, dtype=F64), y, torch.ones(1, dtype=F64))
    with pytest.raises(NotImplementedError, match="MatrixFreeNoise"):
        noise.sqrt_mul(xs)


def test_conjugate_gradient():
    a = torch.randn(30, 30, generator=_gen(15), dtype=F64)
    spd = a @ a.T + 0.1 * torch.eye(30, dtype=F64)
    b = torch.randn(3, 30, generator=_gen(16), dtype=F64)
    x = conjugate_gradient(lambda v: v @ spd, b, max_iter=300)
    assert _rel(x, torch.linalg.solve(spd, b.T).T) < 1e-8
    with pytest.warns(RuntimeWarning, match="conjugate gradients"):
        conjugate_gradient(lambda v: v @ spd, b, max_iter=2)


# -- sampling -------------------------------------------------------------------------------


def _assert_gaussian(samples: torch.Tensor, s: torch.Tensor, scale: float) -> None:
    """``samples`` (N, d) ~ N(0, S): zero on the null space of ``S``, white after whitening.

    ``scale`` is the natural size of the variances (``rho^2``): eigenvalues of ``S`` below
    ``1e-9 scale`` count as zero.
    """
    evals, q = torch.linalg.eigh(s)
    keep = evals > 1e-9 * scale
    coords = samples @ q
    if (~keep).any():
        assert coords[:, ~keep].abs().max() < 1e-6 * math.sqrt(scale)
    if not keep.any():
        return
    w = coords[:, keep] / evals[keep].sqrt()
    n, r = w.shape
    # E ||C - I||_F^2 = (r^2 + r) / N; N ||mean||^2 ~ chi^2_r
    err = (w.T @ w / n - torch.eye(r, dtype=F64)).norm().item()
    assert err < 1.5 * math.sqrt((r * r + r) / n), err
    assert n * (w.mean(0) ** 2).sum().item() < r + 6 * math.sqrt(2 * r)


@functools.cache
def _small(name: str, reps: int = 1):
    """Small operators (d <= 16) for Monte Carlo; per-batch ones with their ``B`` masks or
    kernels tiled ``reps`` times (element ``b`` of tile ``r`` is element ``r B + b``)."""
    s = (1, 4, 4)
    if name == "denoise":
        return Denoise(s, F64)
    if name == "inpaint-batch":
        return Inpaint(random_masks(s, 2, 0.5, _gen(20)).to(F64).repeat(reps, 1, 1, 1), s)
    if name == "avgpool":
        return AvgPoolSR(s, 2, F64)
    if name == "bicubic":
        return SeparableSR(s, 2, dtype=F64)
    if name == "blur-motion-batch":
        return Blur(motion_kernels(2, 3, _gen(21)).to(F64).repeat(reps, 1, 1, 1), s)
    if name == "colorize":
        return Colorize((3, 2, 2), dtype=F64)
    if name == "cs":
        return OrthogonalCS(s, 6, _gen(22), F64)
    raise KeyError(name)


SMALL = ["denoise", "inpaint-batch", "avgpool", "bicubic", "blur-motion-batch", "colorize", "cs"]
N_MC = 20000


@pytest.mark.parametrize("sigma_y", [0.3, 0.0])
@pytest.mark.parametrize("name", SMALL)
def test_spectral_sample_covariance(name, sigma_y):
    op = _small(name)
    xs, y = _problem(op)
    nb = xs.shape[0]
    rho = torch.linspace(0.5, 1.5, nb, dtype=F64)
    _, noise = op.pivot(xs, rho, y, torch.tensor([sigma_y], dtype=F64))
    dense_s = noise.to_dense(op.img_shape)
    for b in range(nb):
        like = torch.zeros(N_MC, *op.img_shape, dtype=F64)
        _assert_gaussian(
            noise._select(b).sample(like, _gen(30 + b)).flatten(1), dense_s[b], rho[b].item() ** 2
        )
    # the batched sampler draws each element from its own covariance: tile the batch
    reps = N_MC // nb
    tiled = _small(name, reps)
    like = torch.zeros(reps * nb, *op.img_shape, dtype=F64)
    _, noise = tiled.pivot(
        like,
        rho.repeat(reps),
        like if tiled.meas_shape == op.img_shape else tiled.A(like),
        torch.tensor([sigma_y], dtype=F64),
    )
    draws = noise.sample(like, _gen(40)).reshape(reps, nb, *op.img_shape)
    for b in range(nb):
        _assert_gaussian(draws[:, b].flatten(1), dense_s[b], rho[b].item() ** 2)


@pytest.mark.parametrize("sigma_y", [0.3, 0.0])
@pytest.mark.parametrize("name", ["closure", "compressed-sensing"])
def test_matrix_free_sample_covariance(name, sigma_y):
    op = _matrix_free(name)
    rho = torch.tensor([0.8], dtype=F64)
    like = torch.zeros(N_MC, *op.img_shape, dtype=F64)
    y = torch.zeros(N_MC, *op.meas_shape, dtype=F64)
    _, noise = op.pivot(like, rho, y, torch.tensor([sigma_y], dtype=F64))
    _, s_ref = _dense_pivot(_dense(op, 0), like[0].flatten(), y[0].flatten(), 0.8, sigma_y)
    _assert_gaussian(noise.sample(like, _gen(50)).flatten(1), s_ref, 0.64)


# -- the per-pixel diagonal of f(S_t): what operators tell the networks ----------------------------------


def _operators():
    g = torch.Generator().manual_seed(3)
    small = (3, 8, 8)
    kernels = torch.stack([gaussian_kernel(1.0, 5)[0], gaussian_kernel(2.0, 5)[0]])
    return {
        "denoise": Denoise(small, dtype=torch.float64),
        "inpaint": Inpaint(random_masks(small, 2, 0.5, g, per_channel=True).double(), small),
        "avgpool": AvgPoolSR(small, 2, dtype=torch.float64),
        "bicubic": SeparableSR(small, 2, dtype=torch.float64),
        "blur": Blur(kernels.double(), small),
        "colorize": Colorize(small, dtype=torch.float64),
        "cs": OrthogonalCS(small, 40, g, dtype=torch.float64),
        "dense": DenseOperator(torch.randn(50, 3 * 8 * 8, generator=g, dtype=torch.float64), small),
        "dense-wide": DenseOperator(torch.randn(200, 3 * 8 * 8, generator=g, dtype=torch.float64), small),
    }


@pytest.mark.parametrize("name", list(_operators()))
def test_diagonal_is_the_exact_diagonal(name):
    """diag f(S_t) against a dense eigendecomposition of S_t (f(l) = l/(sd^2+l))."""
    op = _operators()[name]
    shape = op.img_shape
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    rho = torch.tensor([0.5, 1.7], dtype=torch.float64)
    sy = torch.tensor([0.05, 0.3], dtype=torch.float64)
    _, noise = op.pivot(x, rho, op.measure(x, 0.1, g), sy)

    def fn(l):
        return l / (0.25 + l)

    got = noise.diagonal(fn, x)
    dense = noise.to_dense(shape)
    evals, evecs = torch.linalg.eigh(dense)
    want = ((evecs**2) * fn(evals.clamp_min(0))[:, None, :]).sum(-1).reshape(2, *shape)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_diagonal_isotropic():
    x = torch.zeros(2, 3, 4, 4)
    got = IsotropicNoise(torch.tensor([1.0, 2.0])).diagonal(lambda l: l, x)
    assert torch.equal(got[0], torch.ones_like(x[0])) and torch.equal(got[1], torch.full_like(x[1], 4.0))


def test_diagonal_needs_a_closed_form():
    """A generic decomposable physics has no closed-form (V o V); a matrix-free S_t has no spectrum."""
    x = torch.zeros(1, 1, 8, 8, dtype=F64)
    generic = from_physics(dinv.physics.Inpainting(img_size=(1, 8, 8), mask=torch.ones(1, 1, 8, 8, dtype=F64)), C1)
    _, noise = generic.pivot(x, torch.ones(1, dtype=F64), x, torch.full((1,), 0.1, dtype=F64))
    with pytest.raises(NotImplementedError, match="range_diagonal"):
        noise.diagonal(torch.sqrt, x)
    cg = MatrixFreeNoise(MatrixFreeOperator(dinv.physics.Denoising(), C1, dtype=F64), torch.ones(1), torch.ones(1))
    with pytest.raises(NotImplementedError, match="spectral"):
        cg.diagonal(torch.sqrt, x)
