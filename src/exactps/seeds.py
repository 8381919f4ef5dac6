"""Seeds: every random draw of exactps comes from a generator seeded by a pure function of integers,
and every purpose of such a seed is named here, in one place.

``derive_seed(seed, purpose, ...)`` mixes a user's seed with a purpose and indices (step, shard,
epoch, ...) through NumPy's ``SeedSequence``, so that streams never overlap and a resumed or
re-run computation draws exactly the same numbers.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterator
from enum import IntEnum

import numpy as np
import torch

__all__ = [
    "BUILTIN_ITEM_STRIDE",
    "BenchSeed",
    "EvalSeed",
    "ExactBenchSeed",
    "ExactnessSeed",
    "SampleSeed",
    "TrainSeed",
    "derive_seed",
    "seeded_global_rng",
    "task_key",
]


class TrainSeed(IntEnum):
    """Purposes of the seeds of a training run, ``derive_seed(seed, purpose, ...)``: one stream each."""

    TASK = 1  # the task of a step: (seed, TASK, step)
    SHARD = 2  # a shard's operator, s_y, rho, noises and dropout: (seed, SHARD, step, shard)
    DATA = 3  # a shard's images from a sampler: (seed, DATA, step, shard)
    PERM = 4  # the order of a dataset in an epoch: (seed, PERM, epoch)
    ITEM = 5  # the random flip/crop of an item: (seed, ITEM, epoch, index)
    PREVIEW = 6  # the preview grids' draws: (seed, PREVIEW)


class EvalSeed(IntEnum):
    """Offsets from a :class:`exactps.evaluation.DrawSpec` seed ``s`` for each draw of an evaluation:
    the operator from ``s``, ``e`` and ``n`` from ``s + NOISE``, the sampler from ``s + SAMPLER``; the
    held-out loss's ``i``-th draw uses ``s + i * LOSS_STRIDE`` in place of ``s``."""

    OPERATOR = 0
    NOISE = 1
    SAMPLER = 2
    LOSS_STRIDE = 1000


class BenchSeed(IntEnum):
    """Purposes of the seeds of ``exactps bench images``, ``derive_seed(seed, purpose, task key, ...)``
    (the task key is :func:`task_key`): every method sees the same images, operators, noise and
    sampler seeds."""

    OPERATOR = 1  # the operators of a task's images: (seed, OPERATOR, task)
    NOISE = 2  # the measurement noise: (seed, NOISE, task)
    SAMPLE = 3  # the j-th sample of every image: (seed, SAMPLE, task, j)
    VALIDATION = 4  # the same three draws on the validation images: (seed, VALIDATION, purpose, task, ...)


class ExactnessSeed(IntEnum):
    """Offsets from the seed ``s`` of ``exactps verify`` (:mod:`exactps.verify`): the problem from ``s``,
    the sliced-W2 projections and the Monte-Carlo floor from ``s + FLOOR``, the samplers' draws from
    ``s + GMM_GRID`` / ``s + FINITE_GRID``, the finite prior's exact samples from ``s + FINITE_EXACT``."""

    FLOOR = 1
    GMM_GRID = 7
    FINITE_GRID = 11
    FINITE_EXACT = 13


class ExactBenchSeed(IntEnum):
    """Purposes of the seeds of ``exactps bench exactness`` (:mod:`exactps.exactbench`),
    ``derive_seed(seed, purpose, ...)``: the prior of a family ``(seed, PRIOR, family)``; measurement ``i``
    of a task in a split (0 report, 1 tuning) ``(seed, MEASUREMENT, split, task key, i)``, its exact
    reference sets ``(..., REFERENCE)`` and sliced-W2 projections ``(..., PROJECTIONS)``; run ``r`` of
    every method on it ``(seed, SAMPLER, split, task key, i, r)`` (the same for every method)."""

    PRIOR = 1
    MEASUREMENT = 2
    REFERENCE = 3
    PROJECTIONS = 4
    SAMPLER = 5


#: ``BuiltinCrops`` item ``i`` of a dataset seeded ``s`` is drawn with the seed ``s * stride + i``.
BUILTIN_ITEM_STRIDE = 1_000_003


def task_key(name: str) -> int:
    """A stable integer for a task name (CRC-32), to mix into :func:`derive_seed`."""
    return zlib.crc32(name.encode())


class SampleSeed(IntEnum):
    """Purposes of the seeds of ``exactps sample``, ``derive_seed(seed, purpose)``."""

    OPERATOR = 1  # simulated masks and kernels
    NOISE = 2  # simulated measurement noise
    SAMPLER = 3  # the sampler's initial noise and stochastic steps


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of the non-negative integers ``parts`` (NumPy SeedSequence)."""
    if any(int(p) < 0 for p in parts):
        raise ValueError(f"seed parts must be non-negative, got {parts}")
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's (CPU and ``device``), Python's and NumPy's global generators inside the block,
    restoring their states afterwards (dropout and datasets that use global randomness)."""
    cuda = [device] if device is not None and device.type == "cuda" else []
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global generator, saved and restored)
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for d in cuda:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002
