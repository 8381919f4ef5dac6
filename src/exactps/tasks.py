"""Task distributions: benchmark operators scaled to an image size, one per batch element.

The standard set (METHOD.md, "Claims"): 4x super-resolution (bicubic), box inpainting (a box of
half the side), random inpainting (70% of pixels missing here; DPS uses 92% at 256x256), Gaussian
deblurring and motion deblurring (circular boundary). Also 2x average-pooling SR and
colorization. Masks and motion kernels are drawn per batch element.
"""

from __future__ import annotations

import torch

from exactps.operators import (
    AvgPoolSR,
    Blur,
    Colorize,
    Inpaint,
    LinearOperator,
    SeparableSR,
    box_masks,
    gaussian_kernel,
    motion_kernels,
    random_masks,
)

__all__ = ["TASKS", "make_task_operator"]

TASKS = ("sr4", "sr2-avg", "inpaint-box", "inpaint-random", "deblur-gauss", "deblur-motion", "colorize")


def _kernel_size(h: int, w: int, cap: int = 61) -> int:
    return min(cap, min(h, w) // 2 * 2 - 1)


def make_task_operator(
    task: str,
    img_shape: tuple[int, int, int],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    batch: int = 1,
) -> LinearOperator:
    """The operator of ``task`` for images of ``img_shape``; random parts drawn ``batch`` times."""
    c, h, w = img_shape
    if task == "sr4":
        return SeparableSR(img_shape, 4, dtype=dtype)
    if task == "sr2-avg":
        return AvgPoolSR(img_shape, 2, dtype=dtype)
    if task == "inpaint-box":
        return Inpaint(box_masks(img_shape, batch, (h // 2, w // 2), generator).to(dtype), img_shape)
    if task == "inpaint-random":
        return Inpaint(random_masks(img_shape, batch, 0.7, generator).to(dtype), img_shape)
    if task == "deblur-gauss":
        # DPS: sigma 3.0 px at 256x256; scaled with the image, at least half a pixel
        return Blur(gaussian_kernel(max(0.5, 3.0 * h / 256), size=_kernel_size(h, w)).to(dtype), img_shape)
    if task == "deblur-motion":
        return Blur(motion_kernels(batch, _kernel_size(h, w), generator).to(dtype), img_shape)
    if task == "colorize":
        if c != 3:
            raise ValueError("colorize needs 3-channel images")
        return Colorize(img_shape, dtype=dtype)
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
