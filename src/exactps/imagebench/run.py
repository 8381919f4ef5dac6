"""Running the image benchmark: every method on every task, with the same draws, timed side by side."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from exactps.classes import with_class_labels
from exactps.imagebench.methods import (
    BASELINE_BUDGETS,
    Method,
    baseline_budgets,
    baseline_method,
    labels_for,
    model_methods,
    reference_method,
    zero_shot_methods,
)
from exactps.imagebench.problems import Problem, make_problem
from exactps.imagebench.scoring import Aggregate, Scorer, aggregate
from exactps.imagebench.tuning import TuningResult, tune
from exactps.inference import check_class_labels_for
from exactps.interpolants import VE
from exactps.loading import LoadedModel
from exactps.posterior import PosteriorPredictor
from exactps.seeds import BenchSeed, derive_seed, task_key
from exactps.tasks import PAPER_TASKS, check_simulated

#: The per-pixel standard deviation shown as white in the grids (black is 0); images span [-1, 1].
STD_WHITE = 0.5

__all__ = [
    "STD_WHITE",
    "BenchConfig",
    "BenchResults",
    "MethodResult",
    "TaskResult",
    "eps_step_overhead",
    "run_image_benchmark",
]


@dataclass
class BenchConfig:
    """What the benchmark runs: tasks, noise, ``images`` test images with ``samples`` (J) samples each,
    EPS at each of ``eps_nfe`` with ``sampler``, the zero-shot pivot on the prior at each of
    ``zero_shot_nfe`` (none by default), the ``baselines`` (``name`` at its budgets of
    :data:`BASELINE_BUDGETS`, or ``name:K`` at ``K`` steps),
    tuned on ``val_images`` validation images if ``tune``, the ``metrics``, the seed."""

    tasks: tuple[str, ...] = PAPER_TASKS
    sigma_y: float = 0.05
    images: int = 32
    samples: int = 4
    eps_nfe: tuple[int, ...] = (100, 20, 1)
    conditional_nfe: tuple[int, ...] = (100,)
    zero_shot_nfe: tuple[int, ...] = ()
    sampler: str = "heun"
    baselines: tuple[str, ...] = tuple(BASELINE_BUDGETS)
    tune: bool = True
    val_images: int = 8
    metrics: tuple[str, ...] = ("psnr", "psnr_mean", "ssim", "lpips", "crps_pix", "mmd_pix", "coverage")
    seed: int = 0
    grid_images: int = 6

    def validate(self) -> BenchConfig:
        check_simulated(self.tasks)
        for spec in self.baselines:
            baseline_budgets(spec)
        if self.samples < 2:
            raise ValueError(f"samples (J) must be >= 2 for the calibration metrics, got {self.samples}")
        if self.images < 2 or self.val_images < 1 or not self.eps_nfe or min(self.eps_nfe) < 1:
            raise ValueError("need images >= 2, val_images >= 1 and EPS NFEs >= 1")
        if self.zero_shot_nfe and min(self.zero_shot_nfe) < 1:
            raise ValueError(f"zero-shot NFEs must be >= 1, got {self.zero_shot_nfe}")
        if not self.sigma_y >= 0 or math.isinf(self.sigma_y):
            raise ValueError(f"sigma_y must be finite and >= 0, got {self.sigma_y}")
        return self


@dataclass
class MethodResult:
    """One row: the method's settings, its cost and every score."""

    method: str
    settings: dict[str, Any]
    tuned: bool
    nfe: int
    vjp: int
    sec_per_sample: float
    scores: dict[str, Aggregate]
    set_scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    nonfinite: float = 0.0  # fraction of samples with NaN / inf values (diverged), scored as clamped zeros


@dataclass
class TaskResult:
    task: str
    rows: list[MethodResult]
    tuning: dict[str, TuningResult]
    pictures: list[tuple[str, Tensor]]  # (label, images) rows of the task's grid figure
    overhead: dict[str, float] | None = None


