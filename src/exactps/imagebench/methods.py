"""The methods of the image benchmark: how each row draws posterior samples for a :class:`Problem`.

* EPS models at each NFE of ``eps_nfe`` (1 NFE: one call at the top noise level, the posterior mean
  ``E[x0 | y]``), sampled with the backbone's sampler (``sampler``, VE interpolant);
* conditional models (the training-based baseline) the same way;
* the training-free baselines of :data:`exactps.baselines.BASELINES` on the unconditional prior's
  x0-predictor (DDPM time, :class:`~exactps.interpolants.VPLinear`), at the budgets of
  :data:`BASELINE_BUDGETS` (BENCHMARK.md section 5: DPS 1000 and 250, PiGDM 100, DDRM 20, DiffPIR 100,
  DDNM 100, DAPS 100 = 50 levels x 2 ODE steps, MPGD 100), with the published settings and, when
  tuned, the validation-tuned ones;
* the zero-shot pivot at each NFE of ``zero_shot_nfe``: the unconditional prior, not fine-tuned, at the
  pivot and the closest isotropic noise level (:class:`~exactps.posterior.ZeroShotPredictor`);
* the measurement's image-space view (ridge ``A^+ y``), the no-model reference.

A class-conditional network gets the class of each image (:attr:`Problem.labels`, :func:`labels_for`).
A method draws one sample per image per call; the benchmark calls it ``J`` times with the generators
``derive_seed(seed, BenchSeed.SAMPLE, task, j)``, the same for every method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from exactps.baselines import BASELINES, DAPS_PRESETS, published_settings
from exactps.classes import with_class_labels
from exactps.imagebench.problems import Problem
from exactps.interpolants import VE, VPLinear
from exactps.loading import LoadedModel
from exactps.models import PredictorFactory
from exactps.posterior import PosteriorPredictor, ZeroShotPredictor, measurement_image
from exactps.samplers import initial_noise, sample

__all__ = [
    "BASELINE_BUDGETS",
    "Draw",
    "Method",
    "baseline_budgets",
    "baseline_method",
    "budget_nfe",
    "labels_for",
    "model_methods",
    "reference_method",
    "zero_shot_methods",
]

#: ``(problem, generator) -> (one sample per image (N, C, H, W), NFE, VJP)``.
Draw = Callable[[Problem, torch.Generator], tuple[Tensor, int, int]]

#: The budgets each baseline runs at (BENCHMARK.md section 5): keyword arguments of its sampler, one
#: benchmark row each. DPS runs at the paper's 250 steps and its own 1000.
BASELINE_BUDGETS: dict[str, tuple[dict[str, Any], ...]] = {
    "dps": ({"steps": 1000}, {"steps": 250}),
    "pigdm": ({"steps": 100},),
    "ddrm": ({"steps": 20},),
    "diffpir": ({"steps": 100},),
    "ddnm": ({"steps": 100},),
    "daps": (DAPS_PRESETS["daps-100"],),  # 50 annealing levels x 2 ODE steps
    "mpgd": ({"steps": 100},),
}


def baseline_budgets(spec: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    """``name`` -> its budgets of :data:`BASELINE_BUDGETS`; ``name:K`` -> one budget of ``K`` steps (for a
    method with a ``steps`` budget). ``ValueError`` names an unknown method or a bad ``K``."""
    name, _, steps = spec.partition(":")
    if name not in BASELINE_BUDGETS:
        raise ValueError(f"unknown baseline(s) [{name!r}]; choose from {tuple(BASELINE_BUDGETS)}")
    if not steps:
        return name, BASELINE_BUDGETS[name]
    if not steps.isdigit() or int(steps) < 1 or "steps" not in BASELINE_BUDGETS[name][0]:
        raise ValueError(f"baseline {spec!r}: K in name:K must be a positive step count of a stepped method")
    return name, ({"steps": int(steps)},)


def budget_nfe(budget: Mapping[str, Any]) -> int | None:
    """The network evaluations a budget asks for (``steps``, or annealing levels x ODE steps)."""
    if "steps" in budget:
        return int(budget["steps"])
    if "annealing_steps" in budget:
        return int(budget["annealing_steps"]) * int(budget.get("ode_steps", 1))
    return None


@dataclass
class Method:
    """One row of the benchmark. ``settings`` are recorded with the results; ``tuned`` marks settings
    chosen on the validation images; ``show_std`` asks for its per-pixel standard deviation in the
    grid figure (EPS)."""

    name: str
    draw: Draw
    settings: dict[str, Any] = field(default_factory=dict)
    tuned: bool = False
    show_std: bool = False


def labels_for(loaded: LoadedModel, problem: Problem) -> Tensor | None:
    """The class labels ``loaded`` gets on ``problem``: the problem's for a class-conditional network, else None."""
    return problem.labels if loaded.model_config.class_labels is not None else None


