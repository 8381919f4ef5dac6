"""Training images: a folder of image files and random crops of scikit-image's bundled photographs.

Every image comes out as a float tensor ``(C, size, size)`` in ``[-1, 1]`` (``x = 2 u - 1`` for
pixel values ``u`` in ``[0, 1]``), the convention of the denoisers (data std ``sd = 0.5``).

- :class:`ImageFolder`: every PIL-readable file under a folder (recursively), centre-cropped to a
  square, resized, randomly flipped. Unreadable files are found when the dataset is built, named in
  a warning and in ``.skipped``, and never used.
- :func:`builtin_crops` / :class:`BuiltinCrops`: random crops of the photographs that ship inside
  scikit-image (no download), for tests and small training demos; :class:`BuiltinSource` draws them
  endlessly.
- :class:`ClassFolder`: the same with one sub-folder per class (the ImageNet layout), each item the image and
  its class index (:class:`exactps.classes.LabelledImages`); :func:`class_names` numbers the classes.
- :func:`open_data`: ``builtin`` or a folder, as training reads it. Per-step batches are built on
  these by :mod:`exactps.train.batches`, with the seeds of :mod:`exactps.seeds`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from exactps.classes import ClassLabelsError, LabelledImages
from exactps.seeds import BUILTIN_ITEM_STRIDE

__all__ = [
    "BUILTIN_IMAGES",
    "IMAGE_EXTENSIONS",
    "TRAIN_FRACTION",
    "BuiltinCrops",
    "BuiltinSource",
    "ClassFolder",
    "ImageFolder",
    "builtin_crops",
    "builtin_face_crops",
    "builtin_image",
    "class_names",
    "load_image",
    "open_data",
]


#: File suffixes (lower case) that :class:`ImageFolder` considers images.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".tga",
)

#: Photographs bundled with scikit-image (loaded from its package data, never downloaded).
BUILTIN_IMAGES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "stereo_motorcycle",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
)


# -- pixel conversion -------------------------------------------------------------------------------


def _pil_to_unit(img: Image.Image, channels: int) -> np.ndarray:
    """PIL image -> float32 array ``(H, W, C)`` in ``[0, 1]`` (16-bit and float modes rescaled)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I") and arr.max() > 255 else 255.0
        arr = np.clip(arr / top, 0.0, 1.0)[..., None]
        return arr if channels == 1 else np.repeat(arr, channels, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _unit_to_tensor(arr: np.ndarray) -> Tensor:
    """``(H, W, C)`` in ``[0, 1]`` -> ``(C, H, W)`` in ``[-1, 1]``: ``x = 2 u - 1``."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))) * 2.0 - 1.0


def _center_square(img: Image.Image) -> Image.Image:
    """The largest centred square of ``img``."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def load_image(path: str | Path, size: int | None = None, channels: int = 3) -> Tensor:
    """One image file as ``(C, H, W)`` in ``[-1, 1]``, read as :class:`ImageFolder` reads its files:
    centre-cropped to a square and resized to ``size`` (bicubic), or left as it is if ``size`` is None.
    Raises ``OSError`` naming the file if it cannot be read."""
    try:
        with Image.open(path) as im:
            if size is not None:
                im = _center_square(im)
            if im.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
                im = im.convert("L" if channels == 1 else "RGB")
            if size is not None:
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            arr = _pil_to_unit(im, channels)
    except Exception as exc:
        raise OSError(f"could not read image {path}: {exc}") from exc
    return _unit_to_tensor(arr).clamp_(-1.0, 1.0)


# -- folder of files ---------------------------------------------------------------------------------


def _check_file(path: Path, decode: bool = True) -> str | None:
    """``None`` if ``path`` opens, verifies (and fully decodes if ``decode``); else the reason it does not."""
    try:
        with Image.open(path) as im:
            im.verify()  # container-level checks (PNG chunk CRCs, ...)
        if decode:
            with Image.open(path) as im:
                im.load()  # full decode: catches truncated JPEGs that verify() lets through
        return None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(exc).__name__}: {exc}"


