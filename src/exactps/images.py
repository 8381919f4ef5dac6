"""Pictures: PNG grids of image batches and an image-space view of a measurement."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from exactps.checkpoint import atomic_write
from exactps.objectives import as_batch
from exactps.operators.base import LinearOperator

__all__ = ["measurement_image", "save_grid"]


def save_grid(rows: Sequence[Tensor], path: str | Path, pad: int = 2, scale: int = 1) -> Path:
    """Save images in ``[-1, 1]`` as a PNG grid, one row per tensor ``(N, C, H, W)`` (C = 1 or 3),
    atomically (temporary file + ``os.replace``). Rows may differ in ``N``; images must share ``H, W``.
    ``scale`` enlarges the grid by pixel replication (for small images)."""
    from PIL import Image

    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if not rows:
        raise ValueError("save_grid needs at least one row")
    c, h, w = rows[0].shape[1:]
    n = max(r.shape[0] for r in rows)
    canvas = torch.ones(c, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for i, row in enumerate(rows):
        if tuple(row.shape[1:]) != (c, h, w):
            raise ValueError(f"row {i} has images of shape {tuple(row.shape[1:])}, expected {(c, h, w)}")
        for j, img in enumerate(row.detach().float().cpu()):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, top : top + h, left : left + w] = (img.clamp(-1, 1) + 1) / 2
    arr = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(arr[..., 0] if c == 1 else arr)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    out = Path(path)
    atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))
    return out


def measurement_image(operator: LinearOperator, y: Tensor, sigma_y: float | Tensor) -> Tensor:
    """An image-space view of ``y``: the ridge estimate ``(I + A^T A / s_y^2)^{-1} A^T y / s_y^2``
    (the pivot at ``x_t/a = 0``, ``rho = 1``), i.e. ``A^+ y`` on well-measured directions, 0 elsewhere."""
    like = torch.zeros(y.shape[0], *operator.img_shape, dtype=y.dtype, device=y.device)
    m, _ = operator.pivot(like, torch.ones(1, dtype=y.dtype, device=y.device), y, as_batch(sigma_y, like))
    return m