def _model_label(loaded: LoadedModel) -> str:
    source = loaded.source
    return source.parent.parent.name if source.parent.name == "checkpoints" else source.stem


def _model_draw(loaded: LoadedModel, nfe: int, sampler: str, predictor: PredictorFactory | None = None) -> Draw:
    """Samples of ``loaded`` through ``predictor`` (default: its objective's) with ``sampler`` at ``nfe``."""
    interp = VE()
    factory = predictor or loaded.spec.predictor

    @torch.no_grad()
    def draw(problem: Problem, generator: torch.Generator) -> tuple[Tensor, int, int]:
        model = with_class_labels(loaded.model, labels_for(loaded, problem))
        predict = factory(model, interp, problem.operator, problem.y, problem.sigma_y)
        shape = tuple(problem.x0.shape)
        if nfe == 1:  # one call at the top noise level: E[x0 | y]
            x = initial_noise(interp, shape, generator, problem.x0.dtype, problem.x0.device)
            t = torch.full((shape[0],), interp.t_max, dtype=x.dtype, device=x.device)
            return predict(x, t), 1, 0
        out = sample(predict, interp, shape, sampler, nfe, generator=generator, device=problem.x0.device)
        return out.x, out.nfe, 0

    return draw


def model_methods(loaded: LoadedModel, nfes: tuple[int, ...], sampler: str) -> list[Method]:
    """The rows of a trained EPS or conditional model: one per NFE."""
    label = _model_label(loaded)
    rows = []
    for nfe in nfes:
        settings = {"model": str(loaded.source), "objective": loaded.objective, "sampler": sampler, "nfe": nfe}
        name = f"{loaded.objective} {label} [{nfe}]"
        rows.append(Method(name, _model_draw(loaded, nfe, sampler), settings, show_std=loaded.spec.measures))
    return rows


def zero_shot_methods(prior: LoadedModel, nfes: tuple[int, ...], sampler: str) -> list[Method]:
    """The zero-shot pivot (:class:`~exactps.posterior.ZeroShotPredictor`) on the unconditional prior, one
    row per NFE: the pretrained denoiser at the pivot and the closest isotropic noise level, no
    fine-tuning (exact only where ``A^T A = gamma^2 I``)."""
    label = _model_label(prior)
    rows = []
    for nfe in nfes:
        settings = {"method": "zero-shot pivot", "model": str(prior.source), "sampler": sampler, "nfe": nfe}
        draw = _model_draw(prior, nfe, sampler, ZeroShotPredictor)
        rows.append(Method(f"zero-shot {label} [{nfe}]", draw, settings, show_std=True))
    return rows


def baseline_method(prior: LoadedModel, name: str, task: str, budget: Mapping[str, Any],
                    overrides: Mapping[str, Any] | None = None) -> Method:  # fmt: skip
    """The row of baseline ``name`` at ``budget`` on the prior's x0-predictor, with the published settings
    for ``task`` (:func:`exactps.baselines.published_settings`), or ``overrides`` (tuned) on top of them."""
    fn = BASELINES[name]
    interp = VPLinear()
    kwargs = {**published_settings(name, task), **budget, **(overrides or {})}

    def draw(problem: Problem, generator: torch.Generator) -> tuple[Tensor, int, int]:
        predict = PosteriorPredictor(prior.model, interp, class_labels=labels_for(prior, problem))
        shape = tuple(problem.x0.shape)
        x_init = initial_noise(interp, shape, generator, problem.x0.dtype, problem.x0.device)
        out = fn(predict, interp, problem.operator, problem.y, problem.sigma_y, x_init, generator=generator, **kwargs)
        return out.x.detach(), out.nfe, out.vjp

    nfe = budget_nfe(budget)
    label = f"{name} [{nfe}]" if nfe is not None else name
    tuned = overrides is not None
    return Method(f"{label} {'tuned' if tuned else 'published'}", draw, {"method": name, **kwargs}, tuned)


def reference_method() -> Method:
    """The measurement's image-space view (the pivot at ``x_t = 0``: ``A^+ y`` on measured directions)."""

    def draw(problem: Problem, generator: torch.Generator) -> tuple[Tensor, int, int]:
        return measurement_image(problem.operator, problem.y, problem.sigma_y), 0, 0

    return Method("measurement view (A+ y)", draw, {"method": "ridge A+ y"})
