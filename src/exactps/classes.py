"""Per-image class labels: folders of images with one sub-folder per class, and labels bound to a network.

A class-conditional network (EDM's ImageNet-64 ADM, :mod:`exactps.admunet`) takes a class label with every
image. exactps reads them from the ImageNet layout, one sub-folder per class::

    DATA/train/n01440764/*.JPEG
    DATA/train/n01443537/*.JPEG
    ...

The classes are the folder's sub-folders in sorted order (empty ones included, so that a subset of the
images keeps the indices of the full set), class ``k`` is the ``k``-th name, as EDM's dataset tool and
torchvision number them. The names are recorded with the network (``ModelConfig.class_names``), and a
folder read for it later is numbered by that list, so the indices stay those the network was trained with.

* :class:`ClassFolder`: an :class:`~exactps.data.ImageFolder` whose items are :class:`LabelledImages`;
* :func:`class_names`: the classes of a folder;
* :func:`with_class_labels`: a denoiser with one label per image bound (``model(m, noise, class_labels=)``);
* :class:`ClassLabelsError`: labels missing for a class-conditional network, or given to one without labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from exactps.data import ImageFolder

__all__ = [
    "FOLDER_LABELS",
    "ClassFolder",
    "ClassLabelsError",
    "LabelledImages",
    "class_names",
    "fit_class_labels",
    "split_labels",
    "with_class_labels",
]

#: The ``--class-labels`` choice (and ``ModelConfig.class_labels``) of per-image labels: the true class of
#: every image, from its class sub-folder.
FOLDER_LABELS = "folder"


class ClassLabelsError(ValueError):
    """A class-conditional network used without saying which label it gets (or labels for a network that
    takes none, or labels that do not fit)."""


class LabelledImages(NamedTuple):
    """Images ``(C, H, W)`` or ``(B, C, H, W)`` and their class indices (``()`` or ``(B,)``, int64)."""

    images: Tensor
    labels: Tensor


def split_labels(batch: Tensor | LabelledImages) -> tuple[Tensor, Tensor | None]:
    """``(images, labels)`` of a batch, labels None for plain images."""
    if isinstance(batch, LabelledImages):
        return batch.images, batch.labels
    return batch, None


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


def fit_class_labels(labels: Tensor, batch: int) -> Tensor:
    """``labels`` for ``batch`` images: as they are, or one label shared by all."""
    if labels.shape[0] == batch:
        return labels
    if labels.shape[0] == 1:
        return labels.expand(batch, *labels.shape[1:])
    raise ClassLabelsError(f"{labels.shape[0]} class labels for a batch of {batch} images (give 1 or {batch})")


def with_class_labels(denoiser: Callable[..., Tensor], labels: Tensor | None) -> Callable[..., Tensor]:
    """``denoiser`` with ``labels`` (class indices ``(B,)`` or label vectors ``(B, K)``; one for all images
    or one per image) passed as ``class_labels=`` on every call; ``denoiser`` itself when ``labels`` is None."""
    if labels is None:
        return denoiser

    def call(m: Tensor, *args: Any) -> Tensor:
        return denoiser(m, *args, class_labels=fit_class_labels(labels.to(m.device), m.shape[0]))

    return call
