"""Random masks and blur kernels for the benchmark tasks (one per batch element)."""

from __future__ import annotations

import operator

import deepinv as dinv
import torch
from torch import Tensor

__all__ = ["box_masks", "gaussian_kernel", "motion_kernels", "random_masks"]


def _positive_int(name: str, v: int) -> int:
    try:
        n = operator.index(v)
    except TypeError:
        n = 0
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return n


def _img_shape(img_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(img_shape) != 3 or min(img_shape) < 1:
        raise ValueError(f"img_shape must be (C, H, W) with positive sizes, got {img_shape}")
    return tuple(int(n) for n in img_shape)  # type: ignore[return-value]


def random_masks(
    img_shape: tuple[int, ...],
    batch: int,
    p_missing: float,
    generator: torch.Generator | None = None,
    per_channel: bool = False,
) -> Tensor:
    """``(batch, C|1, H, W)`` masks that drop each pixel with probability ``p_missing``."""
    if not 0.0 <= p_missing < 1.0:
        raise ValueError(f"p_missing must be in [0, 1), got {p_missing}")
    c, h, w = _img_shape(img_shape)
    _positive_int("batch", batch)
    shape = (batch, c if per_channel else 1, h, w)
    return (torch.rand(shape, generator=generator) >= p_missing).float()


def box_masks(
    img_shape: tuple[int, ...],
    batch: int,
    box: tuple[int, int],
    generator: torch.Generator | None = None,
    margin: int = 0,
) -> Tensor:
    """``(batch, 1, H, W)`` masks with one ``box`` of zeros at a uniform position inside ``margin``."""
    _, h, w = _img_shape(img_shape)
    _positive_int("batch", batch)
    if len(box) != 2:
        raise ValueError(f"box must be (height, width), got {box}")
    bh, bw = box
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if bh + 2 * margin > h or bw + 2 * margin > w or min(bh, bw) < 1:
        raise ValueError(f"box {box} with margin {margin} does not fit in a {h}x{w} image")
    masks = torch.ones(batch, 1, h, w)
    top = torch.randint(margin, h - margin - bh + 1, (batch,), generator=generator)
    left = torch.randint(margin, w - margin - bw + 1, (batch,), generator=generator)
    for i in range(batch):
        masks[i, :, top[i] : top[i] + bh, left[i] : left[i] + bw] = 0.0
    return masks


def gaussian_kernel(sigma: float, size: int | None = None) -> Tensor:
    """Normalised isotropic Gaussian kernel ``(1, 1, size, size)`` (size defaults to ``2*ceil(3 sigma)+1``)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if size is None:
        size = 2 * int(torch.ceil(torch.tensor(3.0 * sigma)).item()) + 1
    _positive_int("size", size)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    k = torch.outer(g, g)
    return (k / k.sum()).float().reshape(1, 1, size, size)


def motion_kernels(
    batch: int,
    size: int,
    generator: torch.Generator | None = None,
    length: float = 0.3,
    sigma: float = 0.25,
) -> Tensor:
    """``(batch, 1, size, size)`` random motion-blur kernels (deepinv's Gaussian-process trajectories)."""
    _positive_int("batch", batch)
    _positive_int("size", size)
    gen = dinv.physics.generator.MotionBlurGenerator(
        psf_size=(size, size), rng=generator, l=length, sigma=sigma
    )
    k = gen.step(batch_size=batch)["filter"]
    return k / k.sum(dim=(-2, -1), keepdim=True)
