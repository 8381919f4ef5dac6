"""The training-based baseline EPS must beat: a conditional denoiser fed ``x_t/a`` and the observation.

The network ``D(x_t/a, rho, cond, s_y) -> x0`` sees the noisy image and the observation as Palette is
given it (:func:`conditioning_image`: the masked image, the upsampled low-resolution image, the blurred
image) by channel concatenation, with EDM's *scalar*
preconditioning in ``rho``; it uses the same backbone, loss weight and draws as the EPS denoiser
(:func:`conditional_loss` vs :func:`exactps.objectives.eps_loss`), so only the way the measurement
enters differs. :class:`ConditionalPredictor` turns it into an ``(x_t, t) -> x0`` predictor for the
samplers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from exactps.batch import as_batch, per_batch
from exactps.covariance import IsotropicNoise
from exactps.interpolants import Interpolant
from exactps.networks import EPSDenoiser
from exactps.objectives import regression_loss
from exactps.operators.base import LinearOperator

__all__ = [
    "ConditionalDenoiser",
    "ConditionalPredictor",
    "ConditionalUNet",
    "conditional_inputs",
    "conditional_loss",
    "conditional_network_inputs",
    "conditioning_image",
]


def conditional_loss(
    model: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
    x0: Tensor,
    operator: LinearOperator | None,
    sigma_y: float | Tensor,
    generator: torch.Generator | None = None,
    **kw: float,
) -> Tensor:
    """The baseline's loss: the draws of :func:`exactps.objectives.eps_loss` (same generator calls), but
    the network sees ``model(x_t/a, rho, cond(A, y), s_y)`` (zeros and ``s_y = inf`` without operator).
    ``kw``: ``p_mean``, ``p_std``, ``sigma_data`` of :func:`~exactps.objectives.regression_loss`."""
    return regression_loss(model, conditional_network_inputs, x0, operator, sigma_y, generator, **kw)


def conditional_network_inputs(
    x_scaled: Tensor, rho: Tensor, operator: LinearOperator | None, y: Tensor | None, sigma_y: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The baseline network's arguments ``(x_t/a, rho, cond, s_y)`` for one draw (see :func:`conditional_inputs`)."""
    return (x_scaled, rho, *conditional_inputs(operator, y, sigma_y, x_scaled))


def conditional_inputs(
    operator: LinearOperator | None, y: Tensor | None, sigma_y: float | Tensor, like: Tensor
) -> tuple[Tensor, Tensor]:
    """The baseline's measurement inputs ``(cond, s_y)`` per sample: :func:`conditioning_image` and
    ``s_y``, or zeros and ``s_y = inf`` (no measurement) without an operator."""
    sy = math.inf if operator is None else sigma_y
    return conditioning_image(operator, y, like=like), as_batch(sy, like)


def conditioning_image(operator: LinearOperator | None, y: Tensor | None, like: Tensor | None = None) -> Tensor:
    """The conditional network's extra input, the observation as Palette is given it:
    :meth:`~exactps.operators.base.LinearOperator.observation_image` (the masked image for inpainting,
    the upsampled ``A^+ y`` for super-resolution, the blurred ``y`` for deblurring, ``A^T y / k_max^2``
    for other spectral operators). Zeros (shaped like ``like``) when there is no operator."""
    if operator is None or y is None:
        if like is None:
            raise ValueError("conditioning_image needs `like` when there is no operator")
        return torch.zeros_like(like)
    return operator.observation_image(y)


class _Levels(IsotropicNoise):
    """``rho^2 I`` that also carries a measurement noise level (for the backbone's ``s_y`` embedding)."""

    def __init__(self, rho: Tensor, sigma_y: Tensor):
        super().__init__(rho)
        self.sigma_y = sigma_y.reshape(-1)


