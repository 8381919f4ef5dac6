"""Per-image class labels: what they are, and labels bound to a network.

A class-conditional network (EDM's ImageNet-64 ADM, :mod:`exactps.admunet`) takes a class label with every
image. exactps reads them from the ImageNet layout, one sub-folder per class
(:class:`exactps.data.ClassFolder`)::

    DATA/train/n01440764/*.JPEG
    DATA/train/n01443537/*.JPEG
    ...

The classes are the folder's sub-folders in sorted order (empty ones included, so that a subset of the
images keeps the indices of the full set), class ``k`` is the ``k``-th name, as EDM's dataset tool and
torchvision number them. The names are recorded with the network (``ModelConfig.class_names``), and a
folder read for it later is numbered by that list, so the indices stay those the network was trained with.

* :class:`LabelledImages`: images with their class indices (the items and batches of a class folder);
* :func:`with_class_labels`: a denoiser with one label per image bound (``model(m, noise, class_labels=)``);
* :class:`ClassLabelsError`: labels missing for a class-conditional network, or given to one without labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torch import Tensor

__all__ = [
    "FOLDER_LABELS",
    "ClassLabelsError",
    "LabelledImages",
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
