"""Exact posterior score: the pivot and the posterior predictions (METHOD.md, "The identity").

Given ``x_t = a x0 + s e`` and ``y = A x0 + s_y n``, the pair is a Gaussian observation of
``x0`` with sufficient statistic

    m = S_t ( (a/s^2) x_t + A^T y / s_y^2 ),    S_t = ( (a^2/s^2) I + A^T A / s_y^2 )^{-1},

so ``E[x0 | x_t, y] = D*(m; S_t)`` (the MMSE denoiser for ``m = x0 + N(0, S_t)``) and
``grad log p(x_t | y) = (a D*(m; S_t) - x_t) / s^2``.

A *denoiser* here is any callable ``D(m, noise) -> x0`` where ``noise`` is the
:class:`~exactps.covariance.PivotNoise` ``S_t``; an *x0-predictor* is ``(x_t, t) -> x0``, what
the samplers consume. :class:`PosteriorPredictor` turns the first into the second;
:class:`ZeroShotPredictor` does the same with an unconditional denoiser at the closest isotropic
noise level (exact only where ``A^T A = gamma^2 I``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.batch import as_batch, check_sigma_y, per_batch
from exactps.classes import with_class_labels
from exactps.covariance import IsotropicNoise, PivotNoise
from exactps.interpolants import Interpolant, as_time, eps_from_x0, score_from_x0
from exactps.operators.base import LinearOperator

__all__ = [
    "Denoiser",
    "PosteriorPredictor",
    "ZeroShotPredictor",
    "isotropic_level",
    "measurement_image",
    "pivot",
    "posterior_eps",
    "posterior_score",
    "posterior_x0",
]

Denoiser = Callable[[Tensor, PivotNoise], Tensor]


def _check_x(x_t: Tensor) -> None:
    if not isinstance(x_t, Tensor):
        raise TypeError(f"x_t must be a torch.Tensor, got {type(x_t).__name__}")
    if not x_t.is_floating_point():
        raise TypeError(f"x_t must be a floating-point tensor, got {x_t.dtype}")
    if not torch.isfinite(x_t).all():
        raise ValueError("x_t contains NaN or infinite values")


def pivot(
    interp: Interpolant,
    x_t: Tensor,
    t: float | Tensor,
    operator: LinearOperator | None = None,
    y: Tensor | None = None,
    sigma_y: float | Tensor = 0.0,
) -> tuple[Tensor, PivotNoise]:
    """The pivot ``m`` and its noise covariance ``S_t`` (``m | x0 ~ N(x0, S_t)``).

    With no ``operator`` (``A = 0``) this is the unconditional denoiser's input
    ``m = x_t / a`` with ``S_t = (s/a)^2 I``.
    """
    _check_x(x_t)
    tt = interp.check_t(t, x_t).reshape(-1)
    if tt.numel() not in (1, x_t.shape[0]):
        raise ValueError(f"t must be a scalar or have shape ({x_t.shape[0]},), got {tuple(tt.shape)}")
    a, s = interp.alpha(tt), interp.sigma(tt)
    rho = s / a
    x_scaled = x_t / per_batch(a, x_t.ndim)
    if operator is None:
        if y is not None:
            raise ValueError("y was given without an operator")
        return x_scaled, IsotropicNoise(rho)
    if y is None:
        raise ValueError("an operator was given without the measurement y")
    operator.check_image(x_t, "x_t")
    operator.check_measurement(y, "y")
    if y.shape[0] != x_t.shape[0]:
        if y.shape[0] != 1:
            raise ValueError(f"y has batch size {y.shape[0]} but x_t has {x_t.shape[0]} (use 1 to share y)")
        y = y.expand(x_t.shape[0], *y.shape[1:])
    sy = check_sigma_y(sigma_y, x_t)
    return operator.pivot(x_scaled, rho, y, sy)


def measurement_image(operator: LinearOperator, y: Tensor, sigma_y: float | Tensor) -> Tensor:
    """An image-space view of ``y``: the pivot at ``x_t/a = 0``, ``rho = 1``, i.e. the ridge estimate
    ``(I + A^T A / s_y^2)^{-1} A^T y / s_y^2``: ``A^+ y`` on well-measured directions, 0 elsewhere."""
    like = torch.zeros(y.shape[0], *operator.img_shape, dtype=y.dtype, device=y.device)
    m, _ = operator.pivot(like, torch.ones(1, dtype=y.dtype, device=y.device), y, as_batch(sigma_y, like))
    return m


@dataclass
class PosteriorPredictor:
    """``(x_t, t) -> E[x0 | x_t, y] = D(m(x_t, y, t); S_t)``: EPS for any sampler.

    With ``operator=None`` it is the prior's x0-predictor ``D(x_t/a; (s/a)^2 I)``, so the same
    samplers draw from the prior and from the posterior. ``class_labels``: the class of each image (indices
    ``(B,)`` or label vectors ``(B, K)``, or one for all) for a class-conditional denoiser, passed as
    ``denoiser(m, noise, class_labels=)`` (:func:`exactps.classes.with_class_labels`).
    """

    denoiser: Denoiser
    interp: Interpolant
    operator: LinearOperator | None = None
    y: Tensor | None = None
    sigma_y: float | Tensor = 0.0
    class_labels: Tensor | None = None

    def denoise(self, m: Tensor, noise: PivotNoise) -> Tensor:
        """The denoiser at ``(m, noise)``, with the class labels when there are any."""
        return with_class_labels(self.denoiser, self.class_labels)(m, noise)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        m, noise = pivot(self.interp, x_t, t, self.operator, self.y, self.sigma_y)
        return self.denoise(m, noise)


def isotropic_level(noise: PivotNoise, like: Tensor) -> Tensor:
    """``l = tr(S_t) / d`` per batch element (shape ``(B,)``): the variance of the isotropic covariance
    closest to ``S_t`` in Frobenius norm (``argmin_l ||S_t - l I||_F``); ``S_t`` itself when it is isotropic.

    Needs the per-pixel diagonal of ``S_t`` (:meth:`~exactps.covariance.PivotNoise.diagonal`: closed-form
    operators); ``ValueError`` otherwise."""
    try:
        diag = noise.diagonal(lambda v: v, like)
    except NotImplementedError as err:
        raise ValueError(f"the zero-shot pivot needs the diagonal of S_t: {err}") from err
    return diag.flatten(1).mean(1)


@dataclass
class ZeroShotPredictor(PosteriorPredictor):
    """``(x_t, t) -> D(m; l I)``, ``l = tr(S_t)/d``: a pretrained, *unconditional* denoiser at the pivot.

    The zero-shot pivot (the paper's Table 3): no fine-tuning, the denoiser ``D(x; sigma^2 I)`` is
    evaluated at the pivot ``m(x_t, y, t)`` with the isotropic noise level closest to ``S_t``
    (:func:`isotropic_level`), i.e. at the equivalent time ``t' = interp.t_from_ratio(sqrt(l))`` of a
    time-conditioned network. Exact where ``S_t`` is isotropic, that is where ``A^T A = gamma^2 I``
    (denoising, square or tight-frame orthogonal measurements ``A = gamma Q``):

        S_t = (a^2/s^2 + gamma^2/s_y^2)^{-1} I,   so   D(m; S_t) = E[x0 | x_t, y].

    Elsewhere (inpainting, super-resolution, deblurring, compressed sensing with fewer rows than pixels)
    it is an approximation: the denoiser sees measured and unmeasured directions at one noise level.
    """

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        m, noise = pivot(self.interp, x_t, t, self.operator, self.y, self.sigma_y)
        return self.denoise(m, IsotropicNoise(isotropic_level(noise, m).sqrt()))


def posterior_x0(
    denoiser: Denoiser,
    interp: Interpolant,
    x_t: Tensor,
    t: float | Tensor,
    operator: LinearOperator | None = None,
    y: Tensor | None = None,
    sigma_y: float | Tensor = 0.0,
) -> Tensor:
    """``E[x0 | x_t, y] = D(m; S_t)``."""
    return PosteriorPredictor(denoiser, interp, operator, y, sigma_y)(x_t, as_time(t, x_t))


def posterior_eps(
    denoiser: Denoiser,
    interp: Interpolant,
    x_t: Tensor,
    t: float | Tensor,
    operator: LinearOperator | None = None,
    y: Tensor | None = None,
    sigma_y: float | Tensor = 0.0,
) -> Tensor:
    """``E[e | x_t, y] = (x_t - a E[x0 | x_t, y]) / s``."""
    x0 = posterior_x0(denoiser, interp, x_t, t, operator, y, sigma_y)
    return eps_from_x0(interp, x_t, x0, t)


def posterior_score(
    denoiser: Denoiser,
    interp: Interpolant,
    x_t: Tensor,
    t: float | Tensor,
    operator: LinearOperator | None = None,
    y: Tensor | None = None,
    sigma_y: float | Tensor = 0.0,
) -> Tensor:
    """``grad_{x_t} log p(x_t | y) = (a D(m; S_t) - x_t) / s^2`` (exact for the MMSE denoiser)."""
    x0 = posterior_x0(denoiser, interp, x_t, t, operator, y, sigma_y)
    return score_from_x0(interp, x_t, x0, t)
