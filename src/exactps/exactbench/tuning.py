"""Tuning the baselines on held-out measurements (the ``tuning`` split, never the reported ones).

The published step sizes come from 256x256 problems and need not transfer to 8x8 ones. Each baseline
has a documented grid (:data:`EXACTNESS_GRIDS`); every point runs on the tuning measurements with
their own seeds, and the point with the lowest mean SW2 / floor is chosen (the published point is
always a candidate and wins ties; a failed or diverged run ranks last). Every score is recorded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from exactps.baselines import Grid, candidates
from exactps.exactbench.methods import Denoisers, baseline_method
from exactps.exactbench.problems import ExactProblem
from exactps.exactbench.scoring import Scorer
from exactps.seeds import ExactBenchSeed

__all__ = ["EXACTNESS_GRIDS", "TuningResult", "tune_baseline"]

#: The search space of each baseline (a product over its parameters; the published point is always in).
EXACTNESS_GRIDS: dict[str, dict[str, Grid]] = {
    "dps": {"zeta": Grid((0.03, 0.1, 0.3, 1.0, 3.0))},  # the step size on grad ||y - A x0||
    "pigdm": {
        "guidance": Grid((1.0, 3.0, 10.0, 30.0)),
        "eta": Grid((0.0, 1.0)),
        "weighting": Grid(("paper", "reference")),  # Eq. 7-8 vs the reference implementation's update
    },
    "ddrm": {"steps": Grid((20, 100)), "eta": Grid((0.5, 0.85, 1.0)), "eta_b": Grid((0.5, 1.0))},
    "diffpir": {"lam": Grid((0.1, 1.0, 10.0, 30.0)), "zeta": Grid((0.0, 0.3, 1.0)), "steps": Grid((20, 100))},
    "ddnm": {
        "eta": Grid((0.5, 0.85, 1.0)),
        "steps": Grid((20, 100)),
        "travel": Grid(({"travel_length": 1, "travel_repeat": 1}, {"travel_length": 5, "travel_repeat": 3})),
    },
    "daps": {"lr": Grid((0.3, 1.0, 3.0), relative=True)},  # the Langevin step size
    "mpgd": {"scale": Grid((0.03, 0.1, 0.3, 1.0), relative=True)},  # published for 256x256x3 images
}


@dataclass
class TuningResult:
    """The chosen point and every candidate's mean SW2 / floor on the tuning measurements."""

    chosen: dict[str, Any]
    scores: list[tuple[dict[str, Any], float]]
    measurements: int


def _score_point(
    denoisers: Denoisers,
    name: str,
    point: dict[str, Any],
    budget: dict[str, Any],
    problems: Sequence[tuple[ExactProblem, Scorer]],
) -> float:
    method = baseline_method(denoisers, name, problems[0][0].task, point, budget)
    values = []
    for problem, scorer in problems:
        try:
            x, _, _ = method.draw(problem, problem.generator(ExactBenchSeed.SAMPLER, 0))
        except (ValueError, FloatingPointError, RuntimeError) as err:
            warnings.warn(f"tuning {name} on {problem.task}: {point} failed ({err})", RuntimeWarning, stacklevel=3)
            return math.inf
        values.append(scorer.sw2_ratio(x))
    mean = sum(values) / len(values)
    return mean if math.isfinite(mean) else math.inf


def tune_baseline(
    denoisers: Denoisers,
    name: str,
    problems: Sequence[tuple[ExactProblem, Scorer]],
    budget: dict[str, Any] | None = None,
    grids: dict[str, dict[str, Grid]] = EXACTNESS_GRIDS,
    progress: Callable[[str], None] | None = None,
) -> TuningResult:
    """Search ``grids[name]`` on the tuning ``problems`` (with their scorers) at ``budget`` (e.g. a step
    count, which is then not searched) and return the best point."""
    if not problems:
        raise ValueError("tuning needs at least one tuning measurement")
    # a budget fixes its parameters (e.g. steps): they are not searched
    grid = {k: g for k, g in grids.get(name, {}).items() if k not in (budget or {})}
    scores = []
    for point in candidates(name, problems[0][0].task, grid):
        scores.append((point, _score_point(denoisers, name, point, budget or {}, problems)))
        if progress is not None:
            progress(f"tune {name} {problems[0][0].task} {point}: {scores[-1][1]:.3f}")
    best = min(range(len(scores)), key=lambda i: scores[i][1])  # the first minimum: published on a tie
    return TuningResult(dict(scores[best][0]), scores, len(problems))
