"""Preview grids of a training run: what the EMA model does on fixed images, as picture rows.

With a measurement (a task with an operator, and an objective trained with measurements): the
measurement's image-space view, a posterior sample and the ground truth. Without (``A = 0``): the
noisy image at ``rho = 0.5``, its denoised estimate, an unconditional sample and the ground truth.
All draws come from ``derive_seed(seed, TrainSeed.PREVIEW)``, so grids of one run stay comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from exactps.interpolants import get_interpolant
from exactps.models import Objective
from exactps.posterior import measurement_image
from exactps.samplers import sample
from exactps.seeds import TrainSeed, derive_seed
from exactps.tasks import Task

__all__ = ["preview_rows"]


@torch.no_grad()
def preview_rows(
    objective: Objective,
    call: Callable[..., Tensor],
    x0: Tensor,
    task: Task,
    sigma_y: float,
    seed: int,
    nfe: int,
) -> list[Tensor]:
    """Grid rows for the images ``x0`` from the network ``call`` (Heun, ``nfe`` evaluations, VE)."""
    g = torch.Generator(device=x0.device).manual_seed(derive_seed(seed, TrainSeed.PREVIEW))
    interp = get_interpolant("ve")
    shape = tuple(x0.shape)
    if not (objective.measures and task.measures):
        noisy = x0 + 0.5 * torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
        rho = torch.full((x0.shape[0],), 0.5, device=x0.device, dtype=x0.dtype)
        den = call(*objective.inputs(noisy, rho, None, None, torch.full_like(rho, math.inf)))
        out = sample(objective.predictor(call, interp, None, None, 0.0), interp, shape, "heun", nfe,
                     generator=g, device=x0.device)  # fmt: skip
        return [noisy, den.to(x0.dtype), out.x, x0]
    g_cpu = torch.Generator().manual_seed(derive_seed(seed, TrainSeed.PREVIEW))
    op = task.build(shape[1:], g_cpu, x0.dtype, x0.shape[0]).to(x0.device)  # type: ignore[misc,union-attr]
    y = op.measure(x0, sigma_y, g)
    predict = objective.predictor(call, interp, op, y, sigma_y)
    out = sample(predict, interp, shape, "heun", nfe, generator=g, device=x0.device)
    return [measurement_image(op, y, sigma_y), out.x, x0]
