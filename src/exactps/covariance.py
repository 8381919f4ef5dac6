"""The anisotropic noise covariance ``S_t`` of the pivot (METHOD.md, "The identity").

``S_t = P_t^{-1}`` with ``P_t = I / rho^2 + A^T A / s_y^2`` and ``rho = s/a``. With the SVD
``A = U diag(k) V^T`` (``V`` with orthonormal columns, possibly thin), ``S_t`` has variance
``l = rho^2 s_y^2 / (k^2 rho^2 + s_y^2)`` on each direction of ``range(V)`` and ``rho^2`` on its
orthogonal complement, so any function of it is

    f(S_t) x = V [ f(l) * V^T x ] + f(rho^2) (x - V V^T x).

Three representations share one interface: isotropic (no measurement, ``A = 0``), spectral
(closed form through an operator's ``V``) and matrix-free (conjugate gradients on ``P_t``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from exactps.batch import per_batch

__all__ = ["IsotropicNoise", "MatrixFreeNoise", "PivotNoise", "SpectralBasis", "SpectralNoise", "SystemSolver"]


class SpectralBasis(Protocol):
    """What :class:`SpectralNoise` needs of an operator ``A = U diag(k) V^T``
    (:class:`exactps.operators.SpectralOperator` provides it)."""

    full_basis: bool

    @property
    def batch(self) -> int: ...

    def Vt(self, x: Tensor) -> Tensor: ...

    def V(self, c: Tensor) -> Tensor: ...

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``diag(V diag(g) V^T)`` in pixel space for coefficients ``g`` in the layout of ``Vt``."""
        ...

    def observation_image(self, y: Tensor) -> Tensor:
        """The measurement ``y`` shown as an image (see :class:`PivotNoise.observation_image`)."""
        ...

    def select(self, b: int) -> SpectralBasis: ...


class SystemSolver(Protocol):
    """What :class:`MatrixFreeNoise` needs of an operator known through ``A`` and ``A^T``
    (:class:`exactps.operators.MatrixFreeOperator` provides it)."""

    def A(self, x: Tensor) -> Tensor: ...

    def At(self, y: Tensor) -> Tensor: ...

    def solve_regularized(self, b: Tensor, rho2: Tensor, sy2: Tensor) -> Tensor:
        """Solve ``(s_y^2 I + rho^2 A^T A) z = b``."""
        ...

    def select(self, b: int) -> SystemSolver: ...

    def observation_image(self, y: Tensor) -> Tensor: ...


def _pick(v: Tensor, b: int) -> Tensor:
    """Element ``b`` of a per-batch tensor (leading size ``B``), or ``v`` itself when shared (size 1)."""
    return v[b : b + 1] if v.shape[0] > 1 else v


