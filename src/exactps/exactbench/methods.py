"""The rows of the exactness benchmark: how each method draws ``n`` samples for an :class:`ExactProblem`.

Every method gets the same measurement and the same generator per run. Denoisers come in pairs
(:class:`Denoisers`): the posterior x0-predictor EPS samples with (``D`` at the pivot under ``S_t``) and
the prior's (``A = 0``) that the baselines and the prior sampler use. :func:`oracle_denoisers` are the
exact ones of the problem's Gaussian mixture, so that EPS driven by them is exact by construction and
differences between methods are the methods' own; :func:`learned_denoisers` are trained networks, which
adds each network's error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from exactps.baselines import BASELINES, flatten_point, published_settings
from exactps.exactbench.problems import ExactProblem
from exactps.interpolants import Interpolant, VPLinear, X0Predictor, get_interpolant
from exactps.loading import LoadedModel
from exactps.posterior import PosteriorPredictor
from exactps.samplers import initial_noise, sample

__all__ = [
    "DEFAULT_EPS_SPECS",
    "Denoisers",
    "Method",
    "baseline_method",
    "eps_method",
    "exact_method",
    "learned_denoisers",
    "oracle_denoisers",
    "prior_method",
]

Draw = Callable[[ExactProblem, torch.Generator], tuple[Tensor, int, int]]
PredictorFactory = Callable[[Interpolant, ExactProblem], X0Predictor]

#: EPS rows: (interpolant, sampler, NFE).
DEFAULT_EPS_SPECS: tuple[tuple[str, str, int], ...] = (
    ("ve", "dpmpp-2m", 10),
    ("ve", "dpmpp-2m", 20),
    ("ve", "heun", 35),
    ("vp-linear", "ddim", 100),
)


@dataclass(frozen=True)
class Denoisers:
    """A pair of x0-predictor factories: ``posterior`` (EPS; None if there is no EPS network) and
    ``prior`` (``A = 0``), evaluated in ``dtype``; ``label`` names them in the tables."""

    label: str
    prior: PredictorFactory
    posterior: PredictorFactory | None
    dtype: torch.dtype


def oracle_denoisers() -> Denoisers:
    """The problem's exact mixture denoisers (float64)."""

    def prior(interp: Interpolant, p: ExactProblem) -> X0Predictor:
        return PosteriorPredictor(p.prior.denoise, interp)

    def posterior(interp: Interpolant, p: ExactProblem) -> X0Predictor:
        return PosteriorPredictor(p.prior.denoise, interp, p.operator, p.y, p.sigma_y)

    return Denoisers("oracle", prior, posterior, torch.float64)


def learned_denoisers(prior_model: LoadedModel, eps_model: LoadedModel | None = None) -> Denoisers:
    """Trained networks: an unconditional denoiser for the baselines and an EPS network (float32)."""
    if prior_model.spec.measures:
        raise ValueError(
            f"{prior_model.source} is a {prior_model.objective} model; the prior needs an unconditional one"
        )
    if eps_model is not None and not eps_model.spec.measures:
        raise ValueError(f"{eps_model.source} is an unconditional model; EPS needs an eps model")

    def prior(interp: Interpolant, p: ExactProblem) -> X0Predictor:
        return PosteriorPredictor(prior_model.model, interp)

    def posterior(interp: Interpolant, p: ExactProblem) -> X0Predictor:
        assert eps_model is not None
        return eps_model.spec.predictor(eps_model.model, interp, p.operator, p.y, p.sigma_y)

    return Denoisers("learned", prior, posterior if eps_model is not None else None, torch.float32)


@dataclass
class Method:
    """A row: ``name``, what draws its samples, the settings it ran with, whether they were ``tuned``."""

    name: str
    draw: Draw
    settings: dict[str, Any] = field(default_factory=dict)
    tuned: bool = False


def exact_method() -> Method:
    """Fresh exact posterior samples: the Monte-Carlo floor row."""

    def draw(p: ExactProblem, g: torch.Generator) -> tuple[Tensor, int, int]:
        return p.posterior.sample(p.n_samples, g), 0, 0

    return Method("exact posterior", draw, {"method": "exact"})


def _shape(p: ExactProblem) -> tuple[int, ...]:
    return (p.n_samples, *p.prior.img_shape)


def prior_method(denoisers: Denoisers, nfe: int = 100) -> Method:
    """The prior sampler (DPM-Solver++(2M) on VE, ignores ``y``): how far the posterior is from the prior."""
    interp = get_interpolant("ve")

    @torch.no_grad()
    def draw(p: ExactProblem, g: torch.Generator) -> tuple[Tensor, int, int]:
        out = sample(denoisers.prior(interp, p), interp, _shape(p), "dpmpp-2m", nfe, generator=g, dtype=denoisers.dtype)
        return out.x, out.nfe, 0

    return Method("prior sampler (ignores y)", draw, {"method": "prior", "nfe": nfe})


def eps_method(denoisers: Denoisers, interp_name: str, sampler: str, nfe: int) -> Method:
    """EPS: the backbone's own sampler on the posterior x0-predictor."""
    if denoisers.posterior is None:
        raise ValueError("these denoisers have no EPS network")
    posterior, interp = denoisers.posterior, get_interpolant(interp_name)

    @torch.no_grad()
    def draw(p: ExactProblem, g: torch.Generator) -> tuple[Tensor, int, int]:
        out = sample(posterior(interp, p), interp, _shape(p), sampler, nfe, generator=g, dtype=denoisers.dtype)
        return out.x, out.nfe, 0

    settings = {"method": "eps", "interpolant": interp_name, "sampler": sampler, "nfe": nfe}
    return Method(f"EPS {sampler} ({interp_name}, {nfe})", draw, settings)


def baseline_method(
    denoisers: Denoisers,
    name: str,
    task: str,
    point: Mapping[str, Any] | None = None,
    budget: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> Method:
    """Baseline ``name`` on the prior predictor: published per-task settings (with ``budget``, e.g. a
    step count, on top), or ``point`` (a grid point of :mod:`exactps.exactbench.tuning`) on top of them
    (``tuned``)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {tuple(BASELINES)}")
    fn, interp = BASELINES[name], VPLinear()
    kwargs = {**published_settings(name, task), **(budget or {}), **flatten_point(point or {})}

    def draw(p: ExactProblem, g: torch.Generator) -> tuple[Tensor, int, int]:
        x_init = initial_noise(interp, _shape(p), g, denoisers.dtype)
        out = fn(denoisers.prior(interp, p), interp, p.operator, p.y, p.sigma_y, x_init, generator=g, **kwargs)
        return out.x.detach(), out.nfe, out.vjp

    tuned = point is not None
    return Method(label or f"{name} {'tuned' if tuned else 'published'}", draw, {"method": name, **kwargs}, tuned)
