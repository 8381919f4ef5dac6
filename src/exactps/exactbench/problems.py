"""Measurements with a known posterior, and the exact reference samples every method is scored against.

A *family* names a prior whose posterior is closed form for a dense ``A``
(:class:`~exactps.priors.GaussianMixture`): ``gmm``, a random 4-component mixture on 8x8 grey images
(image-like anisotropic, correlated covariances); ``gaussian``, one component of the same kind, whose
posterior is Gaussian; or any mixture a user passes (e.g. fitted to photograph patches,
:mod:`exactps.mixture_fit`).

Measurement ``i`` of a task: a ground truth ``x0`` drawn from the prior, the task's operator (masks and
kernels drawn afresh), ``y = A x0 + s_y n`` and the exact posterior. Its Monte-Carlo reference is
``n_refs`` pairs of independent exact sample sets ``(R_j, R'_j)`` of ``n`` samples each: a method's
samples ``X`` are compared with every ``R_j``, and the floor is the same statistic between ``R'_j`` and
``R_j`` (the value an exact sampler reaches with ``n`` samples), averaged over ``j``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.operators import LinearOperator
from exactps.priors import GaussianMixture, dense_matrix
from exactps.seeds import ExactBenchSeed, derive_seed, task_key
from exactps.tasks import make_task_operator

__all__ = ["FAMILIES", "SPLITS", "ExactProblem", "draw_problem", "family_prior"]

#: family -> (number of components, scale) of its random prior on 8x8 grey images
#: (:meth:`GaussianMixture.random`; the Gaussian's larger scale makes its pixels span about [-1, 1], so
#: that the measurement moves the posterior far from the prior).
FAMILIES: dict[str, tuple[int, float]] = {"gmm": (4, 0.5), "gaussian": (1, 2.0)}
#: Measurement splits: settings are chosen on ``tuning`` measurements, reported on ``report`` ones.
SPLITS: dict[str, int] = {"report": 0, "tuning": 1}
IMG_SHAPE = (1, 8, 8)


def family_prior(family: str, seed: int = 0, img_shape: tuple[int, ...] = IMG_SHAPE) -> GaussianMixture:
    """The random prior of ``family`` (:data:`FAMILIES`), seeded by ``(seed, PRIOR, family)``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown prior family {family!r}; choose one of {tuple(FAMILIES)}")
    g = torch.Generator().manual_seed(derive_seed(seed, ExactBenchSeed.PRIOR, task_key(family)))
    components, scale = FAMILIES[family]
    return GaussianMixture.random(img_shape, components, g, scale=scale)


@dataclass
class ExactProblem:
    """One measurement ``y`` of ``x0`` and its exact posterior, with ``n_refs`` pairs of exact sample sets.

    ``references[j]`` are ``R_j`` and ``others[j]`` ``R'_j``, each ``(n, *img_shape)``; ``seed_parts``
    identify the measurement (split, task key, index) in :class:`~exactps.seeds.ExactBenchSeed` seeds.
    """

    task: str
    prior: GaussianMixture
    operator: LinearOperator
    x0: Tensor
    y: Tensor
    sigma_y: float
    posterior: GaussianMixture
    references: Tensor  # (n_refs, n, *img_shape)
    others: Tensor  # (n_refs, n, *img_shape)
    seed: int
    seed_parts: tuple[int, int, int]

    @property
    def n_samples(self) -> int:
        return self.references.shape[1]

    def generator(self, purpose: ExactBenchSeed, *more: int) -> torch.Generator:
        """A generator seeded by ``(seed, purpose, split, task key, index, *more)``."""
        return torch.Generator().manual_seed(derive_seed(self.seed, purpose, *self.seed_parts, *more))

    def with_dtype(self, dtype: torch.dtype) -> ExactProblem:
        """The same measurement with the operator and ``y`` in ``dtype`` (a float32 network's view)."""
        out = ExactProblem(**{**self.__dict__})
        out.operator = self.operator.to_dtype(dtype)
        out.y, out.x0 = self.y.to(dtype), self.x0.to(dtype)
        return out


def draw_problem(
    prior: GaussianMixture,
    task: str,
    index: int,
    split: str = "report",
    sigma_y: float = 0.05,
    n_samples: int = 500,
    n_refs: int = 8,
    seed: int = 0,
) -> ExactProblem:
    """Measurement ``index`` of ``task`` in ``split`` (:data:`SPLITS`), in float64."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    if n_samples < 2 or n_refs < 1:
        raise ValueError(f"need n_samples >= 2 and n_refs >= 1, got {n_samples} and {n_refs}")
    if not sigma_y > 0:
        raise ValueError(f"sigma_y must be > 0 (the posterior of a noiseless measurement is singular), got {sigma_y}")
    parts = (SPLITS[split], task_key(task), int(index))
    g = torch.Generator().manual_seed(derive_seed(seed, ExactBenchSeed.MEASUREMENT, *parts))
    op = make_task_operator(task, tuple(prior.img_shape), g, torch.float64)
    x0 = prior.sample(1, g)
    y = op.measure(x0, sigma_y, g)
    post = prior.posterior(dense_matrix(op), y, sigma_y)
    g_ref = torch.Generator().manual_seed(derive_seed(seed, ExactBenchSeed.REFERENCE, *parts))
    sets = post.sample(2 * n_refs * n_samples, g_ref).reshape(2, n_refs, n_samples, *prior.img_shape)
    return ExactProblem(task, prior, op, x0, y, sigma_y, post, sets[0], sets[1], seed, parts)
