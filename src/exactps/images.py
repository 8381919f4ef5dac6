"""Pictures in and out: PNG grids of image batches, and images, masks, kernels and measurements
read from files (``exactps sample``).

Images are tensors in ``[-1, 1]`` (pixel values ``u`` in ``[0, 1]`` become ``2u - 1``), read as
:class:`exactps.data.ImageFolder` reads training images.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from exactps.data import load_image
from exactps.files import atomic_write
from exactps.operators import Inpaint, LinearOperator

__all__ = [
    "check_not_smaller",
    "measurement_from_image",
    "read_image",
    "read_kernel",
    "read_mask",
    "save_grid",
    "save_image",
    "save_labelled_grid",
]


def save_grid(rows: Sequence[Tensor], path: str | Path, pad: int = 2, scale: int = 1) -> Path:
    """Save images in ``[-1, 1]`` as a PNG grid, one row per tensor ``(N, C, H, W)`` (C = 1 or 3),
    atomically (temporary file + ``os.replace``). Rows may differ in ``N``; images must share ``H, W``.
    ``scale`` enlarges the grid by pixel replication (for small images)."""
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


def save_labelled_grid(
    rows: Sequence[Tensor],
    labels: Sequence[str],
    path: str | Path,
    scale: int = 1,
    title: str | None = None,
) -> Path:
    """:func:`save_grid` with the name of each row written to its left (and a ``title`` on top), so the
    picture says what it shows. Rows are tensors ``(N, C, H, W)`` in ``[-1, 1]``; grey rows are shown
    in colour when the others are colour."""
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    channels = max(r.shape[1] for r in rows)
    rows = [r.expand(-1, channels, -1, -1) if r.shape[1] == 1 else r for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        grid = Image.open(save_grid(rows, Path(tmp) / "grid.png", scale=scale)).convert("RGB")
    font = ImageFont.load_default(size=12)
    measure = ImageDraw.Draw(grid)
    margin = 8 + max(int(measure.textlength(label, font=font)) for label in labels)
    top = 20 if title else 0
    width = max(grid.width + margin, 8 + int(measure.textlength(title, font=font)) if title else 0)
    canvas = Image.new("RGB", (width, grid.height + top), "white")
    canvas.paste(grid, (margin, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill="black", font=font)
    row_height = (grid.height - 2 * scale) / len(rows)
    for i, label in enumerate(labels):
        draw.text((4, top + 2 * scale + (i + 0.5) * row_height), label, fill="black", font=font, anchor="lm")
    out = Path(path)
    atomic_write(out, lambda tmp: canvas.save(tmp, format="PNG"))
    return out


def save_image(img: Tensor, path: str | Path) -> Path:
    """One image ``(C, H, W)`` in ``[-1, 1]`` as a PNG of its own size (no border)."""
    return save_grid([img[None]], path, pad=0)


def read_image(path: str | Path, size: int | None = None, channels: int = 3, upscale: bool = True) -> Tensor:
    """An image file as ``(1, C, H, W)`` in ``[-1, 1]`` (``x = 2 u - 1``), read as
    :class:`exactps.data.ImageFolder` reads training images: centre-cropped to a square and resized
    to ``size`` (bicubic), or exactly as stored if ``size`` is None. ``upscale=False``: an image whose
    shorter side is below ``size`` is a ``ValueError`` (it would be enlarged, not just resized)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {p} does not exist")
    if size is not None and not upscale:
        check_not_smaller(p, size)
    try:
        return load_image(p, size, channels)[None]
    except OSError as err:
        raise ValueError(str(err)) from err


