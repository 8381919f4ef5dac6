"""Linear measurement operators and the closed-form EPS quantities they provide.

Every operator maps images ``x`` of shape ``(B, *img_shape)`` to measurements ``y = A x`` and
knows how to form the pivot (METHOD.md)

    m = x_t/a + S_t A^T (y - A x_t/a) / s_y^2
      = x_t/a + V [ rho^2 k U^T r / (k^2 rho^2 + s_y^2) ],   r = y - A x_t/a,  rho = s/a,

and the covariance ``S_t`` (:mod:`exactps.covariance`). :class:`SpectralOperator` does both in
closed form from a deepinv :class:`~deepinv.physics.DecomposablePhysics` (``A = U diag(k) V^T``);
:class:`MatrixFreeOperator` uses conjugate gradients with any deepinv ``LinearPhysics``.

``s_y = 0`` is the limit, never a division by zero: measured directions take ``A^+ y`` exactly
and directions whose singular value is below ``rcond * max k`` count as unmeasured, as in a
pseudo-inverse.
"""

from __future__ import annotations

import copy
import warnings
from abc import abstractmethod

import torch
from deepinv.physics import DecomposablePhysics, LinearPhysics
from torch import Tensor, nn

from exactps.batch import check_sigma_y, per_batch
from exactps.covariance import MatrixFreeNoise, PivotNoise, SpectralNoise

__all__ = ["LinearOperator", "MatrixFreeOperator", "SpectralOperator", "default_rcond"]


def default_rcond(dtype: torch.dtype) -> float:
    """Relative cut-off ``rcond``: singular values ``k <= rcond * max k`` count as zero when ``s_y = 0``."""
    return 1e-5 if dtype == torch.float64 else 3e-3


def _check_tensor(
    name: str,
    v: Tensor,
    shape: tuple[int, ...],
    dtype: torch.dtype | None,
    device: torch.device | None,
) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if tuple(v.shape[1:]) != tuple(shape) or v.ndim != len(shape) + 1:
        raise ValueError(
            f"{name} must have shape (batch, {', '.join(map(str, shape))}), got {tuple(v.shape)}"
        )
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {v.dtype}")
    if dtype is not None and v.dtype != dtype:
        raise TypeError(f"{name} has dtype {v.dtype} but the operator uses {dtype}")
    if device is not None and v.device != device:
        raise TypeError(f"{name} is on {v.device} but the operator is on {device}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinite values")


