"""An explicit matrix as an operator, with its SVD: for small problems, tests and references."""

from __future__ import annotations

import math

import torch
from deepinv.physics import DecomposablePhysics
from torch import Tensor

from exactps.operators.base import SpectralOperator

__all__ = ["DenseOperator"]


class _DensePhysics(DecomposablePhysics):
    """``A x = M vec(x)`` through the thin SVD ``M = U_r diag(k) V_r^T`` (``r = min(m, d)``)."""

    def __init__(self, matrix: Tensor, img_shape: tuple[int, ...]):
        u, k, vt = torch.linalg.svd(matrix, full_matrices=False)
        super().__init__(mask=k.unsqueeze(0))
        self.register_buffer("u", u)
        self.register_buffer("v", vt.T.contiguous())
        self.shape_ = tuple(img_shape)

    def V_adjoint(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self.v

    def V(self, c: Tensor) -> Tensor:
        return (c @ self.v.T).reshape(c.shape[0], *self.shape_)

    def U(self, c: Tensor) -> Tensor:
        return c @ self.u.T

    def U_adjoint(self, y: Tensor) -> Tensor:
        return y @ self.u


class DenseOperator(SpectralOperator):
    """``y = M vec(x)`` for an explicit ``(m, d)`` matrix ``M``; measurements have shape ``(B, m)``."""

    def __init__(self, matrix: Tensor, img_shape: tuple[int, ...]):
        if not isinstance(matrix, Tensor) or matrix.ndim != 2:
            raise TypeError("matrix must be a 2-D torch.Tensor")
        d = math.prod(img_shape)
        if matrix.shape[1] != d:
            raise ValueError(f"matrix has {matrix.shape[1]} columns but images have {d} pixels {img_shape}")
        physics = _DensePhysics(matrix, img_shape)
        super().__init__(physics, img_shape, full_basis=min(matrix.shape) == d)
        self.matrix = matrix

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``(V o V) g`` with the right singular vectors ``V`` as columns."""
        return (g @ self.physics.v.square().T).reshape(g.shape[0], *like.shape[1:])