class ImageFolder(Dataset):
    """All images under ``root`` (recursively), as ``(C, size, size)`` tensors in ``[-1, 1]``.

    Each image is centre-cropped to a square, resized to ``size`` (bicubic, anti-aliased), and
    flipped horizontally with probability 1/2 if ``flip``. Files are decoded once when the dataset
    is built (``check="decode"``; ``"verify"`` only opens and verifies them, which is faster but
    lets some truncated JPEGs through to ``__getitem__``, where they raise an error naming the
    file); those that fail are skipped, listed in ``.skipped`` and named in a warning.
    """

    def __init__(
        self,
        root: str | Path,
        size: int,
        channels: int = 3,
        flip: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        workers: int = 8,
        check: Literal["decode", "verify"] = "decode",
    ):
        if check not in ("decode", "verify"):
            raise ValueError(f"check must be 'decode' or 'verify', got {check!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.root = Path(root)
        self.size, self.channels, self.flip = int(size), int(channels), bool(flip)
        candidates = self._find(self.root, extensions)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            reasons = list(pool.map(partial(_check_file, decode=check == "decode"), candidates))
        self.files: list[Path] = [p for p, r in zip(candidates, reasons, strict=True) if r is None]
        self.skipped: list[Path] = [p for p, r in zip(candidates, reasons, strict=True) if r is not None]
        if self.skipped:
            listing = "; ".join(f"{p} ({r})" for p, r in zip(candidates, reasons, strict=True) if r)
            warnings.warn(
                f"ImageFolder({self.root}): skipped {len(self.skipped)} unreadable file(s): {listing}",
                RuntimeWarning,
                stacklevel=2,
            )
        if not self.files:
            raise ValueError(f"no readable image files under {self.root} ({len(self.skipped)} skipped)")

    @staticmethod
    def _find(root: Path, extensions: Sequence[str]) -> list[Path]:
        """Image files under ``root`` in sorted order; errors name the path."""
        if not root.exists():
            raise FileNotFoundError(f"image folder {root} does not exist")
        if not root.is_dir():
            raise NotADirectoryError(
                f"image folder {root} is a file, not a folder (expected a folder of images or 'builtin')"
            )
        exts = {e.lower() for e in extensions}
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise ValueError(f"no image files ({', '.join(sorted(exts))}) found under {root}")
        return files

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Tensor:
        """The ``index``-th image, cropped and resized but not flipped."""
        return load_image(self.files[index], self.size, self.channels)

    def __getitem__(self, index: int) -> Tensor:
        x = self.load(index)
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x


def class_names(root: str | Path) -> list[str]:
    """The classes of ``root``: its sub-folders (hidden ones excepted), sorted; ``ClassLabelsError`` naming
    the folder if it has none (a folder of images without classes)."""
    path = Path(root)
    if not path.is_dir():
        raise ClassLabelsError(f"class labels from {root}: it is not a folder")
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ClassLabelsError(
            f"class labels from {root}: it has no class sub-folders (expected one folder of images per class, "
            "the ImageNet layout)"
        )
    return names


class ClassFolder(ImageFolder):
    """The images of ``root/<class>/...`` with their class indices: ``self[i]`` is :class:`LabelledImages`.

    ``classes`` numbers the classes (default: :func:`class_names` of ``root``); every sub-folder of
    ``root`` must be one of them (``ClassLabelsError`` otherwise), and images directly in ``root`` are
    refused (they have no class). ``kw`` are :class:`~exactps.data.ImageFolder`'s options.
    """

    def __init__(self, root: str | Path, size: int, channels: int = 3, classes: Sequence[str] | None = None, **kw: Any):
        self.classes = list(classes) if classes is not None else class_names(root)
        unknown = sorted(set(class_names(root)) - set(self.classes))
        if unknown:
            raise ClassLabelsError(
                f"{root} has class sub-folders {unknown[:5]} that are not among the {len(self.classes)} classes "
                f"the network was trained with ({self.classes[:5]}...)"
            )
        super().__init__(root, size, channels, **kw)
        index = {name: k for k, name in enumerate(self.classes)}
        outside = [f for f in self.files if f.parent == self.root]
        if outside:
            raise ClassLabelsError(f"{outside[0]} is not in a class sub-folder of {root}: its class is unknown")
        self.labels = [index[f.relative_to(self.root).parts[0]] for f in self.files]

    def __getitem__(self, index: int) -> LabelledImages:  # type: ignore[override]
        return LabelledImages(super().__getitem__(index), torch.tensor(self.labels[index]))


# -- built-in photographs ----------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _builtin_images(channels: int) -> tuple[Tensor, ...]:
    """scikit-image's bundled photographs as uint8 tensors ``(C, H, W)`` (loaded once)."""
    images = []
    for name in BUILTIN_IMAGES:
        try:
            arr = getattr(skimage.data, name)()
        except Exception:  # not shipped with this scikit-image version (would need a download)
            continue
        if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
            arr = arr[0]
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            continue
        images.append(_to_channels(torch.from_numpy(np.ascontiguousarray(arr)), channels))
    if not images:
        raise RuntimeError("none of scikit-image's bundled photographs could be loaded")
    return tuple(images)


def builtin_image(name: str, channels: int = 3) -> Tensor:
    """One of scikit-image's bundled photographs (:data:`BUILTIN_IMAGES`) as ``(C, H, W)`` in ``[-1, 1]``,
    whole (the examples of ``exactps sample --example``)."""
    if name not in BUILTIN_IMAGES:
        raise ValueError(f"unknown example photograph {name!r}; choose one of {', '.join(BUILTIN_IMAGES)}")
    arr = getattr(skimage.data, name)()
    arr = np.asarray(arr[0] if isinstance(arr, tuple) else arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"scikit-image's {name!r} is not an 8-bit photograph ({arr.dtype})")
    img = _to_channels(torch.from_numpy(np.ascontiguousarray(arr)), channels)
    return img.float() / 127.5 - 1.0


def builtin_face_crops(size: int, n: int = 8, channels: int = 3) -> Tensor:
    """``n`` face pictures ``(n, C, size, size)`` in ``[-1, 1]`` from scikit-image (no dataset needed):
    square crops around the face of ``astronaut`` (sides 170 to 170 + 4 (n - 1) px, shifted by up to
    10 px), resized (bicubic, antialiased). For testing and showing face models on pictures that ship
    with a dependency."""
    if not 1 <= n <= 8:
        raise ValueError(f"n must be in 1..8 (crops stay inside the photograph), got {n}")
    photo = builtin_image("astronaut", channels)[None].float()
    out = []
    for k in range(n):
        side, dy, dx = 170 + 4 * k, 10 * (k % 3 - 1), 10 * (k // 3 - 1)
        crop = photo[..., 20 + dy : 20 + dy + side, 150 + dx : 150 + dx + side]
        out.append(F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False))
    return torch.cat(out).clamp(-1, 1)


def _to_channels(img: Tensor, channels: int) -> Tensor:
    """``(H, W)`` or ``(H, W, 3|4)`` uint8 -> ``(channels, H, W)`` uint8 (grey replicated, Rec. 601 luma)."""
    if img.ndim == 2:
        img = img[None]
    else:
        img = img[..., :3].permute(2, 0, 1)
    if channels == 1 and img.shape[0] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).reshape(3, 1, 1)
        img = (img.float() * w).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif channels == 3 and img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.contiguous()


