"""Per-batch values: scalars or one value per batch element, and their shapes for broadcasting.

Noise levels (``rho = s/a``, ``s_y``) and times are either shared by a batch (a scalar or shape
``(1,)``) or given per element (shape ``(B,)``). Two helpers cover every use:

* :func:`as_batch`: a scalar, ``(1,)`` or ``(B,)`` value as a ``(B,)`` vector of a tensor's dtype
  and device;
* :func:`per_batch`: a ``(B,)`` (or ``(1,)``) vector reshaped to ``(B, 1, ..., 1)`` so that it
  broadcasts against images ``(B, C, H, W)``;
* :func:`check_sigma_y`: a measurement noise level ``s_y`` checked and shaped as such a vector.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_batch", "check_sigma_y", "per_batch"]


def per_batch(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-batch vector (shape ``(B,)`` or ``(1,)``) to broadcast against a tensor with ``ndim`` dims."""
    return v.reshape(-1, *([1] * (ndim - 1)))


def as_batch(v: float | Tensor, like: Tensor) -> Tensor:
    """``v`` (a scalar, ``(1,)`` or ``(B,)``) broadcast to ``(B,)`` with the dtype and device of ``like``
    (``B = like.shape[0]``)."""
    return torch.broadcast_to(torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1), (like.shape[0],))


def check_sigma_y(sigma_y: float | Tensor, like: Tensor) -> Tensor:
    """``s_y`` as a tensor of shape ``(1,)`` or ``(B,)``; raises on negative, NaN or bad shape."""
    sy = torch.as_tensor(sigma_y, dtype=like.dtype, device=like.device).reshape(-1)
    if sy.numel() not in (1, like.shape[0]):
        raise ValueError(
            f"sigma_y must be a scalar or have one value per batch element ({like.shape[0]}), "
            f"got {sy.numel()} values"
        )
    if not torch.isfinite(sy).all():
        raise ValueError(f"sigma_y must be finite, got {sigma_y}")
    if (sy < 0).any():
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    return sy
