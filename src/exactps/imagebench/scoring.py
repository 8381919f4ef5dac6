"""Scores of posterior samples against the ground truth, per image, and their aggregates.

:data:`METRICS` is the table of every metric the image benchmark reports (BENCHMARK.md section 3;
``J`` samples per image, images in ``[-1, 1]``):

================  ==================================================================================
``psnr``          PSNR of each sample on [0, 1] (dB), averaged over the samples
``psnr_mean``     PSNR of the mean of the ``J`` samples (the MMSE estimate's quality)
``ssim``          SSIM of each sample (Gaussian window, scikit-image's definition), averaged
``lpips``         LPIPS (AlexNet, v0.1) of each sample, averaged; computed at the images' size
``crps_pix``      fair-ensemble CRPS per pixel on the 0-255 scale, averaged over pixels
``crps_inc``      the same on the 2048 Inception pool features of each sample (per dimension)
``mmd_pix``       kernel score ``MMD^2`` of the samples against the truth (RBF, median heuristic), pixels
``mmd_inc``       the same on Inception features
``coverage``      fraction of pixels whose truth lies in the samples' central 90% interval
``fid``, ``kid``  set-level: the first sample of every image against the test images (Inception)
================  ==================================================================================

Per-image values are averaged over the images with their standard error (``std / sqrt(N)``); FID and
KID are one number per method (KID with its standard deviation over subsets).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from exactps.metrics import LPIPS, InceptionFeatures, coverage, crps, fid, kid, mmd2_score, psnr, ssim

__all__ = ["METRICS", "SET_METRICS", "Aggregate", "Scorer", "aggregate", "check_metrics"]


@dataclass(frozen=True)
class Metric:
    """A per-image metric: ``fn(scorer, samples (J, N, C, H, W), truth (N, C, H, W)) -> (N,)``;
    ``higher`` says which way is better; ``needs`` the network it uses (``lpips``, ``inception``);
    ``label`` and ``digits`` how tables show it."""

    fn: Callable[[Scorer, Tensor, Tensor], Tensor]
    higher: bool
    label: str
    digits: int = 3
    needs: str | None = None


def _unit(x: Tensor) -> Tensor:
    return (x.clamp(-1, 1) + 1) / 2


def _per_sample(metric: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Scorer, Tensor, Tensor], Tensor]:
    return lambda scorer, xs, x0: torch.stack([metric(x, x0) for x in xs]).mean(0)


def _psnr(x: Tensor, x0: Tensor) -> Tensor:
    return psnr(_unit(x), _unit(x0), data_range=1.0)


def _lpips(s: Scorer, xs: Tensor, x0: Tensor) -> Tensor:
    return _per_sample(s.lpips_fn)(s, xs, x0)


def _crps_inc(s: Scorer, xs: Tensor, x0: Tensor) -> Tensor:
    return crps(s.features_of(xs), s.features_of(x0[None])[0])


def _mmd_inc(s: Scorer, xs: Tensor, x0: Tensor) -> Tensor:
    return mmd2_score(s.features_of(xs), s.features_of(x0[None])[0])


METRICS: dict[str, Metric] = {
    "psnr": Metric(_per_sample(_psnr), True, "PSNR", 2),
    "psnr_mean": Metric(lambda s, xs, x0: _psnr(xs.mean(0), x0), True, "PSNR(mean)", 2),
    "ssim": Metric(_per_sample(ssim), True, "SSIM"),
    "lpips": Metric(_lpips, False, "LPIPS", needs="lpips"),
    "crps_pix": Metric(lambda s, xs, x0: crps(255 * _unit(xs), 255 * _unit(x0)), False, "CRPS pix", 2),
    "crps_inc": Metric(_crps_inc, False, "CRPS Inc", needs="inception"),
    "mmd_pix": Metric(lambda s, xs, x0: mmd2_score(_unit(xs).flatten(2), _unit(x0).flatten(1)), False, "MMD pix", 4),
    "mmd_inc": Metric(_mmd_inc, False, "MMD Inc", 4, needs="inception"),
    "coverage": Metric(lambda s, xs, x0: coverage(_unit(xs), _unit(x0), level=0.9), True, "cover90"),
}
#: Set-level metrics (Inception features of the first sample of every image vs the test images):
#: name -> (label, digits); lower is better.
SET_METRICS: dict[str, tuple[str, int]] = {"fid": ("FID", 2), "kid": ("KID", 4)}


def check_metrics(names: Sequence[str]) -> None:
    """``ValueError`` naming an unknown metric."""
    unknown = [n for n in names if n not in METRICS and n not in SET_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {(*METRICS, *SET_METRICS)}")


class Scorer:
    """Scores samples with the metrics ``names``; builds LPIPS and the Inception network once, up front
    (so a missing weight file or package fails before any sampling)."""

    def __init__(self, names: Sequence[str], lpips_weights: str | Path | None = None,
                 device: torch.device | str = "cpu", batch_size: int = 64):  # fmt: skip
        check_metrics(names)
        self.names = list(names)
        needs = {METRICS[n].needs for n in names if n in METRICS}
        if set(names) & set(SET_METRICS):
            needs.add("inception")
        self.lpips_net = LPIPS(lpips_weights).to(device) if "lpips" in needs else None
        self.inception = InceptionFeatures(device=device, batch_size=batch_size) if "inception" in needs else None

    def lpips_fn(self, x: Tensor, x0: Tensor) -> Tensor:
        assert self.lpips_net is not None
        with torch.no_grad():
            return self.lpips_net(x.clamp(-1, 1), x0)

    def features_of(self, xs: Tensor) -> Tensor:
        """Inception features ``(J, N, 2048)`` of ``(J, N, C, H, W)`` images."""
        assert self.inception is not None
        j, n = xs.shape[:2]
        return self.inception(xs.reshape(j * n, *xs.shape[2:]).clamp(-1, 1)).reshape(j, n, -1)

    def per_image(self, samples: Tensor, truth: Tensor) -> dict[str, Tensor]:
        """Every per-image metric, ``(N,)`` each, on the CPU in float64."""
        return {n: METRICS[n].fn(self, samples, truth).double().cpu() for n in self.names if n in METRICS}

    def set_level(self, firsts: Tensor, truth_features: Tensor | None) -> dict[str, tuple[float, float]]:
        """FID and KID of one sample per image ``(N, C, H, W)`` against the truths' features."""
        out: dict[str, tuple[float, float]] = {}
        if not set(self.names) & set(SET_METRICS):
            return out
        assert truth_features is not None
        feats = self.features_of(firsts[None])[0]
        if "fid" in self.names:
            out["fid"] = (float(fid(feats, truth_features)), math.nan)
        if "kid" in self.names:
            mean, std = kid(feats, truth_features)
            out["kid"] = (float(mean), float(std))
        return out


@dataclass
class Aggregate:
    """Mean over images and its standard error."""

    mean: float
    se: float
    n: int


def aggregate(values: Tensor) -> Aggregate:
    n = values.numel()
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return Aggregate(float(values.mean()), se, n)