@dataclass
class BenchResults:
    config: BenchConfig
    tasks: list[TaskResult]
    environment: dict[str, Any]


def _sample(method: Method, problem: Problem, j_count: int, seed: int) -> tuple[Tensor, int, int, float, float]:
    """``(J, N, C, H, W)`` samples (clamped to [-1, 1]), NFE and VJP per sample, seconds per sample, and
    the fraction of samples that held NaN or infinite values (replaced, so that they score as failures)."""
    key = task_key(problem.task)
    device = problem.x0.device
    xs, nfe, vjp, seconds, bad = [], 0, 0, 0.0, 0
    for j in range(j_count):
        g = torch.Generator(device=device).manual_seed(derive_seed(seed, BenchSeed.SAMPLE, key, j))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        x, nfe, vjp = method.draw(problem, g)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        finite = torch.isfinite(x).flatten(1).all(1)
        bad += int((~finite).sum())
        x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)  # a diverged sample scores as such
        xs.append(x.detach().clamp(-1, 1))
    count = j_count * problem.x0.shape[0]
    return torch.stack(xs), nfe, vjp, seconds / count, bad / count


@torch.no_grad()
def eps_step_overhead(model: LoadedModel, problem: Problem, repeats: int = 11) -> dict[str, float]:
    """Seconds per predictor call of EPS (pivot, variance map, network) and of the bare denoiser (the
    same network without measurement) at ``rho = 1``, timed alternately; the overhead is their ratio - 1."""
    interp = VE()
    x = problem.x0 + torch.randn_like(problem.x0)
    t = torch.full((x.shape[0],), float(interp.t_from_ratio(torch.tensor(1.0, dtype=torch.float64))), device=x.device)
    net = with_class_labels(model.model, labels_for(model, problem))
    eps = model.spec.predictor(net, interp, problem.operator, problem.y, problem.sigma_y)
    bare = PosteriorPredictor(net, interp)
    times: dict[str, list[float]] = {"eps": [], "bare": []}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in (("eps", eps), ("bare", bare)):
            start = time.perf_counter()
            fn(x, t)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            times[name].append(time.perf_counter() - start)
    eps_s, bare_s = sorted(times["eps"][1:])[repeats // 2], sorted(times["bare"][1:])[repeats // 2]
    return {"eps_seconds": eps_s, "bare_seconds": bare_s, "overhead": eps_s / bare_s - 1}


def _methods(
    task: str,
    prior: LoadedModel | None,
    eps: Sequence[LoadedModel],
    conditional: Sequence[LoadedModel],
    config: BenchConfig,
    validation: Problem | None,
) -> tuple[list[Method], dict[str, TuningResult]]:
    """The rows of ``task``: the reference, the models, then each baseline published (and tuned)."""
    methods = [reference_method()]
    for model in eps:
        methods += model_methods(model, config.eps_nfe, config.sampler)
    for model in conditional:
        methods += model_methods(model, config.conditional_nfe, config.sampler)
    tuning: dict[str, TuningResult] = {}
    if prior is None:
        return methods, tuning
    methods += zero_shot_methods(prior, config.zero_shot_nfe, config.sampler)
    for spec in config.baselines:
        name, budgets = baseline_budgets(spec)
        for budget in budgets:
            methods.append(baseline_method(prior, name, task, budget))
            if config.tune and validation is not None:
                result = tune(prior, name, budget, validation, config.seed)
                tuning[methods[-1].name.replace(" published", "")] = result
                methods.append(baseline_method(prior, name, task, budget, result.chosen))
    return methods, tuning


def run_image_benchmark(
    config: BenchConfig,
    test: tuple[Tensor, list[str]],
    prior: LoadedModel | None = None,
    eps: Sequence[LoadedModel] = (),
    conditional: Sequence[LoadedModel] = (),
    validation: tuple[Tensor, list[str]] | None = None,
    scorer: Scorer | None = None,
    progress: bool = True,
    test_labels: Tensor | None = None,
    val_labels: Tensor | None = None,
) -> BenchResults:
    """Every method on every task of ``config``: the same test images, operators, noise and sampler
    seeds for all; baselines tuned on ``validation`` only. ``scorer`` defaults to ``config.metrics``.
    ``test_labels`` / ``val_labels``: the class of each test / validation image (indices ``(N,)`` or label
    vectors ``(N, K)``), which every class-conditional model needs (``ClassLabelsError`` before any work)."""
    config.validate()
    models = [m for m in (prior, *eps, *conditional) if m is not None]
    if not models:
        raise ValueError("nothing to benchmark: give a prior (for the baselines), EPS or conditional models")
    device = models[0].device
    x0, names = test
    for m in models:
        if m.img_shape != tuple(x0.shape[1:]):
            raise ValueError(f"{m.source} works on {m.img_shape} images but the test images are {tuple(x0.shape[1:])}")
    for m in models:  # every class-conditional model gets the labels of the test (and validation) images
        if m.model_config.class_labels is not None:
            check_class_labels_for(m, test_labels)
            if m is prior and validation is not None and config.tune:
                check_class_labels_for(m, val_labels)
    for m in (*eps, *conditional):
        if not m.spec.measures:
            raise ValueError(f"{m.source} is an unconditional model ({m.objective}): pass it as the prior")
    if config.tune and prior is not None and config.baselines and validation is None:
        raise ValueError("tuning the baselines needs validation images (or turn tuning off)")
    if config.zero_shot_nfe and prior is None:
        raise ValueError("the zero-shot pivot runs on the unconditional prior: give one (or no zero-shot NFEs)")
    if "lpips" in config.metrics and min(x0.shape[-2:]) < 32:
        raise ValueError(f"LPIPS needs images of at least 32x32 (AlexNet), got {tuple(x0.shape[-2:])}: drop lpips")
    scorer = scorer or Scorer(config.metrics, device=device)
    truth_features = scorer.features_of(x0[None].to(device))[0] if scorer.inception is not None else None
    results = []
    bar = tqdm(total=len(config.tasks), unit="task", disable=not progress, desc="bench images")
    for task in config.tasks:
        problem = make_problem(task, x0, names, config.sigma_y, config.seed, labels=test_labels).to(device)
        val = None
        if validation is not None and config.tune:
            val = make_problem(task, *validation, config.sigma_y, config.seed, BenchSeed.VALIDATION, val_labels)
            val = val.to(device)
        bar.set_postfix(task=task, step="tuning")
        methods, tuning = _methods(task, prior, eps, conditional, config, val)
        rows, pictures = [], []
        for method in tqdm(methods, unit="method", leave=False, disable=not progress, desc=task):
            xs, nfe, vjp, sec, nonfinite = _sample(method, problem, config.samples, config.seed)
            per_image = scorer.per_image(xs, problem.x0)
            scores = {name: aggregate(v) for name, v in per_image.items()}
            set_scores = scorer.set_level(xs[0], truth_features)
            rows.append(MethodResult(method.name, method.settings, method.tuned, nfe, vjp, sec, scores, set_scores,
                                     nonfinite))  # fmt: skip
            n = config.grid_images
            pictures.append((method.name, xs[0, :n].cpu()))
            if method.show_std:  # per-pixel std over the J samples, on one scale for every method
                std = xs[:, :n].std(0).mean(1, keepdim=True)
                pictures.append((f"{method.name} std", (std / STD_WHITE).clamp(0, 1).cpu() * 2 - 1))
        pictures.append(("ground truth", problem.x0[: config.grid_images].cpu()))
        overhead = eps_step_overhead(eps[0], problem) if eps else None
        results.append(TaskResult(task, rows, tuning, pictures, overhead))
        bar.update(1)
    bar.close()
    return BenchResults(config, results, {"device": str(device)})
