"""Discrete-time VP networks as EPS denoisers: epsilon- or v-prediction on a DDPM schedule.

A network ``F(x_k, k)`` trained on ``x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) e`` (guided diffusion's ADM,
a diffusers ``UNet2DModel``) is an EDM denoiser once its input is rescaled and its time is read off the
noise level. For ``x = x0 + sigma e`` (EDM's state, exactps' ``m`` at ``A = 0``),
``x / sqrt(1 + sigma^2) = sqrt(abar) x0 + sqrt(1 - abar) e`` with ``(1 - abar)/abar = sigma^2``, so

    epsilon:  D(x; sigma^2 I) = x - sigma F(x / sqrt(1 + sigma^2), k(sigma)),
    v:        D(x; sigma^2 I) = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) F(x / sqrt(1 + sigma^2), k(sigma)),

(``x0 = (x_k - sqrt(1-abar) e)/sqrt(abar)`` and ``x0 = sqrt(abar) x_k - sqrt(1-abar) v``), EDM's VP
preconditioning ``c_in = 1/sqrt(1 + sigma^2)``, ``c_skip``, ``c_out`` of :data:`PREDICTIONS`. The timestep
``k(sigma)`` is :meth:`exactps.interpolants.VPDiscrete.t_from_ratio` of the network's own schedule: the
training timestep itself where ``sigma`` is one of the schedule's ``sigma_k`` (the denoiser is then exactly
the network's DDPM/DDIM x0-prediction), a fractional timestep in between (``log abar`` interpolated
linearly: the sinusoidal time embedding takes any real ``k``), clamped to ``[0, n - 1]`` outside the
schedule's range (the rescaling and ``c_out`` keep the true ``sigma``).

As EPS denoisers (:class:`VPDenoiser`, an :class:`~exactps.networks.EPSDenoiser`) the same coefficients are
matrix functions of ``S_t`` (per direction of variance ``l``: ``c_in = 1/sqrt(1 + l)``, ``c_skip``, ``c_out``)
and the time input is ``k(rho)``; the conditioning maps enter through the first convolution widened with
zero-initialised channels, the ``s_y`` embedding through a zero-initialised linear layer added to the
network's time embedding. So at ``A = 0`` with zero new weights it computes the source network's denoiser.
Learned-variance outputs (``2C`` channels) keep their first ``C`` channels (the prediction).

Backbones: :class:`ADMDenoiser` (deepinv's ``DiffUNet``, presets ``adm-256`` / ``adm-large-256``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from deepinv.models import DiffUNet
from torch import Tensor, nn

from exactps.batch import as_batch
from exactps.covariance import PivotNoise
from exactps.interpolants import VPDiscrete
from exactps.networks import PRESETS, BackbonePreset, EPSDenoiser

__all__ = [
    "ADM_SCHEDULE",
    "PREDICTIONS",
    "ADMDenoiser",
    "Prediction",
    "PredictionTypeError",
    "VPDenoiser",
    "build_adm_unet",
    "get_prediction",
]


class PredictionTypeError(ValueError):
    """A network's prediction type is not one :data:`PREDICTIONS` converts."""


@dataclass(frozen=True)
class Prediction:
    """What a VP network predicts, as EDM's ``c_skip(l)`` and ``c_out(l)`` (``l``: the noise variance of ``x``)."""

    c_skip: Callable[[Tensor], Tensor]
    c_out: Callable[[Tensor], Tensor]


#: THE table of VP prediction types (diffusers' names): ``D = c_skip(l) x + c_out(l) F(x / sqrt(1 + l), k)``.
PREDICTIONS: dict[str, Prediction] = {
    "epsilon": Prediction(torch.ones_like, lambda l: -torch.sqrt(l)),
    "v_prediction": Prediction(lambda l: 1 / (1 + l), lambda l: -torch.rsqrt(1 + 1 / l)),
}


def get_prediction(name: str) -> Prediction:
    """The entry ``name`` of :data:`PREDICTIONS`; :class:`PredictionTypeError` naming the supported ones."""
    try:
        return PREDICTIONS[name]
    except (KeyError, TypeError):
        raise PredictionTypeError(
            f"prediction type {name!r} is not supported; exactps converts {', '.join(map(repr, PREDICTIONS))}"
        ) from None


