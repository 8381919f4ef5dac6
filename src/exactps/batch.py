"""Per-batch values: scalars or one value per batch element, and their shapes for broadcasting.

Noise levels (``rho = s/a``, ``s_y``) and times are either shared by a batch (a scalar or shape
``(1,)``) or given per element (shape ``(B,)``). Two helpers cover every use:

* :func:`as_batch`: a scalar, ``(1,)`` or ``(B,)`` value as a ``(B,)`` vector of a tensor's dtype
  and device;
* :func:`per_batch`: a ``(B,)`` (or ``(1,)``) vector reshaped to ``(B, 1, ..., 1)`` so that it
  broadcasts against images ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_batch", "per_batch"]


def per_batch(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-batch vector (shape ``(B,)`` or ``(1,)``) to broadcast against a tensor with ``ndim`` dims."""
    return v.reshape(-1, *([1] * (ndim - 1)))


def as_batch(v: float | Tensor, like: Tensor) -> Tensor:
    """``v`` (a scalar, ``(1,)`` or ``(B,)``) broadcast to ``(B,)`` with the dtype and device of ``like``
    (``B = like.shape[0]``)."""
    return torch.broadcast_to(torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1), (like.shape[0],))
