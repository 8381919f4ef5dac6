"""The measurements of the image benchmark: fixed images, operators and noise per task.

Every method of a run restores the same :class:`Problem`: the operators of the ``N`` images (one
mask / kernel per image for random tasks) come from ``derive_seed(seed, BenchSeed.OPERATOR, task)``
and the noise of ``y = A x0 + s_y n`` from ``derive_seed(seed, BenchSeed.NOISE, task)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from exactps.data import ClassFolder, ImageFolder
from exactps.images import check_not_smaller
from exactps.operators import LinearOperator
from exactps.seeds import BenchSeed, derive_seed, task_key
from exactps.tasks import get_task, make_task_operator

__all__ = ["Problem", "image_labels", "load_images", "make_problem"]


@dataclass
class Problem:
    """The measurements ``y = A x0 + s_y n`` of one task on the images ``x0`` ``(N, C, H, W)``; ``labels``:
    their classes (indices ``(N,)`` or label vectors ``(N, K)``) for class-conditional networks, else None."""

    task: str
    x0: Tensor
    operator: LinearOperator
    y: Tensor
    sigma_y: float
    names: list[str]
    labels: Tensor | None = None

    @property
    def img_shape(self) -> tuple[int, int, int]:
        return tuple(self.x0.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> Problem:
        op, x0, y = self.operator.to(device), self.x0.to(device), self.y.to(device)
        labels = None if self.labels is None else self.labels.to(device)
        return Problem(self.task, x0, op, y, self.sigma_y, self.names, labels)


def load_images(folder: str | Path, n: int, size: int, channels: int = 3) -> tuple[Tensor, list[str]]:
    """The first ``n`` images of ``folder`` (sorted by path), centre-cropped to a square and resized to
    ``size`` (never flipped), with their file names.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the folder when it is missing or empty, holds
    fewer than ``n`` readable images, or holds an image smaller than ``size`` (it would be upsampled:
    the benchmark never scores on upsampled pictures)."""
    dataset = ImageFolder(folder, size, channels, flip=False)
    if len(dataset) < n:
        raise ValueError(f"{folder} holds {len(dataset)} readable images, fewer than the {n} asked for")
    files = dataset.files[:n]
    for path in files:
        check_not_smaller(path, size)
    return torch.stack([dataset.load(i) for i in range(n)]), [p.name for p in files]


def image_labels(folder: str | Path, n: int, size: int, channels: int, classes: Sequence[str]) -> Tensor:
    """The class indices ``(n,)`` of the images :func:`load_images` reads from ``folder`` (the first ``n``,
    sorted by path), numbered by ``classes``: the folder has one sub-folder per class
    (:class:`~exactps.data.ClassFolder`; ``ClassLabelsError`` otherwise)."""
    return torch.tensor(ClassFolder(folder, size, channels, classes, flip=False).labels[:n])


def make_problem(
    task: str,
    x0: Tensor,
    names: list[str],
    sigma_y: float,
    seed: int,
    purpose: int = 0,
    labels: Tensor | None = None,
) -> Problem:
    """The operators and measurements of ``task`` for the images ``x0`` (``purpose``: 0 for the test
    images, :attr:`BenchSeed.VALIDATION` for the validation images, so that the two never share draws),
    with the images' class ``labels`` (None without)."""
    get_task(task)
    key = task_key(task)
    prefix = (seed, purpose) if purpose else (seed,)
    g_op = torch.Generator().manual_seed(derive_seed(*prefix, BenchSeed.OPERATOR, key))
    op = make_task_operator(task, tuple(x0.shape[1:]), g_op, x0.dtype, batch=x0.shape[0])
    if op is None:
        raise ValueError(f"task {task!r} has no measurement: the image benchmark restores measurements")
    g_noise = torch.Generator().manual_seed(derive_seed(*prefix, BenchSeed.NOISE, key))
    return Problem(task, x0, op, op.measure(x0, sigma_y, g_noise), float(sigma_y), list(names), labels)
