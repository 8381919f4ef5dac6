"""Exactness benchmark: EPS against gradient-guided and projection posterior samplers.

On priors whose posterior is known (:mod:`exactps.priors`) every method uses the same exact
denoiser: EPS calls it at the pivot under ``S_t``; DPS, PiGDM, DDRM, DiffPIR and DDNM call the
unconditional one (``A = 0``) and enforce ``y`` their own way. Differences are the methods', not
the networks'. Costs are counted (network evaluations and vector-Jacobian products separately)
and timed side by side in one run on one machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from exactps.baselines import BASELINES
from exactps.baselines import published_settings as baseline_settings
from exactps.interpolants import VPLinear, get_interpolant
from exactps.metrics import psnr
from exactps.samplers import initial_noise, sample
from exactps.seeds import BaselineBenchSeed
from exactps.tasks import STANDARD_TASKS, check_simulated, get_task
from exactps.verify import FiniteProblem, GMMProblem, finite_tv, gmm_sw2_ratio, make_finite_problem, make_gmm_problem

__all__ = ["BenchRow", "format_bench", "format_summary", "plot_bench", "published_settings", "run_bench"]


@dataclass
class BenchRow:
    prior: str
    task: str
    method: str
    nfe: int
    vjp: int
    sec_per_sample: float
    metric: str
    value: float
    mean_psnr: float  # PSNR (dB, data range 2) of the sample mean against the ground truth


@dataclass
class _Run:
    x: Tensor
    nfe: int
    vjp: int
    seconds: float


def _timed(fn: Callable[[], tuple[Tensor, int, int]]) -> _Run:
    start = time.perf_counter()
    x, nfe, vjp = fn()
    return _Run(x, nfe, vjp, time.perf_counter() - start)


def _eps_runs(problem, n: int, specs: Iterable[tuple[str, str, int]], seed: int) -> dict[str, _Run]:
    runs = {}
    for interp_name, sampler, nfe in specs:
        interp = get_interpolant(interp_name)
        shape = (n, *problem.operator.img_shape)

        def go(interp=interp, sampler=sampler, nfe=nfe, shape=shape):
            g = torch.Generator().manual_seed(seed)
            out = sample(problem.predictor(interp), interp, shape, sampler, nfe, generator=g, dtype=torch.float64)
            return out.x, out.nfe, 0

        runs[f"EPS {sampler} ({interp_name}, {nfe})"] = _timed(go)
    return runs


def published_settings(method: str, task: str) -> dict:
    """Per-task hyper-parameters of the official configs for ``task`` (:data:`exactps.baselines.PUBLISHED_PER_TASK`,
    looked up by the task's ``published`` key in :data:`exactps.tasks.TASKS`)."""
    return baseline_settings(method, get_task(task).published)


def _baseline_runs(
    problem, task: str, n: int, names: Iterable[str], seed: int, overrides: dict[str, dict] | None = None
) -> dict[str, _Run]:
    interp = VPLinear()
    predict = problem.predictor(interp, use_y=False)
    shape = (n, *problem.operator.img_shape)
    runs = {}
    for name in names:
        method = BASELINES[name]

        kwargs = {**published_settings(name, task), **(overrides or {}).get(name, {})}

        def go(method=method, kwargs=kwargs):
            g = torch.Generator().manual_seed(seed)
            x_init = initial_noise(interp, shape, g, dtype=torch.float64)
            out = method(predict, interp, problem.operator, problem.y, problem.sigma_y, x_init, generator=g, **kwargs)
            return out.x.detach(), out.nfe, out.vjp

        runs[name] = _timed(go)
    return runs


def _reference_runs(problem, n: int, seed: int, prior_nfe: int) -> dict[str, _Run]:
    interp = get_interpolant("ve")
    shape = (n, *problem.operator.img_shape)

    def prior():
        g = torch.Generator().manual_seed(seed)
        out = sample(
            problem.predictor(interp, use_y=False),
            interp,
            shape,
            "dpmpp-2m",
            prior_nfe,
            generator=g,
            dtype=torch.float64,
        )
        return out.x, out.nfe, 0

    def exact():
        g = torch.Generator().manual_seed(seed + BaselineBenchSeed.EXACT)
        if isinstance(problem, GMMProblem):
            return problem.posterior.sample(n, g), 0, 0
        idx = torch.multinomial(problem.weights, n, replacement=True, generator=g)
        return problem.prior.atoms[idx], 0, 0

    return {"prior sampler (ignores y)": _timed(prior), "exact posterior": _timed(exact)}


def run_bench(
    tasks: Iterable[str] = STANDARD_TASKS,
    baselines: Iterable[str] = ("dps", "pigdm", "ddrm", "diffpir", "ddnm"),
    eps_specs: Iterable[tuple[str, str, int]] = (
        ("ve", "dpmpp-2m", 10),
        ("ve", "dpmpp-2m", 20),
        ("ve", "dpmpp-2m", 50),
        ("vp-linear", "ddim", 20),
        ("vp-linear", "ddim", 100),
        ("ve", "heun", 35),
    ),
    gmm_samples: int = 1000,
    gmm_shape: tuple[int, int, int] = (1, 8, 8),
    finite_atoms: Tensor | None = None,
    finite_samples: int = 300,
    sigma_y: float = 0.05,
    seed: int = 0,
    progress: Callable[[BenchRow], None] | None = None,
    baseline_overrides: dict[str, dict] | None = None,
) -> list[BenchRow]:
    """One block of rows per (prior, task). ``s_y = 0.05`` on [-1, 1] data, as in the papers.

    Baselines run with their published step counts and per-task settings
    (:func:`published_settings`) unless ``baseline_overrides[name]`` says otherwise.
    """
    rows: list[BenchRow] = []
    eps_specs, baselines, tasks = list(eps_specs), list(baselines), list(tasks)
    check_simulated(tasks)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {tuple(BASELINES)}")
    for task in tasks:
        problems: list[tuple[str, GMMProblem | FiniteProblem, int]] = [
            ("gmm", make_gmm_problem(task, gmm_shape, sigma_y=sigma_y, n_samples=gmm_samples, seed=seed), gmm_samples)
        ]
        if finite_atoms is not None:
            problems.append(
                ("finite", make_finite_problem(task, finite_atoms, seed=seed, sigma_y=sigma_y), finite_samples)
            )
        for prior_name, problem, n in problems:
            runs = _reference_runs(problem, n, seed, 100)
            runs.update(_eps_runs(problem, n, eps_specs, seed))
            runs.update(_baseline_runs(problem, task, n, baselines, seed, baseline_overrides))
            for method, run in runs.items():
                if isinstance(problem, GMMProblem):
                    metric, value = "sw2/floor", gmm_sw2_ratio(problem, run.x)
                else:
                    metric, value = "atom TV", finite_tv(problem, run.x)
                mean = run.x.mean(0, keepdim=True)
                row = BenchRow(
                    prior_name,
                    task,
                    method,
                    run.nfe,
                    run.vjp,
                    run.seconds / n,
                    metric,
                    value,
                    float(psnr(mean, problem.x0.to(mean))),
                )
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def format_bench(rows: list[BenchRow]) -> str:
    out: list[str] = []
    for prior, task in dict.fromkeys((r.prior, r.task) for r in rows):
        block = [r for r in rows if (r.prior, r.task) == (prior, task)]
        metric = block[0].metric
        goal = "1.0 = exact" if metric.startswith("sw2") else "0 = exact"
        out.append(f"\n## {prior} prior, {task} (s_y = 0.05): {metric} ({goal})")
        header = f"{'method':<28}{'NFE':>6}{'VJP':>6}{'ms/sample':>11}{metric:>11}{'mean PSNR':>11}"
        out.append(header)
        out.append("-" * len(header))
        for r in block:
            cost = f"{r.method:<28}{r.nfe:>6}{r.vjp:>6}{1000 * r.sec_per_sample:>11.2f}"
            psnr_cell = f"{r.mean_psnr:>11.2f}" if r.mean_psnr < 100 else f"{'exact':>11}"
            out.append(f"{cost}{r.value:>11.3f}{psnr_cell}")
    return "\n".join(out)


def plot_bench(rows: list[BenchRow], path: str | Path) -> None:
    """Error vs cost (network evaluations + backward passes): one row of panels per prior, one panel per task."""
    import matplotlib  # lazy: 0.4 s to import, and the backend must be chosen before pyplot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priors = list(dict.fromkeys(r.prior for r in rows))
    tasks = list(dict.fromkeys(r.task for r in rows))
    fig, axes = plt.subplots(len(priors), len(tasks), figsize=(3.6 * len(tasks), 3.2 * len(priors)), squeeze=False)
    for i, prior in enumerate(priors):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            block = [r for r in rows if (r.prior, r.task) == (prior, task) and r.nfe > 0]
            for r in block:
                eps = r.method.startswith("EPS")
                ax.scatter(r.nfe + r.vjp, r.value, marker="o" if eps else "s", c="tab:blue" if eps else "tab:red")
                ax.annotate(r.method.replace("EPS ", ""), (r.nfe + r.vjp, r.value), fontsize=5)
            ax.set_xscale("log")
            if block and block[0].metric.startswith("sw2"):
                ax.set_yscale("log")
            ax.set_xlabel("NFE + backward passes", fontsize=7)
            ax.set_ylabel(block[0].metric if block else "", fontsize=7)
            ax.set_title(f"{prior}: {task}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.suptitle("exactness vs cost (blue: EPS; red: baselines and the prior sampler)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def format_summary(rows: list[BenchRow]) -> str:
    """One table per prior: methods x tasks (the exactness metric), with cost columns."""
    out: list[str] = []
    for prior in dict.fromkeys(r.prior for r in rows):
        block = [r for r in rows if r.prior == prior]
        tasks = list(dict.fromkeys(r.task for r in block))
        metric = block[0].metric
        out.append(f"\n{prior} prior: {metric} per operator ({'1.0' if metric.startswith('sw2') else '0'} = exact)")
        header = f"| method | NFE | VJP | ms/sample | {' | '.join(tasks)} |"
        out.append(header)
        out.append("|" + "---|" * (4 + len(tasks)))
        for method in dict.fromkeys(r.method for r in block):
            mrows = {r.task: r for r in block if r.method == method}
            nfe = "/".join(str(n) for n in sorted({r.nfe for r in mrows.values()}))
            vjp = "/".join(str(n) for n in sorted({r.vjp for r in mrows.values()}))
            ms = sum(r.sec_per_sample for r in mrows.values()) / len(mrows) * 1000
            cells = " | ".join(f"{mrows[t].value:.2f}" if t in mrows else "" for t in tasks)
            out.append(f"| {method} | {nfe} | {vjp} | {ms:.2f} | {cells} |")
    return "\n".join(out)
