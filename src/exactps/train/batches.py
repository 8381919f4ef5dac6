"""Reproducible per-step batches: the images of shard ``j`` of step ``k`` as a pure function of
``(seed, k, j)``, so that a resumed run sees exactly the images an uninterrupted one would, and the
number of processes does not change which images a step sees.

* :class:`ShardLayout`: how a global batch splits into shards (micro-batches) and processes;
* :class:`StepBatches`: the images of ``(step, shard)``, from a dataset, a tensor or a sampler;
* :func:`micro_batches`: this process's micro-batches for a range of steps, through a ``DataLoader``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from exactps.classes import LabelledImages
from exactps.seeds import TrainSeed, derive_seed, seeded_global_rng

__all__ = [
    "Batch",
    "ShardLayout",
    "StepBatches",
    "StepKeys",
    "first_shard",
    "head",
    "is_indexable",
    "is_sampler",
    "micro_batches",
]

#: A micro-batch: images ``(B, C, H, W)``, or images with their class indices (a :class:`~exactps.data.ClassFolder`).
Batch = Tensor | LabelledImages


@dataclass(frozen=True)
class ShardLayout:
    """How a global batch is split: ``n_shards = batch_size / micro_batch`` shards, ``accum`` per rank."""

    batch_size: int
    micro_batch: int
    world: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.batch_size % self.micro_batch:
            raise ValueError(f"micro_batch {self.micro_batch} must divide batch_size {self.batch_size}")
        if self.n_shards % self.world:
            raise ValueError(
                f"batch_size / micro_batch = {self.n_shards} shards cannot be split over {self.world} "
                "processes; choose batch_size and micro_batch so that it is a multiple of the world size"
            )

    @property
    def n_shards(self) -> int:
        return self.batch_size // self.micro_batch

    @property
    def accum(self) -> int:
        """Micro-batches per rank and step (gradient accumulation)."""
        return self.n_shards // self.world

    @property
    def shards(self) -> range:
        return range(self.rank * self.accum, (self.rank + 1) * self.accum)


def is_sampler(data: Any) -> bool:
    return callable(getattr(data, "sample", None)) and not isinstance(data, Dataset | Tensor)


def is_indexable(data: Any) -> bool:
    """Map-style datasets of images (a ``Dataset`` or an ``(N, C, H, W)`` tensor); anything else that is
    iterable (a list of batches, a ``DataLoader``) is taken as a stream of per-rank batches."""
    return isinstance(data, Tensor | Dataset)


class StepBatches(Dataset):
    """The images of shard ``j`` of step ``k`` as a pure function of ``(seed, k, j)``: ``self[(k, j)]``.

    * an object with ``sample(n, generator)`` (a prior, :class:`exactps.data.BuiltinSource`): drawn with a
      generator seeded by ``(seed, k, j)``;
    * a map-style dataset or a tensor of images: the global batch of step ``k`` is positions
      ``[k B, (k+1) B)`` of the endless concatenation of per-epoch permutations (seeded by
      ``(seed, epoch)``), shard ``j`` its ``j``-th slice; items are loaded with the global
      generators seeded by ``(seed, epoch, index)`` (random flips are reproducible too); a dataset of
      :class:`~exactps.classes.LabelledImages` gives each image's label with it, from the same index.
    """

    def __init__(self, data: Any, micro_batch: int, n_shards: int, seed: int):
        if not (is_sampler(data) or is_indexable(data)):
            raise TypeError(f"cannot draw batches from {type(data).__name__}")
        if is_indexable(data) and not is_sampler(data) and len(data) == 0:
            raise ValueError("the dataset is empty")
        self.data, self.micro_batch, self.n_shards, self.seed = data, micro_batch, n_shards, seed
        self._perm: tuple[int, Tensor] | None = None

    def __getitem__(self, key: tuple[int, int]) -> Batch:
        step, shard = key
        if is_sampler(self.data):
            g = torch.Generator().manual_seed(derive_seed(self.seed, TrainSeed.DATA, step, shard))
            return self.data.sample(self.micro_batch, g)
        start = (step * self.n_shards + shard) * self.micro_batch
        items = [self._item(p) for p in range(start, start + self.micro_batch)]
        if isinstance(items[0], LabelledImages):
            return LabelledImages(*(torch.stack(part) for part in zip(*items, strict=True)))
        return torch.stack(items)

    def _permutation(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, TrainSeed.PERM, epoch))
            self._perm = (epoch, torch.randperm(len(self.data), generator=g))
        return self._perm[1]

    def _item(self, position: int) -> Tensor | LabelledImages:
        epoch, offset = divmod(position, len(self.data))
        index = int(self._permutation(epoch)[offset])
        if isinstance(self.data, Tensor):
            return self.data[index]
        with seeded_global_rng(derive_seed(self.seed, TrainSeed.ITEM, epoch, index)):
            item = self.data[index]
        return item if isinstance(item, LabelledImages) else torch.as_tensor(item)


class StepKeys(Sampler):
    """``(step, shard)`` for ``step`` in ``[start, stop)`` and this rank's shards, in order."""

    def __init__(self, start: int, stop: int, shards: range):
        self.start, self.stop, self.shards = start, stop, shards

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in range(self.start, self.stop):
            for shard in self.shards:
                yield (step, shard)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * len(self.shards)


def micro_batches(
    data: Any, layout: ShardLayout, seed: int, start: int, stop: int, workers: int = 0, pin_memory: bool = False
) -> Iterator[list[Batch]]:
    """This rank's micro-batches for steps ``start .. stop - 1`` (lists of ``layout.accum`` tensors).

    ``data``: a map-style dataset or tensor of images, or an object with ``sample(n, generator)`` (both
    exactly reproducible, through :class:`StepBatches` and ``workers`` loader processes), or an iterable
    of per-rank batches (used as it comes; a resumed run then does not see the same images).
    """
    if is_sampler(data) or is_indexable(data):
        source = StepBatches(data, layout.micro_batch, layout.n_shards, seed)
        keys = StepKeys(start, stop, layout.shards)
        loader = DataLoader(source, batch_size=None, sampler=keys, num_workers=workers, pin_memory=pin_memory)
        it = iter(loader)
        for _ in range(start, stop):
            yield [next(it) for _ in range(layout.accum)]
        return
    if start > 0:
        warnings.warn(
            "resuming with a plain iterable of batches: the data position is not restored "
            "(use a dataset or a sampler for exact resume)",
            RuntimeWarning,
            stacklevel=2,
        )
    for batch in data:
        if batch.shape[0] != layout.micro_batch * layout.accum:
            raise ValueError(f"expected batches of {layout.micro_batch * layout.accum} images, got {batch.shape[0]}")
        yield list(batch.split(layout.micro_batch))


def head(batch: Batch, n: int) -> Batch:
    """A copy of the first ``n`` images of ``batch`` (with their labels)."""
    if isinstance(batch, LabelledImages):
        return LabelledImages(batch.images[:n].clone(), batch.labels[:n].clone())
    return batch[:n].clone()


def first_shard(data: Any, layout: ShardLayout, seed: int, n: int) -> Batch | None:
    """The first ``n`` images of step 0's first shard (the same after a resume), or None for a plain
    iterable of batches."""
    if not (is_sampler(data) or is_indexable(data)):
        return None
    return head(StepBatches(data, layout.micro_batch, layout.n_shards, seed)[(0, 0)], n)