def check_not_smaller(path: str | Path, size: int) -> None:
    """Raise ``ValueError`` if the image file's shorter side is below ``size`` (reading it for a model of
    ``size x size`` images would enlarge it, and a restoration of an enlarged picture says little)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as err:  # PIL raises many types
        raise ValueError(f"could not read image {path}: {err}") from err
    if min(w, h) < size:
        raise ValueError(
            f"image {path} is {h}x{w} (height x width), smaller than the model's {size}x{size} images: it would "
            f"be upscaled, and a restoration of an upscaled picture says little; use a ground truth of at "
            f"least {size}x{size} pixels (it is centre-cropped and resized down)"
        )


def _check_size(what: str, path: str | Path, got: Sequence[int], want: Sequence[int], why: str) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{what} {path} is {got[0]}x{got[1]} but {why} {want[0]}x{want[1]}")


def read_mask(path: str | Path, img_shape: Sequence[int]) -> Tensor:
    """An inpainting mask file as ``(1, 1, H, W)`` zeros and ones: white (> 50% grey) = observed.
    Its size must be the images' ``H x W`` (it is never resized)."""
    m = read_image(path, None, channels=1)
    _check_size("mask", path, m.shape[-2:], img_shape[-2:], "must have the images' size,")
    _check_binary(path)
    return (m > 0).to(torch.float32)


def _check_binary(path: str | Path) -> None:
    """Raise ``ValueError`` unless the picture holds only black and white pixels (grey levels ``0`` and
    the format's maximum, equal in every colour channel; an alpha channel must be fully opaque).
    No tolerance: a photo, a JPEG or an antialiased drawing is not a mask."""
    try:
        with Image.open(path) as im:
            if im.mode == "1":
                return
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            bands = im.getbands()
            arr = np.asarray(im)
    except Exception as err:  # PIL raises many types
        raise ValueError(f"could not read mask {path}: {err}") from err
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
    top = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535}.get(im.mode, 255 if arr.dtype == np.uint8 else None)
    if "A" in bands:
        alpha = arr[..., bands.index("A")]
        if top is None or not (alpha == top).all():
            raise ValueError(f"mask {path} has transparent pixels; a mask must be opaque black (missing) and white")
        arr = arr[..., [i for i, b in enumerate(bands) if b != "A"]]
    colours = np.unique(arr.reshape(-1, arr.shape[-1]), axis=0)
    values = np.unique(colours)
    grey = bool((colours == colours[:, :1]).all())
    if grey and top is not None and set(values.tolist()) <= {0, top}:
        return
    what = "colours" if arr.shape[-1] > 1 else "values"
    shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if values.size > 6 else "")
    raise ValueError(
        f"mask {path} has {arr.shape[-1]} channel(s) with {len(colours)} distinct {what} (levels {shown}); "
        f"a mask must be black (missing) and white (observed) only, e.g. a grayscale PNG of 0 and "
        f"{top or 255}: threshold it first (JPEG noise and antialiasing are not allowed)"
    )


def read_kernel(path: str | Path) -> Tensor:
    """A blur kernel as ``(1, 1, h, w)`` summing to 1: a ``.npy`` 2-D array or a grayscale image."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"kernel {p} does not exist")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"could not read kernel {p}: {err}") from err
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"kernel {p} must hold a 2-D numeric array, got shape {arr.shape} ({arr.dtype})")
        k = torch.from_numpy(arr.astype(np.float64))
    else:
        k = (read_image(p, None, channels=1)[0, 0].double() + 1) / 2
    total = float(k.sum())
    if not bool(torch.isfinite(k).all()) or not total > 0:
        raise ValueError(f"kernel {p} must be finite with a positive sum, got sum {total}")
    return (k / total).float().reshape(1, 1, *k.shape)


def measurement_from_image(operator: LinearOperator, path: str | Path, task: str = "") -> Tensor:
    """The measurement ``y`` ``(1, *operator.meas_shape)`` stored in an image file.

    The file holds ``y`` as a picture of ``operator.meas_shape``: the low-resolution image (super-
    resolution), the blurred image (deblurring), the grayscale image (colorization) or the image with
    holes (inpainting: ``y = mask * image``, the values in the holes are ignored). It is never resized:
    a file of another size is an error naming both sizes.
    """
    c, h, w = operator.meas_shape
    if c not in (1, 3):
        raise ValueError(f"measurements of shape {operator.meas_shape} cannot be read from an image")
    y = read_image(path, None, channels=c)
    _, ih, iw = operator.img_shape
    why = f"{task or type(operator).__name__} with the model's {ih}x{iw} images needs"
    _check_size("measurement", path, y.shape[-2:], (h, w), why)
    y = y.to(operator._dtype())
    return operator.A(y) if isinstance(operator, Inpaint) else y
