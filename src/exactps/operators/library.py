"""The benchmark operators, each with its closed-form SVD (METHOD.md, "Spectral structure").

=====================  ===========================================  ===================
operator               ``V`` (basis of the image space)              singular values k
=====================  ===========================================  ===================
:class:`Denoise`       identity                                      1
:class:`Inpaint`       identity (per-pixel)                          the 0/1 mask
:class:`AvgPoolSR`     normalised block indicators (thin)            1/f
:class:`SeparableSR`   Kronecker product of 1-D SVDs (thin)          ``outer(k_h, k_w)``
:class:`Blur`          2-D real FFT (circular boundary)              ``|FFT(kernel)|``
:class:`Colorize`      normalised channel weights (thin)             ``||w||``
:class:`OrthogonalCS`  the orthonormal measurement rows (thin)       1
=====================  ===========================================  ===================

Masks and kernels may differ per batch element (leading dimension ``B``).
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from deepinv.physics import DecomposablePhysics
from torch import Tensor

from exactps.operators.base import LinearOperator, MatrixFreeOperator, SpectralOperator

__all__ = [
    "AvgPoolSR",
    "Blur",
    "Colorize",
    "Denoise",
    "Inpaint",
    "OrthogonalCS",
    "SeparableSR",
    "from_physics",
]


def _check_img_shape(img_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(img_shape) != 3 or min(img_shape) < 1:
        raise ValueError(f"img_shape must be (C, H, W) with positive sizes, got {img_shape}")
    return tuple(int(n) for n in img_shape)  # type: ignore[return-value]


class Denoise(SpectralOperator):
    """``A = I``: Gaussian denoising."""

    def __init__(self, img_shape: tuple[int, ...], dtype: torch.dtype = torch.float32):
        img_shape = _check_img_shape(img_shape)
        physics = dinv.physics.Denoising()
        physics.mask = torch.ones((), dtype=dtype)
        super().__init__(physics, img_shape, full_basis=True)

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``V = I``: the coefficients are the pixels."""
        return g


class Inpaint(SpectralOperator):
    """``A = diag(mask)``: keeps the pixels where ``mask = 1`` (``y`` has the image's shape).

    ``mask``: ``(H, W)``, ``(C|1, H, W)`` or ``(B|1, C|1, H, W)`` of zeros and ones.
    """

    def __init__(self, mask: Tensor, img_shape: tuple[int, ...]):
        img_shape = _check_img_shape(img_shape)
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        while mask.ndim < 4:
            mask = mask.unsqueeze(0)
        if mask.ndim != 4 or mask.shape[-2:] != img_shape[-2:] or mask.shape[1] not in (1, img_shape[0]):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {img_shape}")
        if not torch.all((mask == 0) | (mask == 1)):
            raise ValueError("mask must contain only zeros and ones")
        mask = mask.expand(mask.shape[0], img_shape[0], *img_shape[1:]).contiguous()
        if not mask.is_floating_point():
            mask = mask.float()
        physics = dinv.physics.Inpainting(img_size=img_shape, mask=mask, device=mask.device)
        super().__init__(physics, img_shape, full_basis=True)

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``V = I``: the coefficients are the pixels."""
        return g

    def _select_batch(self, b: int) -> Inpaint:
        return Inpaint(self.physics.mask[b : b + 1], self.img_shape)


class _AvgPoolPhysics(DecomposablePhysics):
    """``A x = avgpool_f(x)``: ``V^T x = f * avgpool(x)``, ``k = 1/f``, ``U = I``."""

    def __init__(self, factor: int, dtype: torch.dtype):
        super().__init__(mask=torch.full((), 1.0 / factor, dtype=dtype))
        self.factor = factor

    def V_adjoint(self, x: Tensor) -> Tensor:
        return self.factor * torch.nn.functional.avg_pool2d(x, self.factor)

    def V(self, c: Tensor) -> Tensor:
        return (
            torch.repeat_interleave(torch.repeat_interleave(c, self.factor, dim=-2), self.factor, dim=-1)
            / self.factor
        )


class AvgPoolSR(SpectralOperator):
    """Super-resolution x ``factor`` by average pooling of ``factor x factor`` blocks."""

    def __init__(self, img_shape: tuple[int, ...], factor: int, dtype: torch.dtype = torch.float32):
        img_shape = _check_img_shape(img_shape)
        if factor < 1 or img_shape[1] % factor or img_shape[2] % factor:
            raise ValueError(f"factor {factor} must divide the image size {img_shape[1:]}")
        self.factor = factor
        super().__init__(_AvgPoolPhysics(factor, dtype), img_shape, full_basis=False)

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``V c`` spreads ``c / f`` over its ``f x f`` block: ``(V o V) g`` is ``g / f^2`` on the block."""
        return self.V(g) / self.factor