class LinearOperator(nn.Module):
    """A linear operator ``A: R^{img_shape} -> R^{meas_shape}`` with a measurement model.

    ``batch`` is 1 for an operator shared by the whole batch, or the number of batch
    elements when each has its own (mask, kernel, ...). The dtype and device are those of the
    physics' floating-point buffers; ``dtype`` declares the dtype of a physics that has none
    (e.g. closures over a matrix).
    """

    def __init__(self, physics: LinearPhysics, img_shape: tuple[int, ...], dtype: torch.dtype | None = None):
        super().__init__()
        self._declared_dtype = dtype
        self.physics = physics
        self.img_shape = tuple(int(n) for n in img_shape)
        with torch.no_grad():
            probe = torch.zeros(1, *self.img_shape, dtype=self._dtype(), device=self._device())
            y = physics.A(probe)
        self.meas_shape = tuple(y.shape[1:])

    # -- bookkeeping --------------------------------------------------------------------------
    def _ref(self) -> Tensor | None:
        for name, t in self.named_buffers():
            if t.is_floating_point() and not name.endswith("_device_holder"):
                return t
        return None

    def _dtype(self) -> torch.dtype:
        ref = self._ref()
        if ref is not None:
            return ref.dtype
        return self._declared_dtype if self._declared_dtype is not None else torch.get_default_dtype()

    def _device(self) -> torch.device:
        ref = self._ref()
        return ref.device if ref is not None else torch.device("cpu")

    @property
    def batch(self) -> int:
        return 1

    def to_dtype(self, dtype: torch.dtype) -> LinearOperator:
        """A copy in ``dtype``; complex buffers (e.g. FFT phases) become the matching complex type."""
        out = copy.deepcopy(self)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        for module in out.modules():
            for name, buf in list(module.named_buffers(recurse=False)):
                if buf.is_complex():
                    module._buffers[name] = buf.to(cdtype)
                elif buf.is_floating_point():
                    module._buffers[name] = buf.to(dtype)
        out._declared_dtype = dtype
        return out

    def _expected(self) -> tuple[torch.dtype | None, torch.device | None]:
        """The dtype and device inputs must have (``None``: not known, not checked)."""
        ref = self._ref()
        if ref is not None:
            return ref.dtype, ref.device
        return self._declared_dtype, None

    def check_image(self, x: Tensor, name: str = "x") -> None:
        """Raise a ``ValueError``/``TypeError`` naming ``name`` if ``x`` does not fit this operator."""
        _check_tensor(name, x, self.img_shape, *self._expected())
        self._check_batch(name, x.shape[0])

    def check_measurement(self, y: Tensor, name: str = "y") -> None:
        _check_tensor(name, y, self.meas_shape, *self._expected())
        self._check_batch(name, y.shape[0])

    def _check_batch(self, name: str, n: int) -> None:
        if self.batch not in (1, n):
            raise ValueError(
                f"{name} has batch size {n} but the operator holds {self.batch} different "
                "operators (one per batch element)"
            )

    # -- the operator ---------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        """``y = A x`` (noiseless)."""
        return self.physics.A(x)

    def At(self, y: Tensor) -> Tensor:
        """``A^T y``."""
        return self.physics.A_adjoint(y)

    def measure(self, x: Tensor, sigma_y: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``y = A x + s_y n`` with ``n ~ N(0, I)``. ``x`` must be ``(B, *img_shape)`` (``B`` = the
        operator's batch, or any ``B`` for a shared operator) and ``s_y`` finite and ``>= 0`` (a scalar
        or one value per image); anything else is a ``ValueError``/``TypeError`` naming what is wrong."""
        _check_tensor("x", x, self.img_shape, None, None)  # dtype/device: as before (A converts or fails)
        self._check_batch("x", x.shape[0])
        check_sigma_y(sigma_y, x)
        y = self.A(x)
        sy = per_batch(torch.as_tensor(sigma_y, dtype=y.dtype, device=y.device).reshape(-1), y.ndim)
        n = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        return y + sy * n

    def observation_image(self, y: Tensor) -> Tensor:
        """The measurement shown as an image (what a conditional network such as Palette is given):
        ``A^T y`` here; :class:`SpectralOperator` rescales it, and operators whose ``y`` already is an
        image of the input's shape (:class:`~exactps.operators.library.Blur`) return ``y`` itself."""
        return self.At(y)

    @abstractmethod
    def select(self, b: int) -> LinearOperator:
        """The operator of batch element ``b`` (itself when the operator is shared)."""

    @abstractmethod
    def pivot(self, x_scaled: Tensor, rho: Tensor, y: Tensor, sigma_y: Tensor) -> tuple[Tensor, PivotNoise]:
        """Pivot ``m`` and covariance ``S_t`` from ``x_t / a``, ``rho = s/a`` and ``y``.

        ``rho`` and ``sigma_y`` have shape ``(B,)`` or ``(1,)``. No validation (see
        :func:`exactps.posterior.pivot`).
        """


class SpectralOperator(LinearOperator):
    """Operator with a closed-form SVD ``A = U diag(k) V^T``, from deepinv's DecomposablePhysics.

    ``V`` must have orthonormal columns; it may be thin (``full_basis=False``, e.g.
    colorization or super-resolution), in which case the orthogonal complement of ``range(V)``
    is the null space.
    """

    def __init__(
        self,
        physics: DecomposablePhysics,
        img_shape: tuple[int, ...],
        full_basis: bool,
        rcond: float | None = None,
    ):
        if not isinstance(physics, DecomposablePhysics):
            raise TypeError(
                "SpectralOperator needs a deepinv DecomposablePhysics (a known SVD); "
                f"got {type(physics).__name__}: wrap it in MatrixFreeOperator instead"
            )
        super().__init__(physics, img_shape)
        self.full_basis = full_basis
        self.rcond = rcond

    @property
    def batch(self) -> int:
        return int(self.singular_values(self.coef_ndim).shape[0])

    @property
    def coef_ndim(self) -> int:
        """Number of dimensions of the coefficients ``V^T x`` (batch included)."""
        if not hasattr(self, "_coef_ndim"):
            probe = torch.zeros(1, *self.img_shape, dtype=self._dtype(), device=self._device())
            with torch.no_grad():
                self._coef_ndim = self.Vt(probe).ndim
        return self._coef_ndim

    def Vt(self, x: Tensor) -> Tensor:
        """Coefficients ``V^T x``."""
        return self.physics.V_adjoint(x)

    def V(self, c: Tensor) -> Tensor:
        """Image ``V c``."""
        return self.physics.V(c)

    def singular_values(self, ndim: int) -> Tensor:
        """``k`` in the coefficient layout, with ``ndim`` dimensions (batch first)."""
        sv = self.physics.mask
        if not isinstance(sv, Tensor):
            sv = torch.as_tensor(sv, dtype=self._dtype(), device=self._device())
        sv = sv.abs()
        while sv.ndim < ndim:
            sv = sv.unsqueeze(0)
        return sv

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``diag(V diag(g) V^T)`` in pixel space (broadcastable to ``like``) for coefficients ``g`` in the
        layout of :meth:`Vt`: how this operator describes ``S_t`` per pixel
        (:meth:`exactps.covariance.SpectralNoise.diagonal`, the networks' ``"map"`` conditioning).

        Each operator of :mod:`exactps.operators.library` has a closed form; a generic
        ``DecomposablePhysics`` has none (``NotImplementedError``)."""
        raise NotImplementedError(
            f"no exact per-pixel variance map for operator {type(self).__name__}: implement "
            "range_diagonal(g, like) = diag(V diag(g) V^T), or use conditioning='scalar'"
        )

    def observation_image(self, y: Tensor) -> Tensor:
        """``A^T y / k_max^2`` (``k_max``: the largest singular value, per operator of the batch): the
        pseudo-inverse ``A^+ y`` when the nonzero singular values are equal (the masked image for
        inpainting, the nearest-upsampled image for average-pooling super-resolution), ``A^T y`` at
        image scale otherwise; zeros where ``A = 0``."""
        out = self.At(y)
        k = self.singular_values(self.coef_ndim)
        k2 = k.reshape(k.shape[0], -1).amax(1).to(out.dtype) ** 2
        return out / per_batch(torch.where(k2 > 0, k2, torch.ones_like(k2)), out.ndim)

    def select(self, b: int) -> SpectralOperator:
        if self.batch == 1:
            return self
        return self._select_batch(b)

    def _select_batch(self, b: int) -> SpectralOperator:
        raise NotImplementedError(f"{type(self).__name__} does not support per-element selection")

    def pivot(self, x_scaled: Tensor, rho: Tensor, y: Tensor, sigma_y: Tensor) -> tuple[Tensor, PivotNoise]:
        r = y - self.A(x_scaled)
        ut_r = self.physics.U_adjoint(r)
        k = self.singular_values(ut_r.ndim)
        rho2 = per_batch(rho, ut_r.ndim) ** 2
        sy2 = per_batch(sigma_y, ut_r.ndim) ** 2
        k2 = k**2
        rcond = self.rcond if self.rcond is not None else default_rcond(x_scaled.dtype)
        kmax = k.reshape(k.shape[0], -1).amax(dim=1)
        measured = k > rcond * per_batch(kmax, k.ndim)
        # rho^2 s_y^2 / (k^2 rho^2 + s_y^2): the variance; the gain rho^2 k / (k^2 rho^2 + s_y^2)
        denom = k2 * rho2 + sy2
        usable = (sy2 > 0) | measured  # noiseless: tiny singular values count as unmeasured
        safe = torch.where(usable, denom, torch.ones_like(denom))
        gain = torch.where(usable, rho2 * k / safe, torch.zeros_like(denom))
        var = torch.where(usable, rho2 * sy2 / safe, rho2.expand_as(denom))
        m = x_scaled + self.V(gain * ut_r)
        return m, SpectralNoise(self, var, rho, sigma_y, y)


class MatrixFreeOperator(LinearOperator):
    """Any deepinv ``LinearPhysics``: the pivot and ``S_t`` products by conjugate gradients.

    Solves ``(s_y^2 I + rho^2 A^T A) z = b`` per batch element; for ``s_y = 0`` CG started at
    zero returns the minimum-norm solution, i.e. the pseudo-inverse.
    """

    def __init__(
        self,
        physics: LinearPhysics,
        img_shape: tuple[int, ...],
        max_iter: int = 500,
        tol: float | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(physics, img_shape, dtype)
        self.max_iter = max_iter
        self.tol = tol

    def select(self, b: int) -> MatrixFreeOperator:
        return self

    def solve_regularized(self, b: Tensor, rho2: Tensor, sy2: Tensor) -> Tensor:
        """Solve ``(s_y^2 I + rho^2 A^T A) z = b`` by batched conjugate gradients from ``z = 0``."""

        def matvec(z: Tensor) -> Tensor:
            return sy2 * z + rho2 * self.At(self.A(z))

        return conjugate_gradient(matvec, b, self.max_iter, self.tol)

    def pivot(self, x_scaled: Tensor, rho: Tensor, y: Tensor, sigma_y: Tensor) -> tuple[Tensor, PivotNoise]:
        rho2 = per_batch(rho, x_scaled.ndim) ** 2
        sy2 = per_batch(sigma_y, x_scaled.ndim) ** 2
        r = y - self.A(x_scaled)
        # m - x_t/a = rho^2 (s_y^2 I + rho^2 A^T A)^{-1} A^T r
        z = self.solve_regularized(rho2 * self.At(r), rho2.expand(x_scaled.shape[0], *rho2.shape[1:]), sy2)
        return x_scaled + z, MatrixFreeNoise(self, rho, sigma_y, y)


def conjugate_gradient(matvec, b: Tensor, max_iter: int = 500, tol: float | None = None) -> Tensor:
    """Batched CG for symmetric positive semi-definite systems; each batch element separately.

    Stops when every element's residual is below ``tol * ||b||``; warns if it does not.
    """
    if tol is None:
        tol = 1e-10 if b.dtype == torch.float64 else 1e-5
    dims = tuple(range(1, b.ndim))

    def dot(u: Tensor, v: Tensor) -> Tensor:
        return (u * v).sum(dim=dims, keepdim=True)

    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = dot(r, r)
    b_norm2 = rs.clone()
    thresh = (tol**2) * b_norm2
    for _ in range(max_iter):
        if bool((rs <= thresh).all()):
            return x
        ap = matvec(p)
        pap = dot(p, ap)
        active = (rs > thresh) & (pap > 0)
        alpha = torch.where(active, rs / torch.where(active, pap, torch.ones_like(pap)), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        beta = torch.where(active, rs_new / torch.where(active, rs, torch.ones_like(rs)), 0.0)
        p = r + beta * p
        rs = torch.where(active, rs_new, rs)
    if not bool((rs <= thresh).all()):
        rel = torch.sqrt(rs / b_norm2.clamp_min(torch.finfo(b.dtype).tiny)).max().item()
        warnings.warn(
            f"conjugate gradients stopped after {max_iter} iterations with relative residual "
            f"{rel:.2e} > {tol:.1e}",
            RuntimeWarning,
            stacklevel=2,
        )
    return x
