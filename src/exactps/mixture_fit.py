"""Fitting a :class:`~exactps.priors.GaussianMixture` to data by expectation-maximisation.

A mixture fitted to real image patches (e.g. 8x8 colour crops of photographs) is a prior with
image-like structure *and* an exact posterior: the reference the learned-network exactness study
measures against (:mod:`exactps.exactbench`).

EM for ``p(x) = sum_k pi_k N(x; mu_k, C_k)`` on points ``x_1..x_n`` (float64):

* E-step: responsibilities ``r_ik = pi_k N(x_i; mu_k, C_k) / sum_j pi_j N(x_i; mu_j, C_j)``, computed
  from log-densities through the Cholesky factor of ``C_k``;
* M-step: ``n_k = sum_i r_ik``, ``pi_k = n_k / n``, ``mu_k = sum_i r_ik x_i / n_k``,
  ``C_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / n_k + reg I``.

The ridge ``reg`` keeps every covariance positive definite (8-bit patches are nearly singular);
without it, EM's log-likelihood never decreases (``reg`` can lower it by a little).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from exactps.files import atomic_write
from exactps.priors import GaussianMixture

__all__ = ["MixtureFit", "fit_gaussian_mixture", "load_mixture", "mixture_log_likelihood", "save_mixture"]


@dataclass
class MixtureFit:
    """The fitted mixture and the mean log-likelihood per point after every iteration."""

    mixture: GaussianMixture
    log_likelihood: list[float]


def _component_log_densities(x: Tensor, means: Tensor, covs: Tensor) -> Tensor:
    """``log N(x_i; mu_k, C_k)`` as an ``(n, K)`` matrix."""
    n, d = x.shape
    chol = torch.linalg.cholesky(covs)  # (K, d, d)
    out = torch.empty(n, means.shape[0], dtype=x.dtype)
    for k in range(means.shape[0]):
        z = torch.linalg.solve_triangular(chol[k], (x - means[k]).T, upper=False)  # (d, n)
        log_det = 2.0 * chol[k].diagonal().log().sum()
        out[:, k] = -0.5 * (z.square().sum(0) + log_det + d * math.log(2 * math.pi))
    return out


def mixture_log_likelihood(mixture: GaussianMixture, x: Tensor) -> float:
    """Mean ``log p(x_i)`` of points ``x`` (``(n, *img_shape)`` or ``(n, d)``) under ``mixture``."""
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    logp = _component_log_densities(x, mixture.means, mixture.covs) + mixture.weights.log()
    return float(torch.logsumexp(logp, 1).mean())


def _check_fit_args(x: Tensor, n_components: int, iters: int, reg: float) -> None:
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"need points of shape (n, ...) with n >= 2, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("the points contain NaN or infinite values")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or not 1 <= n_components <= x.shape[0]:
        raise ValueError(f"n_components must be an integer in [1, n = {x.shape[0]}], got {n_components!r}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not (math.isfinite(reg) and reg > 0):
        raise ValueError(f"reg must be finite and > 0 (it keeps the covariances invertible), got {reg}")


def fit_gaussian_mixture(
    x: Tensor,
    n_components: int,
    iters: int = 50,
    reg: float = 1e-4,
    tol: float = 1e-5,
    generator: torch.Generator | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> MixtureFit:
    """EM fit of ``n_components`` full-covariance Gaussians to ``x`` (``(n, *img_shape)``).

    Initialisation: means at ``n_components`` distinct points drawn from ``generator``, every
    covariance the data covariance, equal weights. Stops after ``iters`` iterations or when the mean
    log-likelihood gains less than ``tol`` per point. ``progress(iteration, log_likelihood)`` is called
    after each iteration.
    """
    _check_fit_args(x, n_components, iters, reg)
    img_shape = tuple(x.shape[1:])
    pts = x.reshape(x.shape[0], -1).to(torch.float64)
    n, d = pts.shape
    eye = torch.eye(d, dtype=torch.float64)
    means = pts[torch.randperm(n, generator=generator)[:n_components]].clone()
    centred = pts - pts.mean(0)
    covs = (centred.T @ centred / n + reg * eye).expand(n_components, d, d).clone()
    log_weights = torch.full((n_components,), -math.log(n_components), dtype=torch.float64)
    history: list[float] = []
    for it in range(iters):
        logp = _component_log_densities(pts, means, covs) + log_weights
        norm = torch.logsumexp(logp, 1, keepdim=True)
        history.append(float(norm.mean()))
        if progress is not None:
            progress(it, history[-1])
        resp = (logp - norm).exp()  # (n, K)
        nk = resp.sum(0).clamp_min(1e-10)
        means = (resp.T @ pts) / nk[:, None]
        for k in range(n_components):
            c = pts - means[k]
            covs[k] = (c * resp[:, k : k + 1]).T @ c / nk[k] + reg * eye
        log_weights = (nk / n).log()
        if it > 0 and history[-1] - history[-2] < tol:
            break
    weights = log_weights.exp()
    mixture = GaussianMixture(weights / weights.sum(), means, 0.5 * (covs + covs.transpose(1, 2)), img_shape)
    history.append(mixture_log_likelihood(mixture, pts))
    return MixtureFit(mixture, history)


def save_mixture(mixture: GaussianMixture, path: str | Path) -> None:
    """Write ``mixture`` as safetensors (``weights``, ``means``, ``covs`` in float64, image shape in the
    metadata), atomically."""
    from safetensors.torch import save

    tensors = {"weights": mixture.weights, "means": mixture.means, "covs": mixture.covs}
    meta = {"format": "exactps-gaussian-mixture", "img_shape": json.dumps(list(mixture.img_shape))}
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def load_mixture(path: str | Path) -> GaussianMixture:
    """Read a mixture written by :func:`save_mixture`; a missing or foreign file raises a named error."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Gaussian-mixture file at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "exactps-gaussian-mixture":
                raise ValueError(f"{path} is not a Gaussian-mixture file written by exactps (no format tag)")
            tensors = {k: f.get_tensor(k) for k in ("weights", "means", "covs")}
    except SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    return GaussianMixture(**tensors, img_shape=tuple(json.loads(meta["img_shape"])))
