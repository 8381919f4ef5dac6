"""Random masks and blur kernels for the benchmark tasks (one per batch element)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import deepinv as dinv
import torch
from torch import Tensor

__all__ = ["box_masks", "gaussian_kernel", "line_kernels", "motion_kernels", "random_box_masks", "random_masks"]


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


def random_box_masks(
    img_shape: tuple[int, ...],
    batch: int,
    sides: tuple[int, int],
    generator: torch.Generator | None = None,
    margin: int = 0,
) -> Tensor:
    """``(batch, 1, H, W)`` masks with one box of zeros per image: its height and width drawn uniformly
    from the integers in ``[sides[0], sides[1]]`` (independently), its position uniformly among those
    that keep ``margin`` pixels from every border (DAPS's box inpainting, with random sides)."""
    _, h, w = _img_shape(img_shape)
    _positive_int("batch", batch)
    lo, hi = sides
    if not 1 <= lo <= hi or hi + 2 * margin > min(h, w) or margin < 0:
        raise ValueError(f"box sides {sides} with margin {margin} do not fit in a {h}x{w} image")
    heights = torch.randint(lo, hi + 1, (batch,), generator=generator)
    widths = torch.randint(lo, hi + 1, (batch,), generator=generator)
    masks = torch.ones(batch, 1, h, w)
    for i in range(batch):
        bh, bw = int(heights[i]), int(widths[i])
        top = int(torch.randint(margin, h - margin - bh + 1, (1,), generator=generator))
        left = int(torch.randint(margin, w - margin - bw + 1, (1,), generator=generator))
        masks[i, :, top : top + bh, left : left + bw] = 0.0
    return masks


def line_kernels(
    batch: int,
    size: int,
    lengths: Sequence[int],
    generator: torch.Generator | None = None,
) -> Tensor:
    """``(batch, 1, size, size)`` linear motion-blur kernels summing to 1: a segment through the centre
    of length ``L`` (uniform over ``lengths``) at an angle uniform in ``[0, 180)`` degrees, rasterised
    by bilinear splatting of ``8 L + 1`` equally spaced points (anti-aliased, exactly centred)."""
    _positive_int("batch", batch)
    _positive_int("size", size)
    options = torch.as_tensor(list(lengths), dtype=torch.float64)
    if options.numel() == 0 or bool((options < 1).any()) or float(options.max()) > size:
        raise ValueError(f"lengths {list(lengths)} must be >= 1 and fit in a {size}x{size} kernel")
    pick = torch.randint(0, options.numel(), (batch,), generator=generator)
    angle = torch.rand(batch, generator=generator, dtype=torch.float64) * math.pi
    out = torch.zeros(batch, size * size, dtype=torch.float64)
    centre = (size - 1) / 2
    for i in range(batch):
        length = float(options[pick[i]])
        t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, int(8 * length) + 1, dtype=torch.float64)
        rows, cols = centre - t * math.sin(angle[i]), centre + t * math.cos(angle[i])
        r0, c0 = rows.floor(), cols.floor()
        for dr in (0, 1):
            for dc in (0, 1):
                weight = (1 - (rows - r0 - dr).abs()) * (1 - (cols - c0 - dc).abs())
                r, c = (r0 + dr).long(), (c0 + dc).long()
                inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
                out[i].index_add_(0, (r * size + c)[inside], weight[inside])
    out = out / out.sum(dim=1, keepdim=True)
    return out.float().reshape(batch, 1, size, size)


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
