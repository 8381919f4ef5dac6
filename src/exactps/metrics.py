"""Distances between sample sets and distributions used by the exactness report and benchmarks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["atom_tv", "psnr", "sliced_w2"]


def sliced_w2(x: Tensor, y: Tensor, n_proj: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance ``sqrt(E_u W2^2(<u, x>, <u, y>))`` over ``n_proj`` random directions.

    ``x`` and ``y`` are sample sets with the same number of samples (flattened per sample).
    """
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    yf = y.reshape(y.shape[0], -1).to(torch.float64)
    if xf.shape != yf.shape:
        raise ValueError(f"sample sets must have equal shapes, got {tuple(xf.shape)} and {tuple(yf.shape)}")
    u = torch.randn(xf.shape[1], n_proj, generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    px, _ = torch.sort(xf @ u, dim=0)
    py, _ = torch.sort(yf @ u, dim=0)
    return math.sqrt(((px - py) ** 2).mean().item())


def atom_tv(indices: Tensor, weights: Tensor) -> float:
    """Total variation ``1/2 sum_k |freq_k - w_k|`` between atom frequencies of samples and ``weights``."""
    freq = torch.bincount(indices, minlength=weights.shape[0]).to(torch.float64) / indices.numel()
    return 0.5 * (freq - weights.to(torch.float64)).abs().sum().item()


def psnr(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR in dB for images in a range of width ``data_range`` (2 for [-1, 1])."""
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