def _random_crop(img: Tensor, size: int, generator: torch.Generator | None) -> Tensor:
    """One crop: scale ``s ~ U[1, 2]`` (window ``s * size`` resized to ``size``), position and flip uniform."""
    u = torch.rand(4, generator=generator)
    _, h, w = img.shape
    window = min(round(size * (1.0 + u[0].item())), h, w)
    top = int(u[1].item() * (h - window + 1))
    left = int(u[2].item() * (w - window + 1))
    crop = img[:, top : top + window, left : left + window].float()[None] / 255.0
    if window != size:
        crop = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    crop = crop[0].clamp(0.0, 1.0)
    if u[3].item() < 0.5:
        crop = crop.flip(-1)
    return crop * 2.0 - 1.0


#: Fraction of each built-in photograph's width (from the left) used by the ``"train"`` split; the
#: ``"test"`` split is the rest (a strip on the right no training crop overlaps).
TRAIN_FRACTION = 0.8
Split = Literal["all", "train", "test"]


def _split_columns(img: Tensor, split: Split) -> Tensor:
    """The columns of ``img`` (``(C, H, W)``) that belong to ``split``."""
    cut = int(TRAIN_FRACTION * img.shape[-1])
    if split == "train":
        return img[..., :cut]
    if split == "test":
        return img[..., cut:]
    if split == "all":
        return img
    raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")


