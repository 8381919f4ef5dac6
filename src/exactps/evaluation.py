"""Evaluating trained denoisers on held-out images, with fixed draws so that models compare fairly.

Two measures, both against the ground truth ``x0``:

* :func:`denoiser_psnr`: PSNR of the network's estimate ``D(m; S_t) ~ E[x0 | x_t, y]`` at a fixed
  noise ratio ``rho`` (same ``x0``, ``e``, operator and ``n`` for every model). For large ``rho``,
  ``x_t`` carries almost nothing and ``D`` is the MMSE restoration ``E[x0 | y]`` in one evaluation;
  for small ``rho`` it measures denoising near the data. With ``A = 0`` it is plain denoising.
* :func:`heldout_loss`: the training objective (EDM-weighted, ``rho`` drawn as in training)
  averaged over fixed draws.

Sampling quality (PSNR of posterior samples and of their mean) is measured with
:func:`exactps.inference.posterior_samples`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.batch import as_batch, per_batch
from exactps.inference import posterior_samples
from exactps.loading import LoadedModel
from exactps.metrics import psnr
from exactps.models import get_objective
from exactps.operators.base import LinearOperator
from exactps.posterior import measurement_image
from exactps.seeds import EvalSeed
from exactps.tasks import get_task, make_task_operator

__all__ = [
    "DrawSpec",
    "FixedDraw",
    "ModelScores",
    "comparison_rows",
    "denoiser_estimate",
    "denoiser_psnr",
    "fixed_draw",
    "format_scores",
    "heldout_loss",
    "measurement_view_psnr",
    "model_samples",
    "plot_curves",
    "sample_psnr",
    "score_model",
    "task_operator",
]


@dataclass(frozen=True)
class DrawSpec:
    """The fixed draws of an evaluation: the task (``"none"``: ``A = 0``), ``s_y`` and a seed."""

    task: str
    sigma_y: float
    seed: int = 0


def task_operator(spec: DrawSpec, x0: Tensor) -> LinearOperator | None:
    """The operator of ``spec.task`` for the images ``x0`` (masks/kernels seeded by ``spec.seed``)."""
    g = torch.Generator().manual_seed(spec.seed + EvalSeed.OPERATOR)
    op = make_task_operator(spec.task, tuple(x0.shape[1:]), g, x0.dtype, batch=x0.shape[0])
    return op.to(x0.device) if op is not None else None


@dataclass
class FixedDraw:
    """``x_t/a = x0 + rho e``, the operator and ``y = A x0 + s_y n`` of one evaluation (``y`` None if ``A = 0``)."""

    x_scaled: Tensor
    rho: Tensor
    operator: LinearOperator | None
    y: Tensor | None
    sigma_y: Tensor


def fixed_draw(x0: Tensor, spec: DrawSpec, rho: float) -> FixedDraw:
    """The draws of ``spec`` at noise ratio ``rho``: the same ``e``, operator and ``n`` for every ``rho``."""
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    op = task_operator(spec, x0)
    g = torch.Generator(device=x0.device).manual_seed(spec.seed + EvalSeed.NOISE)
    r, sy = as_batch(rho, x0), as_batch(spec.sigma_y, x0)
    x_scaled = x0 + per_batch(r, x0.ndim) * torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
    y = None if op is None else op.measure(x0, sy, g)
    return FixedDraw(x_scaled, r, op, y, sy)


@torch.no_grad()
def denoiser_estimate(model: Callable[..., Tensor], objective: str, x0: Tensor, spec: DrawSpec, rho: float) -> Tensor:
    """``D(m; S_t)`` (an estimate of ``E[x0 | x_t, y]``) on the draws :func:`fixed_draw` ``(x0, spec, rho)``.

    ``objective``: a name of :data:`exactps.models.OBJECTIVES`, whose inputs ``model`` takes
    (``model(m, S_t)`` for ``eps``/``denoiser``, ``model(x_t/a, rho, cond, s_y)`` for ``conditional``).
    """
    d = fixed_draw(x0, spec, rho)
    return model(*get_objective(objective).inputs(d.x_scaled, d.rho, d.operator, d.y, d.sigma_y))


def denoiser_psnr(
    model: Callable[..., Tensor], objective: str, x0: Tensor, specs: Sequence[DrawSpec], rhos: Sequence[float]
) -> dict[tuple[str, float, float], float]:
    """Mean PSNR (dB, images in ``[-1, 1]``, estimates clamped to it) of :func:`denoiser_estimate`, keyed
    ``(task, s_y, rho)``."""
    out = {}
    for spec in specs:
        for rho in rhos:
            est = denoiser_estimate(model, objective, x0, spec, rho).to(x0.dtype).clamp(-1, 1)
            out[(spec.task, spec.sigma_y, float(rho))] = float(psnr(est, x0).mean())
    return out


def heldout_loss(
    model: Callable[..., Tensor], objective: str, x0: Tensor, spec: DrawSpec, draws: int = 4, sigma_data: float = 0.5
) -> float:
    """The EPS (or conditional) loss with EDM's defaults (``rho ~ logN(-1.2, 1.2^2)``, EDM weight),
    averaged over ``draws`` seeded draws (comparable across models whatever their training settings)."""
    loss_fn = get_objective(objective).loss
    total = 0.0
    with torch.no_grad():
        for i in range(draws):
            seed = spec.seed + EvalSeed.LOSS_STRIDE * i
            op = task_operator(DrawSpec(spec.task, spec.sigma_y, seed), x0)
            g = torch.Generator(device=x0.device).manual_seed(seed + EvalSeed.NOISE)
            total += float(loss_fn(model, x0, op, spec.sigma_y, g, sigma_data=sigma_data))
    return total / draws


@dataclass
class ModelScores:
    """The scores of one model on the held-out images (``None`` where a measure was not run)."""

    name: str
    images_seen: int | None
    denoiser: dict[tuple[str, float, float], float]
    loss: dict[tuple[str, float], float]
    samples: dict[tuple[str, float], tuple[float, float]] | None = None  # (sample PSNR, mean-of-K PSNR)

    def to_dict(self) -> dict:
        """JSON-ready record (lists of keyed entries)."""
        den = [{"task": t, "sigma_y": sy, "rho": r, "psnr": v} for (t, sy, r), v in self.denoiser.items()]
        loss = [{"task": t, "sigma_y": sy, "loss": v} for (t, sy), v in self.loss.items()]
        samples = None
        if self.samples is not None:
            items = self.samples.items()
            samples = [{"task": t, "sigma_y": sy, "psnr": a, "mean_psnr": b} for (t, sy), (a, b) in items]
        return {"model": self.name, "images_seen": self.images_seen, "denoiser_psnr": den, "heldout_loss": loss,
                "samples": samples}  # fmt: skip


def model_samples(loaded: LoadedModel, x0: Tensor, spec: DrawSpec, num_samples: int, sampler: str, nfe: int) -> Tensor:
    """``(num_samples, B, C, H, W)`` posterior samples for the measurements of ``spec`` of ``x0``, clamped to
    ``[-1, 1]`` as the images a user sees (and as ``exactps sample`` scores them)."""
    d = fixed_draw(x0, spec, 1.0)
    g = torch.Generator(device=x0.device).manual_seed(spec.seed + EvalSeed.SAMPLER)
    xs = posterior_samples(loaded, d.operator, d.y, spec.sigma_y, num_samples, sampler, nfe, generator=g)
    return xs.to(x0.dtype).clamp(-1, 1)


def sample_psnr(
    loaded: LoadedModel, x0: Tensor, spec: DrawSpec, num_samples: int, sampler: str, nfe: int
) -> tuple[float, float]:
    """Mean PSNR of posterior samples, and of the mean of ``num_samples`` samples, against ``x0``."""
    xs = model_samples(loaded, x0, spec, num_samples, sampler, nfe)
    per_sample = torch.stack([psnr(x, x0) for x in xs]).mean()
    return float(per_sample), float(psnr(xs.mean(0), x0).mean())


def measurement_view_psnr(x0: Tensor, spec: DrawSpec) -> float:
    """PSNR of the measurement's image-space view (the ridge estimate, ``A^+ y`` where well measured;
    :func:`exactps.posterior.measurement_image`): the no-model reference for a task."""
    d = fixed_draw(x0, spec, 1.0)
    if d.operator is None or d.y is None:
        return float(psnr(torch.zeros_like(x0), x0).mean())
    return float(psnr(measurement_image(d.operator, d.y, spec.sigma_y).clamp(-1, 1), x0).mean())


def comparison_rows(models: Sequence[LoadedModel], x0: Tensor, spec: DrawSpec, sampler: str, nfe: int) -> list[Tensor]:
    """Picture rows for ``x0``: the measurement's image-space view, one posterior sample per model (same
    measurements), and the ground truth."""
    d = fixed_draw(x0, spec, 1.0)
    view = x0 * 0 if d.operator is None or d.y is None else measurement_image(d.operator, d.y, spec.sigma_y)
    return [view, *(model_samples(m, x0, spec, 1, sampler, nfe)[0] for m in models), x0]


def score_model(
    name: str,
    loaded: LoadedModel,
    x0: Tensor,
    specs: Sequence[DrawSpec],
    rhos: Sequence[float],
    num_samples: int = 0,
    sampler: str = "heun",
    nfe: int = 35,
) -> ModelScores:
    """:func:`denoiser_psnr` at ``rhos``, :func:`heldout_loss` and (if ``num_samples``) :func:`sample_psnr`
    of a :class:`exactps.loading.LoadedModel` on every spec. An unconditional model (``"denoiser"``)
    is scored through the pivot, but not sampled with a measurement (it was not trained for one)."""
    model, objective = loaded.model, loaded.objective
    sd = loaded.model_config.sigma_data
    den = denoiser_psnr(model, objective, x0, specs, rhos)
    loss = {(s.task, s.sigma_y): heldout_loss(model, objective, x0, s, sigma_data=sd) for s in specs}
    samples = None
    if num_samples > 0 and (loaded.spec.measures or not any(get_task(s.task).measures for s in specs)):
        samples = {(s.task, s.sigma_y): sample_psnr(loaded, x0, s, num_samples, sampler, nfe) for s in specs}
    return ModelScores(name, loaded.images_seen, den, loss, samples)


def format_scores(
    scores: Sequence[ModelScores],
    specs: Sequence[DrawSpec],
    rhos: Sequence[float],
    reference: dict[tuple[str, float], float] | None = None,
) -> str:
    """Markdown tables: one per ``rho`` (denoiser PSNR), the held-out loss, and the sample PSNRs; first
    the no-model reference (:func:`measurement_view_psnr`, keyed ``(task, s_y)``) if given."""
    cols = [f"{s.task} s_y={s.sigma_y:g}" for s in specs]
    head = "| model | images seen | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols)

    def table(title: str, cell: Callable[[ModelScores, DrawSpec], str]) -> str:
        rows = [
            f"| {sc.name} | {sc.images_seen if sc.images_seen is not None else ''} | "
            + " | ".join(cell(sc, s) for s in specs)
            + " |"
            for sc in scores
        ]
        return f"{title}\n\n{head}\n" + "\n".join(rows)

    def den(rho: float) -> Callable[[ModelScores, DrawSpec], str]:
        return lambda sc, s: f"{sc.denoiser[(s.task, s.sigma_y, float(rho))]:.2f}"

    parts = [table(f"denoiser PSNR (dB) at rho = {rho:g}", den(rho)) for rho in rhos]
    if reference is not None:
        parts.insert(0, "no-model reference, PSNR (dB) of the measurement view (ridge A+ y): " + ", ".join(
            f"{s.task} s_y={s.sigma_y:g}: {reference[(s.task, s.sigma_y)]:.2f}" for s in specs))  # fmt: skip
    parts.append(table("held-out training loss (lower is better)", lambda sc, s: f"{sc.loss[(s.task, s.sigma_y)]:.4f}"))
    if any(sc.samples is not None for sc in scores):

        def cell(sc: ModelScores, s: DrawSpec) -> str:
            if sc.samples is None:
                return "n/a"
            one, mean = sc.samples[(s.task, s.sigma_y)]
            return f"{one:.2f} / {mean:.2f}"

        parts.append(table("posterior samples: PSNR of one sample / of the mean of the samples (dB)", cell))
    return "\n\n".join(parts)


def plot_curves(scores: Sequence[ModelScores], specs: Sequence[DrawSpec], rhos: Sequence[float], path) -> None:
    """Denoiser PSNR vs images seen, one panel per (spec, rho), one line per run (the name before ``/``)."""
    import matplotlib  # lazy: 0.4 s to import, and the backend must be chosen before pyplot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(sc.name.split("/")[0] for sc in scores))
    panels = [(s, float(r)) for s in specs for r in rhos]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (spec, rho) in zip(axes[0], panels, strict=True):
        for run in runs:
            pts = sorted(
                (sc.images_seen, sc.denoiser[(spec.task, spec.sigma_y, rho)])
                for sc in scores
                if sc.name.split("/")[0] == run and sc.images_seen is not None
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=run)
        ax.set_xlabel("training images seen", fontsize=8)
        ax.set_ylabel("PSNR of D(m; S_t) vs x0 (dB)", fontsize=8)
        ax.set_title(f"{spec.task}, s_y = {spec.sigma_y:g}, rho = {rho:g}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
