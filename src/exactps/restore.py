"""Restoring one image with its uncertainty: posterior samples, their mean and per-pixel spread.

:func:`restore` draws ``J`` samples of ``p(x0 | y)`` for one measurement ``y = A x0 + s_y n`` at the
image's own size (the networks pad what their U-Net cannot halve), and returns them with

- the posterior mean estimate ``x_bar = (1/J) sum_j x_j`` (the MMSE estimate as ``J`` grows),
- the per-pixel standard deviation ``s_p`` of the samples (``J - 1`` in the denominator), the
  uncertainty map no training-free baseline gives,
- the measurement's image-space view (:func:`~exactps.posterior.measurement_image`).

With a ground truth :func:`scores` adds the PSNRs and the coverage of the per-pixel 90% prediction
interval ``x_bar ± t_{J-1} s_p sqrt(1 + 1/J)`` (:func:`~exactps.metrics.prediction_coverage`): about
0.9 for a calibrated sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from exactps.inference import posterior_samples
from exactps.loading import LoadedModel
from exactps.metrics import prediction_coverage, psnr
from exactps.operators import LinearOperator
from exactps.posterior import measurement_image

__all__ = ["COVERAGE_LEVEL", "RestoredImage", "restore", "scores"]

#: The level of the per-pixel prediction interval whose coverage :func:`scores` reports.
COVERAGE_LEVEL = 0.9


@dataclass
class RestoredImage:
    """``J`` posterior samples ``(J, C, H, W)`` of one image (clamped to ``[-1, 1]``), their mean and
    per-pixel std ``(C, H, W)``, the measurement ``y`` and its image-space view, the ground truth if known,
    the sampler's NFE per sample and the seconds taken."""

    samples: Tensor
    view: Tensor
    y: Tensor
    operator: LinearOperator
    nfe: int
    seconds: float
    truth: Tensor | None = None

    @property
    def mean(self) -> Tensor:
        return self.samples.mean(0)

    @property
    def std(self) -> Tensor:
        """Per-pixel, per-channel standard deviation of the samples (``J - 1`` denominator)."""
        return self.samples.std(0)

    @property
    def std_map(self) -> Tensor:
        """``(H, W)``: the std averaged over channels (what the uncertainty picture shows)."""
        return self.std.mean(0)


def restore(
    loaded: LoadedModel,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float,
    num_samples: int = 8,
    *,
    truth: Tensor | None = None,
    sampler: str = "heun",
    nfe: int = 35,
    interpolant: str = "ve",
    generator: torch.Generator | int | None = None,
    batch_size: int | None = None,
) -> RestoredImage:
    """``num_samples`` (``J >= 2``) posterior samples for one measurement ``y`` ``(1, *operator.meas_shape)``
    of an image of ``operator.img_shape`` (any size), with the measurement's view; ``truth`` ``(1, C, H, W)``
    is kept for :func:`scores`. Sampling options as :func:`~exactps.inference.posterior_samples`."""
    if num_samples < 2:
        raise ValueError(f"an uncertainty map needs at least 2 samples, got {num_samples}")
    if y.shape[0] != 1:
        raise ValueError(f"restore() takes one measurement (batch 1), got a batch of {y.shape[0]}")
    if truth is not None and tuple(truth.shape[1:]) != tuple(operator.img_shape):
        raise ValueError(f"the ground truth is {tuple(truth.shape[1:])} but the operator acts on {operator.img_shape}")
    start = time.perf_counter()
    xs = posterior_samples(loaded, operator, y, sigma_y, num_samples, sampler, nfe, interpolant, generator, batch_size)
    seconds = time.perf_counter() - start
    view = measurement_image(operator.to(loaded.device), y.to(loaded.device), sigma_y)
    return RestoredImage(
        samples=xs[:, 0].cpu().clamp(-1, 1),
        view=view[0].cpu().clamp(-1, 1),
        y=y.cpu(),
        operator=operator,
        nfe=nfe,
        seconds=seconds,
        truth=None if truth is None else truth[0].cpu(),
    )


def scores(r: RestoredImage) -> dict[str, Any]:
    """The report of one restoration: the mean per-pixel std (in ``[0, 1]`` pixel units: ``std / 2``)
    and, with a ground truth, the PSNR (dB) of the measurement's view, of the mean and of each sample,
    and the coverage of the per-pixel ``COVERAGE_LEVEL`` prediction interval."""
    out: dict[str, Any] = {"mean_std": float(r.std.mean()) / 2}
    if r.truth is None:
        return out
    x0 = r.truth[None]
    out["psnr_measurement"] = float(psnr(r.view[None], x0))
    out["psnr_mean"] = float(psnr(r.mean[None], x0))
    out["psnr_samples"] = [float(v) for v in psnr(r.samples, x0.expand_as(r.samples))]
    out["coverage90"] = float(prediction_coverage(r.samples[:, None], x0, COVERAGE_LEVEL)[0])
    return out
