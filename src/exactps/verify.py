"""Exactness harness: does a sampler driven by EPS draw the exact posterior?

Two priors with known posteriors (see :mod:`exactps.priors`):

* Gaussian mixture on small images: the sliced-W2 distance between sampler outputs and exact
  posterior samples, divided by the Monte-Carlo floor (the same distance between two
  independent exact sample sets). A ratio near 1 is indistinguishable from exact sampling.
* Finite-image prior (crops of natural photographs): the total variation between the
  frequencies of the atoms the samples land on and the exact posterior atom weights
  ``p(x_k | y)``, proportional to ``exp(-||y - A x_k||^2 / 2 s_y^2)``.

:func:`exactness_table` runs the grid interpolant x sampler x NFE that ``exactps verify`` prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.interpolants import Interpolant, X0Predictor, get_interpolant
from exactps.metrics import atom_tv, sliced_w2
from exactps.operators import LinearOperator
from exactps.posterior import PosteriorPredictor
from exactps.priors import FiniteImagePrior, GaussianMixture, dense_matrix
from exactps.samplers import sample
from exactps.seeds import ExactnessSeed
from exactps.tasks import check_simulated, make_task_operator

__all__ = [
    "FULL_GRID",
    "QUICK_GRID",
    "FiniteProblem",
    "GMMProblem",
    "Grid",
    "exactness_table",
    "finite_tv",
    "format_table",
    "gmm_sw2_ratio",
    "make_finite_problem",
    "make_gmm_problem",
]

@dataclass
class GMMProblem:
    """A measurement of a Gaussian-mixture image and its exact posterior."""

    prior: GaussianMixture
    operator: LinearOperator
    x0: Tensor  # the ground truth behind y
    y: Tensor
    sigma_y: float
    posterior: GaussianMixture
    reference: Tensor  # exact posterior samples
    floor: float  # SW2 between two independent exact sample sets
    n_proj: int
    proj_seed: int

    def predictor(self, interp: Interpolant, use_y: bool = True) -> X0Predictor:
        """EPS x0-predictor (or the prior's, ignoring ``y``) from the exact denoiser."""
        if use_y:
            return PosteriorPredictor(self.prior.denoise, interp, self.operator, self.y, self.sigma_y)
        return PosteriorPredictor(self.prior.denoise, interp)


def make_gmm_problem(
    task: str,
    img_shape: tuple[int, int, int] = (1, 8, 8),
    n_components: int = 4,
    sigma_y: float = 0.05,
    n_samples: int = 2000,
    n_proj: int = 256,
    seed: int = 0,
) -> GMMProblem:
    g = torch.Generator().manual_seed(seed)
    prior = GaussianMixture.random(img_shape, n_components, g)
    op = make_task_operator(task, img_shape, g, torch.float64)
    x0 = prior.sample(1, g)
    y = op.measure(x0, sigma_y, g)
    post = prior.posterior(dense_matrix(op), y, sigma_y)
    reference = post.sample(n_samples, g)
    other = post.sample(n_samples, g)
    floor = sliced_w2(other, reference, n_proj, torch.Generator().manual_seed(seed + ExactnessSeed.FLOOR))
    return GMMProblem(prior, op, x0, y, sigma_y, post, reference, floor, n_proj, seed + ExactnessSeed.FLOOR)


def gmm_sw2_ratio(problem: GMMProblem, samples: Tensor) -> float:
    """SW2(samples, exact) / SW2(exact', exact), with the same projections for both."""
    g = torch.Generator().manual_seed(problem.proj_seed)
    return sliced_w2(samples, problem.reference, problem.n_proj, g) / problem.floor


@dataclass
class FiniteProblem:
    """A measurement of one atom of a finite-image prior and the exact atom posterior."""

    prior: FiniteImagePrior
    operator: LinearOperator
    x0: Tensor  # the ground truth behind y (atom 0)
    y: Tensor
    sigma_y: float
    weights: Tensor

    def predictor(self, interp: Interpolant, use_y: bool = True) -> X0Predictor:
        if use_y:
            return PosteriorPredictor(self.prior.denoise, interp, self.operator, self.y, self.sigma_y)
        return PosteriorPredictor(self.prior.denoise, interp)


EXACT_FLOOR = "exact (MC floor)"


def _perplexity(w: Tensor) -> float:
    return math.exp(-(w * torch.log(w.clamp_min(1e-300))).sum().item())


def make_finite_problem(
    task: str,
    atoms: Tensor,
    target_perplexity: float = 4.0,
    seed: int = 0,
    sigma_y: float | None = None,
) -> FiniteProblem:
    """Measure atom 0 and pick ``s_y`` so that ``p(x_k | y)`` spreads over about ``target_perplexity`` atoms.

    (Or use a given ``sigma_y``.)

    With ``s_y`` too small the posterior is one atom and every consistent sampler scores 0;
    the spread makes the atom frequencies a sharp test of the posterior's weights.
    """
    g = torch.Generator().manual_seed(seed)
    atoms = atoms.to(torch.float64)
    prior = FiniteImagePrior(atoms)
    op = make_task_operator(task, tuple(atoms.shape[1:]), g, torch.float64)
    clean = op.A(atoms[:1])
    z = torch.randn(clean.shape, generator=g, dtype=torch.float64)
    if sigma_y is not None:  # a fixed noise level instead of a target spread
        y = clean + sigma_y * z
        return FiniteProblem(prior, op, atoms[:1], y, sigma_y, prior.posterior_weights(op, y, sigma_y))
    lo, hi = -6.0, 3.0  # bisection on log s_y
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        sy = math.exp(mid)
        w = prior.posterior_weights(op, clean + sy * z, sy)
        lo, hi = (mid, hi) if _perplexity(w) < target_perplexity else (lo, mid)
    sy = math.exp(0.5 * (lo + hi))
    y = clean + sy * z
    return FiniteProblem(prior, op, atoms[:1], y, sy, prior.posterior_weights(op, y, sy))


def finite_tv(problem: FiniteProblem, samples: Tensor) -> float:
    """TV between the atom frequencies of ``samples`` and the exact posterior weights."""
    return atom_tv(problem.prior.nearest_atom(samples), problem.weights)


@dataclass
class Row:
    prior: str
    task: str
    interpolant: str
    sampler: str
    budget: int  # NFE asked for (Heun spends one less)
    nfe: int
    metric: str
    value: float


def _grid(
    kind: str,
    task: str,
    problem: GMMProblem | FiniteProblem,
    n: int,
    interpolants: list[str],
    samplers: list[str],
    nfes: list[int],
    seed: int,
) -> Iterator[Row]:
    """Rows for every interpolant x sampler x NFE, then the prior sampler (ignores ``y``) per interpolant."""
    shape = (n, *problem.operator.img_shape)
    metric = "sw2/floor" if kind == "gmm" else "atom TV"
    for name in interpolants:
        interp = get_interpolant(name)
        runs = [(smp, nfe, True) for smp in samplers for nfe in nfes] + [("ddim", max(nfes), False)]
        for smp, nfe, use_y in runs:
            g = torch.Generator().manual_seed(seed)
            out = sample(problem.predictor(interp, use_y), interp, shape, smp, nfe, generator=g, dtype=torch.float64)
            value = gmm_sw2_ratio(problem, out.x) if kind == "gmm" else finite_tv(problem, out.x)
            yield Row(kind, task, name, smp if use_y else "prior (ignores y)", nfe, out.nfe, metric, value)


@dataclass(frozen=True)
class Grid:
    """The combinations of an exactness report: tasks x interpolants x samplers x NFE."""

    tasks: tuple[str, ...]
    interpolants: tuple[str, ...]
    samplers: tuple[str, ...]
    nfes: tuple[int, ...]


#: ``exactps verify``: every interpolant and sampler on three tasks.
FULL_GRID = Grid(
    ("sr4", "inpaint-box", "deblur-gauss"),
    ("vp-linear", "vp-cosine", "ve", "flow", "trig"),
    ("ddim", "ddim-eta1", "ddpm", "euler", "heun", "dpmpp-2m"),
    (10, 20, 50, 100, 200),
)
#: ``exactps verify --quick``: about a minute.
QUICK_GRID = Grid(("inpaint-box", "deblur-motion"), ("ve", "flow"), ("ddim", "heun", "dpmpp-2m"), (10, 50, 200))


def exactness_table(
    tasks: Iterable[str] = FULL_GRID.tasks,
    interpolants: Iterable[str] = FULL_GRID.interpolants,
    samplers: Iterable[str] = FULL_GRID.samplers,
    nfes: Iterable[int] = FULL_GRID.nfes,
    gmm_samples: int = 2000,
    finite_atoms: Tensor | None = None,
    finite_samples: int = 500,
    finite_interpolants: Iterable[str] | None = None,
    finite_samplers: Iterable[str] | None = None,
    seed: int = 0,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Every combination on the GMM prior, and (if ``finite_atoms``) on the finite-image prior."""
    rows: list[Row] = []

    def emit(row: Row) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    tasks, interpolants, samplers, nfes = list(tasks), list(interpolants), list(samplers), list(nfes)
    check_simulated(tasks)
    for task in tasks:
        gp = make_gmm_problem(task, n_samples=gmm_samples, seed=seed)
        for row in _grid("gmm", task, gp, gmm_samples, interpolants, samplers, nfes, seed + ExactnessSeed.GMM_GRID):
            emit(row)
        if finite_atoms is None:
            continue
        fp = make_finite_problem(task, finite_atoms, seed=seed)
        f_interps, f_samplers = list(finite_interpolants or interpolants), list(finite_samplers or samplers)
        grid_seed = seed + ExactnessSeed.FINITE_GRID
        for row in _grid("finite", task, fp, finite_samples, f_interps, f_samplers, nfes, grid_seed):
            emit(row)
        g = torch.Generator().manual_seed(seed + ExactnessSeed.FINITE_EXACT)
        exact = torch.multinomial(fp.weights, finite_samples, replacement=True, generator=g)
        emit(Row("finite", task, "-", EXACT_FLOOR, 0, 0, "atom TV", atom_tv(exact, fp.weights)))
    return rows


def format_table(rows: list[Row]) -> str:
    """One block per (prior, task): rows interpolant x sampler, columns NFE."""
    out: list[str] = []
    keys = list(dict.fromkeys((r.prior, r.task) for r in rows))
    for prior, task in keys:
        block = [r for r in rows if (r.prior, r.task) == (prior, task)]
        metric = block[0].metric
        nfe_cols = sorted({r.budget for r in block if not r.sampler.startswith("prior") and r.sampler != EXACT_FLOOR})
        out.append(
            f"\n## {prior} prior, {task}: {metric} (lower is better; 1.0 = exact)"
            if metric.startswith("sw2")
            else f"\n## {prior} prior, {task}: {metric} (0 = exact)"
        )
        header = f"{'interpolant':<11} {'sampler':<18}" + "".join(f"{'NFE ' + str(n):>10}" for n in nfe_cols)
        out.append(header)
        out.append("-" * len(header))
        combos = list(dict.fromkeys((r.interpolant, r.sampler) for r in block))
        for interp, smp in combos:
            vals = {r.budget: r.value for r in block if (r.interpolant, r.sampler) == (interp, smp)}
            if smp == EXACT_FLOOR:
                cells = f"{vals[0]:>10.3f}  (exact samples, same count)"
            elif smp.startswith("prior"):
                cells = f"{vals[max(vals)]:>10.3f}" + f"  (at NFE {max(vals)})"
            else:
                cells = "".join(f"{vals[n]:>10.3f}" if n in vals else f"{'':>10}" for n in nfe_cols)
            out.append(f"{interp:<11} {smp:<18}{cells}")
    return "\n".join(out)
