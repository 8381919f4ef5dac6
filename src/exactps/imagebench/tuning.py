"""Tuning the baselines on validation images only.

The published settings come from 256x256 problems; a step size tuned there can be wrong at 32 or 64
px. Each baseline has a small documented grid (:data:`TUNING_GRIDS`) searched on the *validation*
images (never the test images) at the budget of the row; the published point is always a candidate.
The criterion is the mean PSNR of one posterior sample per validation image (higher is better; a
tie keeps the published setting; a diverged run ranks last). The chosen values and every score of
the search are recorded with the results.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from exactps.baselines import Grid
from exactps.baselines import candidates as grid_candidates
from exactps.baselines import published_point as grid_published_point
from exactps.imagebench.methods import baseline_method
from exactps.imagebench.problems import Problem
from exactps.loading import LoadedModel
from exactps.metrics import psnr
from exactps.seeds import BenchSeed, derive_seed, task_key

__all__ = ["TUNING_GRIDS", "TuningResult", "candidates", "published_point", "tune"]


#: The search space of each baseline (a product over its parameters; the published point is always in).
TUNING_GRIDS: dict[str, dict[str, Grid]] = {
    "dps": {"zeta": Grid((0.25, 0.5, 1.0, 2.0, 4.0), relative=True)},  # the step size
    "pigdm": {"guidance": Grid((0.5, 1.0, 2.0)), "eta": Grid((0.0, 1.0))},
    "ddrm": {"eta": Grid((0.5, 0.85, 1.0)), "eta_b": Grid((0.5, 1.0))},
    "diffpir": {"lam": Grid((1.0, 7.0)), "zeta": Grid((0.1, 0.3, 1.0))},  # zeta in [0, 1]
    "ddnm": {"eta": Grid((0.5, 0.85, 1.0))},
    "daps": {"lr": Grid((0.25, 1.0, 4.0), relative=True)},  # the Langevin step size
    "mpgd": {"scale": Grid((0.03, 0.1, 0.3, 1.0), relative=True)},  # published for 256x256x3 images
}


@dataclass
class TuningResult:
    """The chosen keyword arguments and the validation score of every candidate."""

    chosen: dict[str, Any]
    scores: list[tuple[dict[str, Any], float]]


def published_point(name: str, task: str) -> dict[str, Any]:
    """The published values of the tuned parameters of ``name`` for ``task``."""
    return grid_published_point(name, task, TUNING_GRIDS.get(name, {}))


def candidates(name: str, task: str) -> list[dict[str, Any]]:
    """The published point, then every other point of the grid of ``name`` for ``task`` (relative grids
    scale the published value)."""
    return grid_candidates(name, task, TUNING_GRIDS.get(name, {}))


def tune(prior: LoadedModel, name: str, budget: Mapping[str, Any], validation: Problem, seed: int) -> TuningResult:
    """Search :data:`TUNING_GRIDS` ``[name]`` on the validation problem (one sample per image, the same
    seed for every candidate) and return the best point by mean PSNR."""
    g_seed = derive_seed(seed, BenchSeed.VALIDATION, BenchSeed.SAMPLE, task_key(validation.task))
    scores = []
    for point in candidates(name, validation.task):
        method = baseline_method(prior, name, validation.task, budget, point)
        try:
            x, _, _ = method.draw(validation, torch.Generator(device=validation.x0.device).manual_seed(g_seed))
        except (ValueError, FloatingPointError) as err:  # a setting the sampler refuses, or a diverged run
            warnings.warn(f"tuning {name} on {validation.task}: {point} failed ({err})", RuntimeWarning, stacklevel=2)
            scores.append((point, float("-inf")))
            continue
        score = float(psnr(x.clamp(-1, 1), validation.x0).mean())
        scores.append((point, score if score == score else float("-inf")))  # NaN (diverged) ranks last
    best = max(range(len(scores)), key=lambda i: scores[i][1])  # the first maximum: the published one on a tie
    return TuningResult(dict(scores[best][0]), scores)