def builtin_crops(
    n: int, size: int, generator: torch.Generator | None = None, channels: int = 3, split: Split = "all"
) -> Tensor:
    """``n`` random crops ``(n, C, size, size)`` in ``[-1, 1]`` of scikit-image's bundled photographs.

    Image, position, horizontal flip and scale (1x to 2x downsampling) are drawn from
    ``generator``, so a seeded generator gives the same crops every time. ``split="train"`` crops
    only the left ``TRAIN_FRACTION`` of every photograph and ``"test"`` only the rest, so test crops
    never share a pixel with training crops (photographs too narrow for ``size`` are skipped).
    """
    if n < 0 or size < 1:
        raise ValueError(f"need n >= 0 and size >= 1, got n={n}, size={size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    parts = [_split_columns(im, split) for im in _builtin_images(channels)]
    images = [im for im in parts if min(im.shape[1:]) >= size]
    if not images:
        raise ValueError(f"size {size} is larger than every built-in photograph (split {split!r})")
    picks = torch.randint(len(images), (n,), generator=generator).tolist()
    crops = [_random_crop(images[i], size, generator) for i in picks]
    return torch.stack(crops) if crops else torch.empty(0, channels, size, size)


class BuiltinCrops(Dataset):
    """``length`` random crops of the built-in photographs; item ``i`` is seeded by ``(seed, i)``."""

    def __init__(self, length: int, size: int, channels: int = 3, seed: int = 0):
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.length, self.size, self.channels, self.seed = int(length), int(size), int(channels), int(seed)
        builtin_crops(0, self.size, channels=self.channels)  # validate size/channels, load once

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} crops")
        g = torch.Generator().manual_seed(self.seed * BUILTIN_ITEM_STRIDE + int(index))
        return builtin_crops(1, self.size, generator=g, channels=self.channels)[0]


@dataclass
class BuiltinSource:
    """Endless random crops of scikit-image's photographs (:func:`builtin_crops`; training uses the
    ``"train"`` split, so crops of the ``"test"`` split are held out)."""

    size: int
    channels: int = 3
    split: Split = "train"

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return builtin_crops(n, self.size, generator=generator, channels=self.channels, split=self.split)


def open_data(spec: str, size: int, channels: int = 3, classes: Sequence[str] | None = None) -> Any:
    """``"builtin"`` -> :class:`BuiltinSource`; a ``.safetensors`` Gaussian-mixture file (written by
    :func:`exactps.mixture_fit.save_mixture`) -> the mixture, sampled afresh at every step; a directory ->
    :class:`exactps.data.ImageFolder`, or with ``classes`` (class names in index order) a folder with one
    sub-folder per class, whose items carry their class (:class:`ClassFolder`)."""
    if classes is not None:
        return ClassFolder(spec, size, channels, classes)
    if spec == "builtin":
        return BuiltinSource(size, channels)
    if Path(spec).suffix == ".safetensors" and Path(spec).is_file():
        from exactps.mixture_fit import load_mixture  # lazy: priors import the operators

        mixture = load_mixture(spec)
        if tuple(mixture.img_shape) != (channels, size, size):
            raise ValueError(
                f"--data {spec}: the mixture draws images of shape {tuple(mixture.img_shape)}, but the run "
                f"trains on {(channels, size, size)}; pass --size {mixture.img_shape[-1]} --channels "
                f"{mixture.img_shape[0]}"
            )
        return mixture
    return ImageFolder(spec, size, channels)