class _SeparablePhysics(DecomposablePhysics):
    """``A X = A_h X A_w^T`` per channel from thin SVDs ``A_h = U_h diag(k_h) V_h^T`` (same for w)."""

    def __init__(self, a_h: Tensor, a_w: Tensor):
        uh, kh, vht = torch.linalg.svd(a_h, full_matrices=False)
        uw, kw, vwt = torch.linalg.svd(a_w, full_matrices=False)
        super().__init__(mask=torch.outer(kh, kw))
        self.register_buffer("uh", uh)
        self.register_buffer("vh", vht.T.contiguous())
        self.register_buffer("uw", uw)
        self.register_buffer("vw", vwt.T.contiguous())

    def V_adjoint(self, x: Tensor) -> Tensor:
        return self.vh.T @ x @ self.vw

    def V(self, c: Tensor) -> Tensor:
        return self.vh @ c @ self.vw.T

    def U(self, c: Tensor) -> Tensor:
        return self.uh @ c @ self.uw.T

    def U_adjoint(self, y: Tensor) -> Tensor:
        return self.uh.T @ y @ self.uw


def separable_factors(
    physics: dinv.physics.LinearPhysics, img_shape: tuple[int, int, int], dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """1-D matrices ``(A_h, A_w)`` with ``A(X) = A_h X A_w^T``, read off a separable operator.

    Probing with ``e_i 1^T`` gives ``A_h[:, i] (A_w 1)^T``; ``A_w 1`` is constant for a
    normalised low-pass filter. Raises ``ValueError`` if the operator is not of that form.
    """
    _, h, w = img_shape
    rows = torch.zeros(h, 1, h, w, dtype=dtype)
    rows[torch.arange(h), 0, torch.arange(h), :] = 1.0
    cols = torch.zeros(w, 1, h, w, dtype=dtype)
    cols[torch.arange(w), 0, :, torch.arange(w)] = 1.0
    with torch.no_grad():
        ph = physics.A(rows)[:, 0]  # (h, H', W'): column i -> A_h[:, i] outer (A_w 1)
        pw = physics.A(cols)[:, 0]
        ones = physics.A(torch.ones(1, 1, h, w, dtype=dtype))[0, 0]
    c = ones.mean()  # (A_h 1)(A_w 1)^T = c * ones when both rows sums are constant
    a_h = ph[:, :, 0].T / torch.sqrt(c)  # (H', h) up to the scale of A_w 1
    a_w = pw[:, 0, :].T / torch.sqrt(c)
    probe = torch.randn(2, 1, h, w, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = physics.A(probe)
    sep = a_h @ probe @ a_w.T
    if not torch.allclose(sep, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item()):
        raise ValueError("the operator is not separable with constant row sums; use MatrixFreeOperator")
    return a_h, a_w


class SeparableSR(SpectralOperator):
    """Super-resolution x ``factor`` with a separable anti-aliasing filter (default bicubic).

    Same operator as ``deepinv.physics.Downsampling(filter=..., padding="circular")``; its
    SVD is the Kronecker product of the SVDs of the two 1-D operators.
    """

    def __init__(
        self,
        img_shape: tuple[int, ...],
        factor: int,
        filter: str = "bicubic",
        dtype: torch.dtype = torch.float32,
    ):
        img_shape = _check_img_shape(img_shape)
        if factor < 1 or img_shape[1] % factor or img_shape[2] % factor:
            raise ValueError(f"factor {factor} must divide the image size {img_shape[1:]}")
        reference = dinv.physics.Downsampling(
            img_size=(1, *img_shape[1:]), filter=filter, factor=factor, padding="circular"
        )
        reference.filter = reference.filter.to(torch.float64)
        try:
            a_h, a_w = separable_factors(reference, img_shape, torch.float64)
        except RuntimeError as err:  # circular padding wider than the image
            raise ValueError(
                f"the {filter!r} filter of size {tuple(reference.filter.shape[-2:])} for factor {factor} "
                f"is too large for images of size {img_shape[1:]} ({err})"
            ) from err
        physics = _SeparablePhysics(a_h, a_w).to(dtype)
        self.factor = factor
        super().__init__(physics, img_shape, full_basis=False)

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``V = V_h (x) V_w``: ``(V o V) g = (V_h o V_h) g (V_w o V_w)^T`` per channel."""
        ph = self.physics
        return ph.vh.square() @ g @ ph.vw.square().T


class Blur(SpectralOperator):
    """Circular convolution with ``kernels`` (``(h, w)``, ``(1, 1, h, w)`` or ``(B, 1, h, w)``)."""

    def __init__(self, kernels: Tensor, img_shape: tuple[int, ...]):
        img_shape = _check_img_shape(img_shape)
        if not isinstance(kernels, Tensor):
            raise TypeError(f"kernels must be a torch.Tensor, got {type(kernels).__name__}")
        while kernels.ndim < 4:
            kernels = kernels.unsqueeze(0)
        if kernels.ndim != 4 or kernels.shape[1] not in (1, img_shape[0]):
            raise ValueError(f"kernels must have shape (B, 1, h, w), got {tuple(kernels.shape)}")
        if kernels.shape[-2] > img_shape[1] or kernels.shape[-1] > img_shape[2]:
            raise ValueError(
                f"kernel of size {tuple(kernels.shape[-2:])} is larger than the image {img_shape[1:]}"
            )
        physics = dinv.physics.BlurFFT(img_size=img_shape, filter=kernels, device=kernels.device)
        self.kernels = kernels
        super().__init__(physics, img_shape, full_basis=True)

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """Per-channel circulant: the diagonal is constant, ``(V diag(g) V^T delta)_0``."""
        delta = torch.zeros_like(like)
        delta[..., 0, 0] = 1.0
        return self.V(g * self.Vt(delta))[..., :1, :1]

    def observation_image(self, y: Tensor) -> Tensor:
        """``y`` itself: the blurred image, as Palette is given it (``A^T y`` would blur it twice)."""
        return y

    def _select_batch(self, b: int) -> Blur:
        return Blur(self.physics.filter[b : b + 1], self.img_shape)  # all channels: kernels may differ


class Colorize(SpectralOperator):
    """Colorization: ``y = sum_c w_c x_c`` (deepinv's Decolorize, Rec. 601 weights by default)."""

    def __init__(self, img_shape: tuple[int, ...], srf: str = "rec601", dtype: torch.dtype = torch.float32):
        img_shape = _check_img_shape(img_shape)
        if img_shape[0] != 3:
            raise ValueError(f"colorization needs 3-channel images, got img_shape {img_shape}")
        physics = dinv.physics.Decolorize(channels=3, srf=srf).to(dtype)
        # deepinv normalises in float32; recompute so that V = w / ||w|| is orthonormal in ``dtype``
        physics.mask = torch.linalg.vector_norm(physics.srf, dim=1, keepdim=True)
        super().__init__(physics, img_shape, full_basis=False)

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``V = w / ||w||`` per pixel: ``(V o V) g = (w_c^2 / ||w||^2) g`` in channel ``c``."""
        return self.V(g) * self.V(torch.ones_like(g))


class _RowsPhysics(DecomposablePhysics):
    """``A x = Q vec(x)`` with orthonormal rows ``Q`` (``Q Q^T = I``): ``V^T = Q``, ``k = 1``."""

    def __init__(self, q: Tensor, img_shape: tuple[int, ...]):
        super().__init__(mask=torch.ones((), dtype=q.dtype))
        self.register_buffer("q", q)
        self.shape_ = tuple(img_shape)

    def V_adjoint(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self.q.T

    def V(self, c: Tensor) -> Tensor:
        return (c @ self.q).reshape(c.shape[0], *self.shape_)


class OrthogonalCS(SpectralOperator):
    """Compressed sensing with ``m`` random orthonormal rows (a row subset of a Haar matrix)."""

    def __init__(
        self,
        img_shape: tuple[int, ...],
        m: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        img_shape = _check_img_shape(img_shape)
        d = math.prod(img_shape)
        if not 1 <= m <= d:
            raise ValueError(f"m must be in [1, {d}] for images of shape {img_shape}, got {m}")
        g = torch.randn(d, m, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(g)
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed columns
        super().__init__(_RowsPhysics(q.T.contiguous().to(dtype), img_shape), img_shape, full_basis=False)

    def range_diagonal(self, g: Tensor, like: Tensor) -> Tensor:
        """``V = Q^T``: ``(V o V) g = (Q o Q)^T g``."""
        return (g @ self.physics.q.square()).reshape(g.shape[0], *like.shape[1:])


def from_physics(physics: dinv.physics.LinearPhysics, img_shape: tuple[int, ...]) -> LinearOperator:
    """Wrap any deepinv linear physics: closed form if it is a DecomposablePhysics, else CG.

    Whether ``V`` spans the whole image space (``full_basis``) is checked on a random image.
    """
    if isinstance(physics, DecomposablePhysics):
        probe = torch.randn(1, *img_shape, generator=torch.Generator().manual_seed(0))
        ref = next((b for b in physics.buffers() if b.is_floating_point()), None)
        if ref is not None:
            probe = probe.to(ref)
        with torch.no_grad():
            back = physics.V(physics.V_adjoint(probe))
        full = bool(torch.allclose(back, probe, atol=1e-4 * probe.abs().max().item()))
        return SpectralOperator(physics, img_shape, full_basis=full)
    return MatrixFreeOperator(physics, img_shape)
