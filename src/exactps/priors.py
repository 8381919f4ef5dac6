"""Priors with exact denoisers and exact posteriors: the references every test is checked against.

* :class:`GaussianMixture`: ``x0 ~ sum_k pi_k N(mu_k, C_k)``. Its MMSE denoiser for
  ``m = x0 + N(0, S)`` is closed form (``m | k ~ N(mu_k, C_k + S)``), and so is the
  posterior ``p(x0 | y)`` for a dense ``A``.
* :class:`FiniteImagePrior`: a uniform mixture of Diracs on ``N`` images. ``E[x0 | m]`` is a
  softmax over atoms of ``-||m - x_k||^2_{S^{-1}} / 2``; ``p(x_k | y)`` is proportional to
  ``exp(-||y - A x_k||^2 / 2 s_y^2)``.

Both compute in float64 and accept any :class:`~exactps.covariance.PivotNoise`.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor

from exactps.covariance import IsotropicNoise, PivotNoise, SpectralNoise
from exactps.interpolants import Interpolant, as_time
from exactps.operators.base import LinearOperator

__all__ = ["FiniteImagePrior", "GaussianMixture", "dense_matrix"]

#: operators whose SVD a mixture keeps (one measurement's sampler calls share one operator)
_OPERATOR_CACHE_SIZE = 4


def dense_matrix(operator: LinearOperator, dtype: torch.dtype = torch.float64) -> Tensor:
    """``A`` as an ``(m, d)`` matrix (small images; the operator must be shared by the batch)."""
    d = math.prod(operator.img_shape)
    eye = torch.eye(d, dtype=operator._dtype(), device=operator._device())
    cols = operator.A(eye.reshape(d, *operator.img_shape)).reshape(d, -1)
    return cols.T.to(dtype)


def _check_sigma_y_float(sigma_y: float | Tensor) -> None:
    """A named ``ValueError`` for a ``s_y`` that is not a finite number ``>= 0`` whose square is finite in
    its own precision (``1e30`` as a float32 tensor squares to ``inf``: a failed Cholesky otherwise)."""
    if isinstance(sigma_y, Tensor) and sigma_y.numel() != 1:
        raise ValueError(f"sigma_y must be one number here, got {sigma_y.numel()} values")
    try:
        v = float(sigma_y)
    except (TypeError, ValueError) as err:
        raise TypeError(f"sigma_y must be a number, got {type(sigma_y).__name__}") from err
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"sigma_y must be finite and >= 0, got {v}")
    if not math.isfinite(float(sigma_y**2)):
        raise ValueError(
            f"sigma_y = {v:g} overflows when squared ({sigma_y.dtype if isinstance(sigma_y, Tensor) else 'float'}): "
            "the measurement would carry no information; use a smaller s_y (or a float64 value)"
        )


def _check_noise(noise: PivotNoise) -> None:
    """A named error for a pivot covariance whose ``s_y`` or ``rho`` is NaN or overflows when squared in
    the predictor's precision, before the exact denoisers' linear algebra fails cryptically."""
    for name in ("rho", "sigma_y"):
        v = getattr(noise, name)
        # +inf is legitimate (s_y = inf: no measurement); NaN, or a finite value whose square overflows, is not
        if bool(torch.isnan(v).any()) or bool((torch.isfinite(v) & ~torch.isfinite(v * v)).any()):
            raise ValueError(
                f"the pivot noise's {name} = {v.flatten()[:4].tolist()} is NaN or overflows when squared in "
                f"{v.dtype} (e.g. s_y = 1e30 in float32): use a smaller s_y or float64"
            )


@dataclass
class GaussianMixture:
    """``sum_k weights_k N(means_k, covs_k)`` over images of shape ``img_shape`` (``d = prod``)."""

    weights: Tensor  # (K,)
    means: Tensor  # (K, d)
    covs: Tensor  # (K, d, d)
    img_shape: tuple[int, ...]
    _operator_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        d = math.prod(self.img_shape)
        k = self.weights.shape[0] if self.weights.ndim == 1 else -1
        if k < 1:
            raise ValueError(f"a mixture needs weights of shape (K,) with K >= 1, got {tuple(self.weights.shape)}")
        if self.means.shape != (k, d) or self.covs.shape != (k, d, d):
            raise ValueError(
                f"means must be (K, d) = ({k}, {d}) and covs (K, d, d); got "
                f"{tuple(self.means.shape)} and {tuple(self.covs.shape)}"
            )
        if (self.weights < 0).any() or not torch.isclose(
            self.weights.sum(), torch.ones((), dtype=self.weights.dtype)
        ):
            raise ValueError("weights must be non-negative and sum to 1")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __getstate__(self) -> dict:
        """Pickling and deep copies leave the operator cache behind (it holds weak references)."""
        return {k: v for k, v in self.__dict__.items() if k != "_operator_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _operator_cache={})

    @staticmethod
    def random(
        img_shape: tuple[int, ...],
        n_components: int,
        generator: torch.Generator | None = None,
        scale: float = 0.5,
        rank: int | None = None,
        decades: float = 3.0,
    ) -> GaussianMixture:
        """A random mixture with anisotropic, correlated covariances (spectra spanning ``decades``)."""
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
        if len(img_shape) == 0 or any(int(n) < 1 for n in img_shape):
            raise ValueError(f"img_shape must be positive sizes such as (C, H, W), got {tuple(img_shape)}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be >= 1 (or None: full rank), got {rank}")
        d = math.prod(img_shape)
        kw = {"generator": generator, "dtype": torch.float64}
        w = torch.rand(n_components, **kw) + 0.5
        means = scale * torch.randn(n_components, d, **kw)
        rank = rank or d
        covs = []
        for _ in range(n_components):
            q, _ = torch.linalg.qr(torch.randn(d, d, **kw))
            spec = (0.3 * scale) ** 2 * torch.logspace(0, -decades, d, dtype=torch.float64)
            spec[rank:] = spec[rank:] * 1e-3
            covs.append((q * spec) @ q.T)
        return GaussianMixture(w / w.sum(), means, torch.stack(covs), tuple(img_shape))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        evals, evecs = torch.linalg.eigh(self.covs)  # covariances may be singular (s_y = 0 posteriors)
        chol = evecs * evals.clamp_min(0).sqrt().unsqueeze(1)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        x = self.means[comp] + (chol[comp] @ z.unsqueeze(-1)).squeeze(-1)
        return x.reshape(n, *self.img_shape)

    # -- the exact denoiser -------------------------------------------------------------------
    def denoise(self, m: Tensor, noise: PivotNoise) -> Tensor:
        """``E[x0 | m]`` for ``m = x0 + N(0, S)``, exactly (dense linear algebra, float64).

        ``S_t = (I / rho^2 + A^T A / s_y^2)^{-1}`` is never formed as a dense product: its eigenbasis
        comes from the SVD of ``A`` (as a float64 matrix) and its variances in closed form
        (``rho^2 s_y^2 / (k^2 rho^2 + s_y^2)``; ``rho^2`` off the row space), so that the Cholesky
        factor of ``C_k + S_t``, written in that basis, stays accurate when ``rho`` is huge (early
        steps of the flow interpolant) and for float32 operators."""
        _check_noise(noise)
        dtype, shape = m.dtype, m.shape
        mf = m.reshape(shape[0], -1).to(torch.float64)
        if noise.batch == 1:
            out = self._denoise_shared(mf, *self._noise_eigen(noise))
        else:
            parts = [self._denoise_shared(mf[b : b + 1], *self._noise_eigen(noise._select(b)))
                     for b in range(shape[0])]  # fmt: skip
            out = torch.cat(parts)
        return out.to(dtype).reshape(shape)

    def _noise_eigen(self, noise: PivotNoise) -> tuple[Tensor | None, Tensor, Tensor]:
        """``(Q^T, var, Q^T C_k Q)`` with ``S_t = Q diag(var) Q^T`` in float64, for one covariance (batch 1).

        Isotropic noise: ``Q = I`` (returned as None) and ``var = rho^2``. Otherwise ``Q`` comes from the
        full SVD of ``A`` (``dense_matrix`` of the noise's operator) and ``var`` in closed form (``rho^2
        s_y^2 / (k^2 rho^2 + s_y^2)``; ``rho^2`` off the row space; directions with ``k <= 1e-12 k_max``
        count as unmeasured when ``s_y = 0``). The SVD and the rotated covariances depend on the operator
        only and are kept for the last few operators (by identity), so that a sampler's many calls on one
        measurement factor ``A`` once."""
        d = self.dim
        rho2 = noise.rho.reshape(-1)[0].to(torch.float64) ** 2
        operator = getattr(noise, "operator", None)
        if operator is None:
            return None, rho2.expand(d).clone(), self.covs
        vt, kk, rotated = self._operator_basis(operator)
        sy2 = noise.sigma_y.reshape(-1)[0].to(torch.float64) ** 2
        if float(sy2) == 0:
            measured = kk > 1e-12 * kk.max().clamp_min(1e-300)
            var = torch.where(measured, torch.zeros_like(kk), rho2.expand(d))
        else:
            var = rho2 * sy2 / (kk**2 * rho2 + sy2)
        return vt, var, rotated

    def _operator_basis(self, operator: LinearOperator) -> tuple[Tensor, Tensor, Tensor]:
        """``(V^T, k, V^T C_k V)`` for ``A = U diag(k) V^T`` (``k`` padded with zeros to ``d``), cached."""
        hit = self._operator_cache.get(id(operator))
        if hit is not None and hit[0]() is operator:
            return hit[1], hit[2], hit[3]
        _, k, vt = torch.linalg.svd(dense_matrix(operator), full_matrices=True)
        kk = torch.zeros(self.dim, dtype=torch.float64)
        kk[: k.numel()] = k
        rotated = vt @ self.covs @ vt.T
        if len(self._operator_cache) >= _OPERATOR_CACHE_SIZE:
            self._operator_cache.clear()
        self._operator_cache[id(operator)] = (weakref.ref(operator), vt, kk, rotated)
        return vt, kk, rotated

    def _denoise_shared(self, m: Tensor, basis: Tensor | None, var: Tensor, covs: Tensor) -> Tensor:
        """``E[x0 | m]`` for ``S = Q diag(var) Q^T`` (``basis`` = ``Q^T``, rows orthonormal; None: ``Q = I``),
        ``covs`` = ``Q^T C_k Q``."""
        tot = covs + torch.diag_embed(var)
        chol, info = torch.linalg.cholesky_ex(tot)
        if bool((info > 0).any()):
            raise ValueError(
                "the Gaussian mixture's exact denoiser could not factor C_k + S_t (a component covariance is "
                "singular where S_t is zero: noiseless measurement of a degenerate prior)"
            )
        diff = m.unsqueeze(0) - self.means.unsqueeze(1)  # (K, B, d)
        diff = diff if basis is None else diff @ basis.T  # rotated
        sol = torch.cholesky_solve(diff.transpose(1, 2), chol)  # (K, d, B)
        maha = (diff.transpose(1, 2) * sol).sum(1)  # (K, B)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        logp = torch.log(self.weights).unsqueeze(1) - 0.5 * (maha + logdet.unsqueeze(1))
        resp = torch.softmax(logp, dim=0)  # (K, B)
        # E[x0 | m, k] = mu_k + C_k Q sol_k = mu_k + Q (Q^T C_k Q) sol_k: mix in the rotated basis, rotate once
        mixed = torch.einsum("kb,kdb->bd", resp, covs @ sol)  # (B, d)
        return resp.T @ self.means + (mixed if basis is None else mixed @ basis)

    # -- exact posteriors (references) ------------------------------------------------------
    def posterior(self, a_mat: Tensor, y: Tensor, sigma_y: float) -> GaussianMixture:
        """``p(x0 | y)`` for ``y = A x0 + N(0, s_y^2 I)`` with a dense ``A`` (``s_y = 0`` allowed)."""
        _check_sigma_y_float(sigma_y)
        a_mat = a_mat.to(torch.float64)
        yv = y.reshape(-1).to(torch.float64)
        if sigma_y == 0:  # keep only the measured directions: y_r = U_r^T y = diag(k_r) V_r^T x0
            u, k, vt = torch.linalg.svd(a_mat, full_matrices=False)
            keep = k > 1e-12 * k.max()
            a_mat, yv = k[keep].unsqueeze(1) * vt[keep], u[:, keep].T @ yv
        ac = a_mat @ self.covs  # (K, m, d)
        gram = ac @ a_mat.T + sigma_y**2 * torch.eye(a_mat.shape[0], dtype=torch.float64)
        chol = torch.linalg.cholesky(gram)
        resid = yv - self.means @ a_mat.T  # (K, m)
        sol = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)
        maha = (resid * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logw = torch.log(self.weights) - 0.5 * (maha + logdet)
        gain = torch.cholesky_solve(ac, chol).transpose(1, 2)  # C A^T G^{-1}: (K, d, m)
        means = self.means + (gain @ resid.unsqueeze(-1)).squeeze(-1)
        covs = self.covs - gain @ ac
        covs = 0.5 * (covs + covs.transpose(1, 2))
        return GaussianMixture(torch.softmax(logw, 0), means, covs, self.img_shape)

    def score(self, interp: Interpolant, x_t: Tensor, t: float) -> Tensor:
        """``grad log p(x_t)`` computed directly: ``x_t | k ~ N(a mu_k, a^2 C_k + s^2 I)``."""
        tt = as_time(t)
        a, s = float(interp.alpha(tt)), float(interp.sigma(tt))
        xf = x_t.reshape(x_t.shape[0], -1).to(torch.float64)
        cov = a**2 * self.covs + s**2 * torch.eye(self.dim, dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        diff = xf.unsqueeze(0) - a * self.means.unsqueeze(1)  # (K, B, d)
        sol = torch.cholesky_solve(diff.transpose(1, 2), chol)  # (K, d, B)
        maha = (diff.transpose(1, 2) * sol).sum(1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        resp = torch.softmax(torch.log(self.weights).unsqueeze(1) - 0.5 * (maha + logdet.unsqueeze(1)), 0)
        score = -torch.einsum("kb,kdb->bd", resp, sol)
        return score.reshape(x_t.shape)


def _atom_metric(noise: PivotNoise, v: Tensor) -> Tensor:
    """``S^{-1} v``, with exactly measured directions (zero variance) given a huge finite weight."""
    if isinstance(noise, SpectralNoise | IsotropicNoise):

        def inv(var: Tensor) -> Tensor:
            floor = 1e-12 * var.abs().amax().clamp_min(1e-300)
            return 1.0 / var.clamp_min(floor)

        return noise.apply(inv, v)
    return noise.solve(v)


@dataclass
class FiniteImagePrior:
    """Uniform mixture of Diracs on ``atoms`` (shape ``(N, *img_shape)``)."""

    atoms: Tensor
    chunk: int = 512

    @property
    def img_shape(self) -> tuple[int, ...]:
        return tuple(self.atoms.shape[1:])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.randint(0, self.atoms.shape[0], (n,), generator=generator)
        return self.atoms[idx]

    def logits(self, m: Tensor, noise: PivotNoise) -> Tensor:
        """``-||m - x_k||^2_{S^{-1}} / 2`` for every batch element and atom: ``(B, N)``.

        Expanded as ``<m,Wm> - 2<Wm,x_k> + <x_k,W x_k>`` so memory is ``O(B N)``;
        ``W x_k`` is formed in chunks of atoms.
        """
        m64 = m.to(torch.float64)
        atoms = self.atoms.to(torch.float64)
        n_b = m.shape[0]
        if not _shared(noise):
            return torch.cat([self.logits(m[b : b + 1], noise._select(b)) for b in range(n_b)])
        noise64 = _as64(noise)
        wm = _atom_metric(noise64, m64)
        mwm = (m64 * wm).flatten(1).sum(1)  # (B,)
        cross, kwk = [], []
        for start in range(0, atoms.shape[0], self.chunk):
            xk = atoms[start : start + self.chunk]
            wx = _atom_metric(noise64, xk)
            kwk.append((xk * wx).flatten(1).sum(1))
            cross.append(wm.flatten(1) @ xk.flatten(1).T)
        return -0.5 * (mwm.unsqueeze(1) - 2 * torch.cat(cross, 1) + torch.cat(kwk).unsqueeze(0))

    def denoise(self, m: Tensor, noise: PivotNoise) -> Tensor:
        """``E[x0 | m] = sum_k softmax_k(logits) x_k``."""
        _check_noise(noise)
        w = torch.softmax(self.logits(m, noise), dim=1)
        out = w @ self.atoms.to(torch.float64).flatten(1)
        return out.to(m.dtype).reshape(m.shape)

    def posterior_weights(self, operator: LinearOperator, y: Tensor, sigma_y: float) -> Tensor:
        """Exact ``p(x_k | y)``, proportional to ``exp(-||y - A x_k||^2 / 2 s_y^2)``: shape ``(N,)``."""
        _check_sigma_y_float(sigma_y)
        if sigma_y <= 0:
            raise ValueError("the finite-image posterior needs sigma_y > 0")
        atoms = self.atoms.to(y.dtype)
        d2 = torch.cat(
            [
                ((y - operator.A(atoms[i : i + self.chunk])) ** 2).flatten(1).sum(1)
                for i in range(0, atoms.shape[0], self.chunk)
            ]
        )
        return torch.softmax(-d2.to(torch.float64) / (2 * sigma_y**2), dim=0)

    def nearest_atom(self, x: Tensor) -> Tensor:
        """Index of the closest atom (Euclidean) for each sample: ``(B,)``."""
        a = self.atoms.to(torch.float64).flatten(1)
        xf = x.to(torch.float64).flatten(1)
        d2 = (xf**2).sum(1, keepdim=True) - 2 * xf @ a.T + (a**2).sum(1).unsqueeze(0)
        return d2.argmin(1)


def _shared(noise: PivotNoise) -> bool:
    """True when every batch element has the same covariance."""
    rho, sy = noise.rho, noise.sigma_y
    same = bool((rho == rho[0]).all()) and bool((sy == sy[0]).all())
    if isinstance(noise, SpectralNoise):
        same = same and noise.operator.batch == 1 and noise.var.shape[0] == 1
    return same


def _as64(noise: PivotNoise) -> PivotNoise:
    """The same covariance in float64 (batch element 0 when shared)."""
    noise = noise._select(0)
    if isinstance(noise, IsotropicNoise):
        return IsotropicNoise(noise.rho.to(torch.float64))
    if isinstance(noise, SpectralNoise):
        op = noise.operator
        if op._dtype() != torch.float64:
            op = _to64(op)
        return SpectralNoise(
            op, noise.var.to(torch.float64), noise.rho.to(torch.float64), noise.sigma_y.to(torch.float64)
        )
    return noise


def _to64(op: LinearOperator) -> LinearOperator:
    return op.to_dtype(torch.float64)