class PivotNoise(ABC):
    """Covariance ``S_t`` of the pivot: ``m = x0 + N(0, S_t)``.

    ``rho`` (shape ``(B,)`` or ``(1,)``) is the std in unmeasured directions, ``s/a``;
    ``sigma_y`` (same shape) is the measurement noise std.
    """

    rho: Tensor
    sigma_y: Tensor
    #: The measurement the pivot was formed from (set by the operator's ``pivot``); ``None`` without one.
    y: Tensor | None = None

    def observation_image(self, like: Tensor) -> Tensor:
        """The measurement ``y`` as an image shaped like ``like`` (the operator's
        ``observation_image``: masked, upsampled or blurred ``y``), for networks told the observation
        as well as the pivot (``"obs"`` conditioning); zeros when there is no measurement."""
        operator = getattr(self, "operator", None)
        if operator is None:
            return torch.zeros_like(like)
        if self.y is None:
            raise ValueError(
                f"this {type(self).__name__} was built without its measurement y, so it has no observation "
                "image; form it with the operator's pivot()"
            )
        return operator.observation_image(self.y).to(like.dtype).expand_as(like)

    @abstractmethod
    def mul(self, x: Tensor) -> Tensor:
        """``S_t x``."""

    @abstractmethod
    def solve(self, x: Tensor) -> Tensor:
        """``S_t^{-1} x`` (``+inf`` weights on exactly measured directions are not allowed)."""

    @abstractmethod
    def sample(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``N(0, S_t)`` with the shape, dtype and device of ``like``."""

    def apply(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``f(S_t) x`` for an elementwise function ``f`` of the variances."""
        raise NotImplementedError(
            f"{type(self).__name__} has no spectral basis: f(S_t) is only available for "
            "operators with a closed-form SVD; use mul/solve/sample instead"
        )

    def diagonal(self, fn: Callable[[Tensor], Tensor], like: Tensor) -> Tensor:
        """The exact per-pixel diagonal of ``f(S_t)``, shaped like ``like`` ``(B, C, H, W)``: what a
        network is told about ``S_t`` (``exactps.networks``, ``"map"`` conditioning)."""
        raise NotImplementedError(
            f"no per-pixel variance map for {type(self).__name__}: it needs a closed-form spectral "
            "covariance (IsotropicNoise or SpectralNoise)"
        )

    def sqrt_mul(self, x: Tensor) -> Tensor:
        """``S_t^{1/2} x``."""
        return self.apply(torch.sqrt, x)

    def to_dense(self, img_shape: tuple[int, ...]) -> Tensor:
        """``S_t`` as a dense ``(B, d, d)`` matrix (small images only; for tests and oracles)."""
        d = 1
        for n in img_shape:
            d *= n
        ref = self.rho
        eye = torch.eye(d, dtype=ref.dtype, device=ref.device).reshape(d, *img_shape)
        cols = []
        for b in range(self.batch):
            cols.append(self._select(b).mul(eye).reshape(d, d).T)
        return torch.stack(cols)

    @property
    def batch(self) -> int:
        """Number of distinct covariances: 1 when shared by the whole batch, else ``B``."""
        return max(self.rho.shape[0], self.sigma_y.shape[0])

    @abstractmethod
    def _select(self, b: int) -> PivotNoise:
        """The covariance of batch element ``b`` broadcast over a batch of any size."""


class IsotropicNoise(PivotNoise):
    """``S_t = rho^2 I``: no measurement (the unconditional denoiser's noise)."""

    def __init__(self, rho: Tensor):
        self.rho = rho.reshape(-1)
        self.sigma_y = torch.full_like(self.rho, float("inf"))

    def _var(self, x: Tensor) -> Tensor:
        return per_batch(self.rho, x.ndim) ** 2

    def mul(self, x: Tensor) -> Tensor:
        return self._var(x) * x

    def solve(self, x: Tensor) -> Tensor:
        return x / self._var(x)

    def apply(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        return fn(self._var(x)) * x

    def diagonal(self, fn: Callable[[Tensor], Tensor], like: Tensor) -> Tensor:
        return self.apply(fn, torch.ones_like(like))

    def sample(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
        return per_batch(self.rho, like.ndim) * z

    def _select(self, b: int) -> IsotropicNoise:
        return IsotropicNoise(_pick(self.rho, b))


class SpectralNoise(PivotNoise):
    """Closed-form ``S_t`` in the basis ``V`` of a :class:`SpectralOperator`.

    ``var`` holds the variances ``l`` in the coefficient layout of ``operator.Vt``;
    directions outside ``range(V)`` have variance ``rho^2``.
    """

    def __init__(
        self, operator: SpectralBasis, var: Tensor, rho: Tensor, sigma_y: Tensor, y: Tensor | None = None
    ):
        self.operator = operator
        self.var = var
        self.rho = rho.reshape(-1)
        self.sigma_y = sigma_y.reshape(-1)
        self.y = y

    def apply(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        op = self.operator
        c = op.Vt(x)
        range_part = op.V(fn(self.var) * c)
        var_null = per_batch(self.rho, x.ndim) ** 2
        if op.full_basis:
            return range_part
        return range_part + fn(var_null) * (x - op.V(c))

    def mul(self, x: Tensor) -> Tensor:
        return self.apply(lambda v: v, x)

    def diagonal(self, fn: Callable[[Tensor], Tensor], like: Tensor) -> Tensor:
        """``diag f(S_t) = (V o V) f(l) + f(rho^2) (1 - (V o V) 1)``, the first term from the operator's
        :meth:`~SpectralBasis.range_diagonal` (the second vanishes when ``V`` spans the image space)."""
        op = self.operator
        var = torch.broadcast_to(self.var, op.Vt(like).shape)
        diag = op.range_diagonal(fn(var), like)
        if not op.full_basis:
            rho2 = per_batch(self.rho, like.ndim) ** 2
            diag = diag + fn(rho2) * (1 - op.range_diagonal(torch.ones_like(var), like))
        return diag.expand_as(like)

    def solve(self, x: Tensor) -> Tensor:
        if (self.var <= 0).any():
            raise ValueError(
                "S_t is singular (sigma_y = 0 measures some directions exactly): S_t^{-1} does not exist"
            )
        return self.apply(torch.reciprocal, x)

    def sample(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
        return self.sqrt_mul(z)

    @property
    def batch(self) -> int:
        return max(super().batch, self.var.shape[0], self.operator.batch)

    def _select(self, b: int) -> SpectralNoise:
        op = self.operator.select(b)
        y = None if self.y is None else _pick(self.y, b)
        return SpectralNoise(op, _pick(self.var, b), _pick(self.rho, b), _pick(self.sigma_y, b), y)


class MatrixFreeNoise(PivotNoise):
    """``S_t`` for an operator known only through ``A`` and ``A^T`` (conjugate gradients).

    ``S_t x = rho^2 s_y^2 (s_y^2 I + rho^2 A^T A)^{-1} x``; with ``s_y = 0`` it is
    ``rho^2 (I - A^+ A) x`` (the null-space projection).
    """

    def __init__(self, operator: SystemSolver, rho: Tensor, sigma_y: Tensor, y: Tensor | None = None):
        self.operator = operator
        self.rho = rho.reshape(-1)
        self.sigma_y = sigma_y.reshape(-1)
        self.y = y

    def mul(self, x: Tensor) -> Tensor:
        op = self.operator
        rho2 = per_batch(self.rho, x.ndim) ** 2
        sy2 = per_batch(self.sigma_y, x.ndim) ** 2
        noiseless = sy2 == 0
        # (s_y^2 I + rho^2 A^T A) z = x, then S x = rho^2 s_y^2 z; noiseless elements are solved
        # below (the system would be singular and inconsistent for them)
        z = op.solve_regularized(x, rho2, torch.where(noiseless, torch.ones_like(sy2), sy2))
        general = rho2 * sy2 * z
        if not bool(noiseless.any()):
            return general
        # noiseless: rho^2 (x - A^+ A x), with A^+ A x the min-norm solution of A^T A w = A^T A x
        w = op.solve_regularized(op.At(op.A(x)), torch.ones_like(rho2), torch.zeros_like(sy2))
        projected = rho2 * (x - w)
        return torch.where(noiseless, projected, general)

    def solve(self, x: Tensor) -> Tensor:
        if (self.sigma_y == 0).any():
            raise ValueError(
                "S_t is singular (sigma_y = 0 measures some directions exactly): S_t^{-1} does not exist"
            )
        op = self.operator
        rho2 = per_batch(self.rho, x.ndim) ** 2
        sy2 = per_batch(self.sigma_y, x.ndim) ** 2
        return x / rho2 + op.At(op.A(x)) / sy2

    def sample(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Perturb-and-solve: ``S_t (z1 / rho + A^T z2 / s_y)`` has covariance ``S_t P_t S_t = S_t``.

        Written as ``rho^2 (s_y^2 I + rho^2 A^T A)^{-1} (s_y^2 z1 / rho + rho^2 s_y A^T z2 / ...)``
        in a form that stays finite for ``s_y = 0`` (then only null-space noise remains).
        """
        op = self.operator
        kw = {"generator": generator, "dtype": like.dtype, "device": like.device}
        z1 = torch.randn(like.shape, **kw)
        y_like = op.A(like)
        z2 = torch.randn(y_like.shape, **kw)
        rho = per_batch(self.rho, like.ndim)
        sy = per_batch(self.sigma_y, like.ndim)
        # S (z1/rho + A^T z2/s_y) = rho^2 s_y^2 M^{-1} (z1/rho + A^T z2/s_y),  M = s_y^2 + rho^2 A^T A
        rhs = sy**2 * rho * z1 + rho**2 * sy * op.At(z2)
        noiseless = sy == 0
        general = op.solve_regularized(rhs, rho**2, torch.where(noiseless, torch.ones_like(sy), sy) ** 2)
        if not bool(noiseless.any()):
            return general
        w = op.solve_regularized(op.At(op.A(z1)), torch.ones_like(rho), torch.zeros_like(sy))
        return torch.where(noiseless, rho * (z1 - w), general)

    def _select(self, b: int) -> MatrixFreeNoise:
        y = None if self.y is None else _pick(self.y, b)
        return MatrixFreeNoise(self.operator.select(b), _pick(self.rho, b), _pick(self.sigma_y, b), y)