class ConditionalUNet(nn.Module):
    """The DDPM++ backbone of :class:`~exactps.networks.EPSDenoiser` with ``2C`` input channels.

    ``forward(x, rho, sigma_y) -> F`` with ``x = [c_in x_t/a, cond]`` (``2C`` channels): the first
    convolution is the unconditional one plus a zero-initialised convolution of the ``C``
    conditioning channels, and ``s_y`` enters through the zero-initialised label embedding, so an
    unconditional checkpoint loads (:meth:`load_backbone`) and the network starts as the
    unconditional one.
    """

    def __init__(self, preset: str = "small-64", channels: int = 3, sigma_data: float = 0.5, **overrides):
        super().__init__()
        self.channels = channels
        # "map" conditioning = C extra, zero-initialised input channels + s_y label embedding
        self.eps = EPSDenoiser(preset, channels, "map", sigma_data, **overrides)

    def forward(self, x: Tensor, rho: Tensor, sigma_y: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 2 * self.channels:
            raise ValueError(f"expected (B, {2 * self.channels}, H, W) inputs, got {tuple(x.shape)}")
        eps = self.eps
        levels = _Levels(rho, sigma_y)
        dtype = eps.net.map_layer0.weight.dtype
        labels = eps.sigma_y_features(levels, x).to(dtype)
        return eps.run_unet(x.to(dtype), eps.c_noise(levels, x).to(dtype), labels)  # any H x W (padded)

    def conditioning_keys(self) -> list[str]:
        return [f"eps.{k}" for k in self.eps.conditioning_keys()]

    def load_backbone(self, state_dict: Mapping[str, Tensor]) -> list[str]:
        """Load an unconditional DDPM++ / EPSDenoiser state dict; returns the (conditioning) missing keys."""
        return [f"eps.net.{k}" for k in self.eps.load_backbone(dict(state_dict))]


class ConditionalDenoiser(nn.Module):
    """Training-based baseline ``D(x_t/a, rho, cond, s_y) -> x0`` with EDM's scalar preconditioning:

        D = c_skip(rho) x_t/a + c_out(rho) F([c_in(rho) x_t/a, cond / sqrt(sd^2 + s_y^2)], rho, s_y),

    ``c_skip = sd^2/(sd^2+rho^2)``, ``c_out = rho sd/sqrt(sd^2+rho^2)``, ``c_in = 1/sqrt(sd^2+rho^2)``,
    where ``cond`` is :func:`conditioning_image` (the observation as an image) and ``backbone`` any module
    ``(x (B, 2C, H, W), rho (B,), s_y (B,)) -> (B, C, H, W)`` (:class:`ConditionalUNet`, or an MLP).
    """

    def __init__(self, backbone: nn.Module, channels: int, sigma_data: float = 0.5):
        super().__init__()
        self.backbone, self.channels, self.sigma_data = backbone, int(channels), float(sigma_data)

    def forward(self, x_scaled: Tensor, rho: Tensor | float, cond: Tensor, sigma_y: Tensor | float) -> Tensor:
        batch, sd = x_scaled.shape[0], self.sigma_data
        rho_b = as_batch(rho, x_scaled)
        sy_b = as_batch(sigma_y, x_scaled)
        r = per_batch(rho_b, x_scaled.ndim)
        c_in = torch.rsqrt(sd**2 + r**2)
        c_skip = sd**2 / (sd**2 + r**2)
        c_out = r * sd * c_in
        c_cond = per_batch(torch.rsqrt(sd**2 + sy_b**2), x_scaled.ndim)  # 0 when s_y = inf (no measurement)
        cond = torch.broadcast_to(cond, x_scaled.shape) if cond.shape[0] == 1 and batch > 1 else cond
        x_in = torch.cat([c_in * x_scaled, c_cond * cond], dim=1)
        out = self.backbone(x_in, rho_b, sy_b).to(x_scaled.dtype)
        return c_skip * x_scaled + c_out * out

    def conditioning_keys(self) -> list[str]:
        keys = getattr(self.backbone, "conditioning_keys", list)()
        return [f"backbone.{k}" for k in keys]

    def load_backbone(self, state_dict: Mapping[str, Tensor]) -> list[str]:
        """Load unconditional weights into the backbone (see :meth:`ConditionalUNet.load_backbone`)."""
        if not hasattr(self.backbone, "load_backbone"):
            raise TypeError(f"{type(self.backbone).__name__} cannot load an unconditional checkpoint")
        return [f"backbone.{k}" for k in self.backbone.load_backbone(state_dict)]


@dataclass
class ConditionalPredictor:
    """``(x_t, t) -> x0`` from a :class:`ConditionalDenoiser` (for the samplers of :mod:`exactps.samplers`)."""

    model: Callable[..., Tensor]
    interp: Interpolant
    operator: LinearOperator | None = None
    y: Tensor | None = None
    sigma_y: float | Tensor = 0.0

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        tt = self.interp.check_t(t, x_t).reshape(-1)
        a, s = self.interp.alpha(tt), self.interp.sigma(tt)
        x_scaled = x_t / per_batch(a, x_t.ndim)
        cond, sy = conditional_inputs(self.operator, self.y, self.sigma_y, x_t)
        return self.model(x_scaled, as_batch(s / a, x_t), cond, sy)