class _WidenedConv2d(nn.Conv2d):
    """A first convolution ``conv(x[:, :C]) + conv_extra(x[:, C:])`` with ``conv_extra`` zero-initialised.

    It shares the replaced layer's ``weight`` and ``bias`` under the same names, so the source
    checkpoint loads unchanged (``extra_weight`` is the only new key)."""

    def __init__(self, conv: nn.Conv2d, extra: int):
        kw = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}
        with torch.device("meta"):  # no random weights: they are replaced
            super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None, **kw)
        self.weight, self.bias = conv.weight, conv.bias
        shape = (conv.out_channels, extra, *conv.kernel_size)
        self.extra_weight = nn.Parameter(torch.zeros(shape, dtype=conv.weight.dtype, device=conv.weight.device))

    def forward(self, x: Tensor) -> Tensor:
        main = super().forward(x[:, : self.in_channels])
        return main + F.conv2d(x[:, self.in_channels :], self.extra_weight.to(x.dtype), None, **self._extra_kw())

    def _extra_kw(self) -> dict[str, Any]:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}


class VPDenoiser(EPSDenoiser):
    """An EPS denoiser over a discrete-time VP network (module docstring): ``schedule`` (its DDPM
    schedule), ``prediction`` (a name of :data:`PREDICTIONS`). Subclasses build the network
    (:meth:`build_unet`), say where its first convolution and time embedding are, and run it
    (:meth:`run_network`)."""

    schedule: VPDiscrete
    prediction: str

    def __init__(
        self,
        preset: str | BackbonePreset,
        channels: int = 3,
        conditioning: str = "scalar",
        sigma_data: float = 0.5,
        schedule: VPDiscrete | None = None,
        prediction: str = "epsilon",
        **overrides: Any,
    ):
        self._prediction = get_prediction(prediction)
        super().__init__(preset, channels, conditioning, sigma_data, **overrides)
        self.schedule, self.prediction = schedule or VPDiscrete(), prediction

    # -- the network, to be provided ------------------------------------------------------------------
    def build_unet(self) -> nn.Module:
        """The source network, random weights."""
        raise NotImplementedError

    def first_conv(self) -> tuple[nn.Module, str]:
        """``(parent, name)`` of the network's first convolution (an ``nn.Conv2d`` on the image)."""
        raise NotImplementedError

    def time_embedding_dim(self, net: nn.Module) -> int:
        """The width of ``net``'s time embedding (the ``s_y`` embedding is added to it by a forward hook,
        :meth:`_add_embedding`, that :meth:`build_unet` registers)."""
        raise NotImplementedError

    def run_network(self, x: Tensor, timestep: Tensor) -> Tensor:
        """The network's raw output on ``x_k`` at (fractional) ``timestep``."""
        raise NotImplementedError

    # -- EPSDenoiser's hooks ---------------------------------------------------------------------------
    def build_network(self) -> nn.Module:
        net = self.build_unet()
        if self.embed_dim:
            self.sigma_y_embed = nn.Linear(self.embed_dim, self.time_embedding_dim(net))
            nn.init.zeros_(self.sigma_y_embed.weight)
            nn.init.zeros_(self.sigma_y_embed.bias)
        self._extra_embedding: Tensor | None = None
        return net

    def _widen_input(self, extra: int) -> None:
        parent, name = self.first_conv()
        setattr(parent, name, _WidenedConv2d(getattr(parent, name), extra))

    @property
    def weight_dtype(self) -> torch.dtype:
        parent, name = self.first_conv()
        return getattr(parent, name).weight.dtype

    def c_in(self, l: Tensor) -> Tensor:
        """``1 / sqrt(1 + l)``: ``x_k = x / sqrt(1 + sigma^2)``."""
        return torch.rsqrt(1 + l)

    def c_skip(self, l: Tensor) -> Tensor:
        """The prediction's ``c_skip`` (1 for epsilon, ``1/(1 + l)`` for v)."""
        return self._prediction.c_skip(l)

    def c_out(self, l: Tensor) -> Tensor:
        """The prediction's ``c_out`` (``-sqrt(l)`` for epsilon, ``-sqrt(l/(1 + l))`` for v)."""
        return self._prediction.c_out(l)

    def noise_fraction(self, l: Tensor) -> Tensor:
        """``l / (1 + l) = 1 - abar``: the ``"map"`` channels (0 = measured exactly, 1 = noise)."""
        return l / (1 + l)

    def c_noise(self, noise: PivotNoise, like: Tensor) -> Tensor:
        """The network's timestep ``k(rho)`` (:meth:`VPDiscrete.t_from_ratio`), clamped to ``[0, n - 1]``."""
        rho = as_batch(noise.rho, like).to(torch.float64)
        return self.schedule.t_from_ratio(rho).clamp(0, self.schedule.t_max).to(torch.float32)

    def forward_network(self, x: Tensor, c_noise: Tensor, labels: Tensor | None, classes: Tensor | None) -> Tensor:
        """The first ``C`` output channels of the network at timestep ``c_noise``, the ``s_y`` features
        ``labels`` embedded and added to its time embedding (``classes``: always None, no class labels)."""
        self._extra_embedding = self.sigma_y_embed(labels) if labels is not None else None
        try:
            out = self.run_network(x, c_noise)
        finally:
            self._extra_embedding = None
        return out[:, : self.channels]

    def _add_embedding(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        """Forward hook on the network's time embedding: adds the pending ``s_y`` embedding."""
        extra = self._extra_embedding
        return output if extra is None else output + extra.to(output.dtype)

    def conditioning_keys(self) -> list[str]:
        return [k for k in self.state_dict() if k.startswith("sigma_y_embed.") or k.endswith("extra_weight")]

    def load_backbone(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Load the source network's state dict (its own keys, or this model's ``net.*``, with or without
        the ``s_y`` embedding ``sigma_y_embed.*``); only the conditioning weights may be missing. Returns them."""
        embed = {k: v for k, v in state_dict.items() if k.startswith("sigma_y_embed.")}  # an EPS model's own
        missing = super().load_backbone({k: v for k, v in state_dict.items() if k not in embed})
        own = [k for k in self.conditioning_keys() if k.startswith("sigma_y_embed.")]
        if not embed:
            return missing + own
        if sorted(embed) != sorted(own):
            raise KeyError(f"s_y embedding mismatch: the model has {own}, the state dict {sorted(embed)}")
        self.load_state_dict(embed, strict=False)
        return missing


# -- guided diffusion's ADM (deepinv's DiffUNet) ------------------------------------------------------------

#: The schedule of guided diffusion's 256x256 checkpoints (FFHQ of DPS, ImageNet): DDPM's linear betas
#: from 1e-4 to 0.02 over 1000 steps (deepinv's ``DiffUNet.get_alpha_prod`` defaults).
ADM_SCHEDULE = VPDiscrete("linear", 1e-4, 2e-2, 1000)

#: deepinv's two DiffUNet architectures: ``large_model`` -> (model_channels, num_blocks, attention resolutions).
_DIFFUNET_ARCHITECTURES = {False: (128, 1, (16,)), True: (256, 2, (32, 16, 8))}


def _diffunet_large(preset: BackbonePreset) -> bool:
    """Whether ``preset`` is deepinv's large DiffUNet (its only two architectures are accepted)."""
    arch = (preset.model_channels, preset.num_blocks, tuple(preset.attn_resolutions))
    for large, known in _DIFFUNET_ARCHITECTURES.items():
        if arch == known and tuple(preset.channel_mult) == (1, 1, 2, 2, 4, 4) and preset.img_resolution == 256:
            return large
    raise ValueError(f"deepinv's DiffUNet has two architectures (presets adm-256 and adm-large-256), not {preset}")


def build_adm_unet(preset: str | BackbonePreset, channels: int = 3) -> DiffUNet:
    """deepinv's ``DiffUNet`` for an ``adm`` preset, random weights, without the two schedule buffers it
    registers for its own ``forward_denoise`` (absent from the published files): its state dict is
    exactly the checkpoint's."""
    cfg = preset if isinstance(preset, BackbonePreset) else PRESETS[preset]
    net = DiffUNet(channels, channels, large_model=_diffunet_large(cfg), pretrained=None)
    del net.sqrt_1m_alphas_cumprod, net.sqrt_alphas_cumprod
    return net.train()


class ADMDenoiser(VPDenoiser):
    """Guided diffusion's ADM U-Net (deepinv's ``DiffUNet``) as an EPS denoiser: epsilon prediction on
    :data:`ADM_SCHEDULE`, learned variance (``2C`` outputs, the first ``C`` kept), ``x_k`` in ``[-1, 1]``."""

    def __init__(
        self,
        preset: str | BackbonePreset = "adm-256",
        channels: int = 3,
        conditioning: str = "scalar",
        sigma_data: float = 0.5,
        **overrides: Any,
    ):
        super().__init__(preset, channels, conditioning, sigma_data, ADM_SCHEDULE, "epsilon", **overrides)

    def build_unet(self) -> nn.Module:
        net = build_adm_unet(self.preset, self.channels)
        net.time_embed.register_forward_hook(self._add_embedding)
        return net

    def first_conv(self) -> tuple[nn.Module, str]:
        return self.net.input_blocks[0], "0"

    def time_embedding_dim(self, net: nn.Module) -> int:
        return net.time_embed[-1].out_features

    def run_network(self, x: Tensor, timestep: Tensor) -> Tensor:
        return self.net.forward_diffusion(x, timestep)
