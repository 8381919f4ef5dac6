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
    "STD_COLORMAP",
    "check_not_smaller",
    "colour_map",
    "measurement_from_image",
    "read_image",
    "read_kernel",
    "read_mask",
    "resize_shorter_side",
    "save_contact_sheet",
    "save_grid",
    "save_image",
    "save_labelled_grid",
    "save_std_map",
    "std_scale",
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


#: Anchors of the colour map of standard-deviation pictures (viridis, dark = certain, yellow = uncertain),
#: interpolated linearly in RGB.
STD_COLORMAP: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37),
)  # fmt: skip


def colour_map(values: Tensor, vmax: float) -> Tensor:
    """``(H, W)`` values in ``[0, vmax]`` as an RGB image ``(3, H, W)`` in ``[-1, 1]`` through
    :data:`STD_COLORMAP` (values outside are clipped; ``vmax <= 0`` maps everything to the first colour)."""
    anchors = torch.tensor(STD_COLORMAP, dtype=torch.float32) / 255
    v = values.detach().float().cpu()
    u = (v / vmax).clamp(0, 1) if vmax > 0 else torch.zeros_like(v)
    pos = u * (len(anchors) - 1)
    lo = pos.floor().long().clamp(max=len(anchors) - 2)
    frac = (pos - lo).unsqueeze(-1)
    rgb = anchors[lo] * (1 - frac) + anchors[lo + 1] * frac
    return rgb.permute(2, 0, 1) * 2 - 1


def std_scale(std: Tensor) -> float:
    """The top of the colour scale of a std picture: its 99th percentile (so that a few extreme pixels do
    not darken the rest; those saturate), rounded up to a readable number (``1, 2, 2.5, 5`` times a power
    of ten), so that the scale bar's labels are short."""
    top = float(torch.quantile(std.detach().flatten().float()[:2**24], 0.99)) if std.numel() else 0.0
    if not top > 0:
        return 1.0
    power = 10 ** np.floor(np.log10(top))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= top:
            return float(step * power)
    return float(10 * power)


def _scaled(img: Tensor, scale: int) -> Image.Image:
    """An image ``(C, H, W)`` in ``[-1, 1]`` as an RGB PIL picture enlarged ``scale`` times (nearest)."""
    x = ((img.detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    pic = Image.fromarray(x.permute(1, 2, 0).numpy())
    return pic.resize((pic.width * scale, pic.height * scale), Image.Resampling.NEAREST) if scale > 1 else pic


def _font(size: int = 12) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def save_std_map(std: Tensor, path: str | Path, vmax: float | None = None, scale: int = 1,
                 title: str = "posterior std") -> Path:  # fmt: skip
    """The per-pixel standard deviation ``(H, W)`` (in image units, ``[-1, 1]`` images) as a colour-mapped
    PNG with a scale bar at its right labelled in pixel values of ``[0, 1]`` images (``std / 2``):
    ``0``, half and the top ``vmax`` (default :func:`std_scale` of ``std``). Written atomically."""
    if std.ndim != 2:
        raise ValueError(f"std must be (H, W), got {tuple(std.shape)}")
    vmax = std_scale(std) if vmax is None else float(vmax)
    pic = _scaled(colour_map(std, vmax), scale)
    font = _font()
    bar_w, gap, top = 12, 6, 18
    ramp = torch.linspace(vmax, 0, max(pic.height, 2))[:, None].expand(-1, bar_w)
    bar = _scaled(colour_map(ramp, vmax), 1)
    labels = [(0.0, f"{0:g}"), (0.5, f"{vmax / 4:.3g}"), (1.0, f"{vmax / 2:.3g}")]
    text_w = max(int(ImageDraw.Draw(pic).textlength(t, font=font)) for _, t in labels)
    width = max(pic.width + gap + bar_w + 4 + text_w + 4, int(ImageDraw.Draw(pic).textlength(title, font=font)) + 8)
    canvas = Image.new("RGB", (width, pic.height + top + 6), "white")
    canvas.paste(pic, (0, top))
    canvas.paste(bar, (pic.width + gap, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title, fill="black", font=font)
    for frac, text in labels:
        y = top + (1 - frac) * (pic.height - 1)
        draw.text((pic.width + gap + bar_w + 4, y), text, fill="black", font=font, anchor="lm")
    out = Path(path)
    atomic_write(out, lambda tmp: canvas.save(tmp, format="PNG"))
    return out


def save_contact_sheet(columns: Sequence[tuple[str, Tensor]], path: str | Path, scale: int = 1,
                       title: str | None = None) -> Path:  # fmt: skip
    """One row of labelled pictures: ``columns`` of ``(title, image (C, H, W) in [-1, 1])`` side by side,
    each column's title drawn above it (and an overall ``title`` on top). Images must share ``H x W``;
    grey ones are shown in colour. Written atomically."""
    if not columns:
        raise ValueError("a contact sheet needs at least one column")
    h, w = columns[0][1].shape[-2:]
    for name, img in columns:
        if img.ndim != 3 or tuple(img.shape[-2:]) != (h, w):
            raise ValueError(f"column {name!r} is {tuple(img.shape)}, expected (C, {h}, {w})")
    font, pad = _font(), 4
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cell = max(w * scale, *(int(measure.textlength(n, font=font)) + 4 for n, _ in columns))
    head = 18 if title else 0
    canvas = Image.new("RGB", (pad + len(columns) * (cell + pad), head + 18 + h * scale + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=font)
    for i, (name, img) in enumerate(columns):
        left = pad + i * (cell + pad)
        draw.text((left + cell // 2, head + 9), name, fill="black", font=font, anchor="mm")
        canvas.paste(_scaled(img, scale), (left + (cell - w * scale) // 2, head + 18))
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


def resize_shorter_side(x: Tensor, size: int) -> Tensor:
    """Images ``(B, C, H, W)`` in ``[-1, 1]`` resized (bicubic, antialiased) so that the shorter side is
    ``size``, keeping the aspect ratio; ``ValueError`` if that would enlarge them."""
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"cannot resize a {h}x{w} image so its shorter side is {size}: that would enlarge it")
    if size == min(h, w):
        return x
    out = (round(h * size / min(h, w)), round(w * size / min(h, w)))
    y = torch.nn.functional.interpolate(x.float(), size=out, mode="bicubic", antialias=True, align_corners=False)
    return y.clamp(-1, 1).to(x.dtype)


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


def read_mask(path: str | Path, img_shape: Sequence[int] | None = None) -> Tensor:
    """An inpainting mask file as ``(1, 1, H, W)`` zeros and ones: white = observed, black = missing,
    nothing else. Its size must be the images' ``H x W`` when ``img_shape`` is given (it is never resized)."""
    m = read_image(path, None, channels=1)
    if img_shape is not None:
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
