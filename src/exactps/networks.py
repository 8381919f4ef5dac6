"""Denoiser networks: deepinv's DDPM++ backbone with matrix-valued EDM preconditioning (EPS).

Backbone choice
---------------
The backbone is deepinv's :class:`~deepinv.models.NCSNpp` with ``model_type="ddpm"`` (EDM's
DDPM++ U-Net), used through its ``forward_unet(x, c_noise, class_labels)``, which bypasses
deepinv's own scalar preconditioning. Reasons:

- it is fully convolutional (attention placement follows the preset's nominal resolution, and any
  ``H, W`` runs: :meth:`EPSDenoiser.run_unet` pads to multiples of ``2^(levels-1)`` and crops back),
  takes any number of input channels, and embeds the noise level exactly as EDM
  (``c_noise = log(sigma)/4``, positional embedding);
- preset ``base-64`` is exactly the architecture of EDM's FFHQ-64 VP checkpoint
  (``edm-ffhq-64x64-uncond-vp`` in deepinv), so a pretrained unconditional denoiser loads
  with :meth:`EPSDenoiser.load_backbone` and can be fine-tuned into an EPS denoiser;
- its label path ``emb += Linear(labels)`` (added to the noise embedding before the embedding
  MLP) carries the ``s_y`` embedding without touching deepinv's code.

The same U-Net in its NCSN++ form (``model_type="ncsn"``: Fourier noise embedding, residual
encoder) is preset ``ncsn-64``, the architecture of ``edm-ffhq-64x64-uncond-ve``; its residual encoder
feeds the raw input to a second, downsampling convolution, which sees only the image channels (the
conditioning maps enter through the first convolution, as for DDPM++). The CIFAR-10 32x32 checkpoints
are presets ``base-32`` (DDPM++) and ``ncsn-32`` (NCSN++). The published checkpoints themselves are
named in :mod:`exactps.published`. Presets ``adm-256`` and ``adm-large-256`` are guided diffusion's
256x256 U-Nets (deepinv's :class:`~deepinv.models.DiffUNet`), epsilon-prediction networks on a discrete
DDPM schedule, wrapped as EPS denoisers by :mod:`exactps.vpnets`. Preset ``adm-64`` is EDM's
class-conditional ImageNet-64 ADM (deepinv's :class:`~deepinv.models.ADMUNet`, ~296M parameters), wrapped
by :mod:`exactps.admunet` (class labels must be chosen explicitly).

Conditioning (``conditioning=``)
--------------------------------
- ``"none"``: only ``c_noise = log(rho)/4``: the plain EDM denoiser (``label_dim = 0``).
- ``"scalar"``: plus ``log(s_y)/4`` (clamped to ``[1e-3, 1e3]``, so ``s_y = inf``, no measurement,
  and ``s_y = 0`` are finite), positionally embedded and added to the noise embedding through a
  zero-initialised linear layer.
- ``"map"``: plus ``C`` extra input channels holding the exact per-pixel diagonal of
  ``S_t (sd^2 I + S_t)^{-1}`` (``l/(sd^2+l)`` per direction, so 0 = measured exactly, 1 = pure noise),
  seen by a zero-initialised convolution added to the first layer.
- ``"obs"``: the paper's input: ``"scalar"`` plus ``C`` extra input channels holding the observation
  as an image (:meth:`~exactps.covariance.PivotNoise.observation_image`: masked, upsampled or blurred
  ``y``) scaled by ``1/sqrt(sd^2 + s_y^2)``, through the same zero-initialised convolution.

All conditioning weights start at zero, so every variant initialised from (or loading) the same
unconditional weights computes exactly the same function until trained.

Preconditioning
---------------
Per direction of ``S_t`` with variance ``l`` (data std ``sd``): ``c_in = 1/sqrt(sd^2+l)``,
``c_skip = sd^2/(sd^2+l)``, ``c_out = sd sqrt(l)/sqrt(sd^2+l)``, applied as matrix functions
through ``noise.apply``:

    D(m; S_t) = c_skip(S_t) m + c_out(S_t) F(c_in(S_t) m, c_noise, c_y[, map]).

Directions with ``l = 0`` (measured exactly, ``s_y = 0``) give ``c_skip = 1``, ``c_out = 0``: exact
pass-through. :meth:`EPSDenoiser.denoise` is the unconditional denoiser ``D(x; sigma^2 I)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from deepinv.models import NCSNpp
from deepinv.models.diffunet import AttentionBlock, ResBlock
from deepinv.models.utils import UNetBlock, UpDownConv2d
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from exactps.batch import as_batch, per_batch
from exactps.classes import ClassLabelsError
from exactps.covariance import IsotropicNoise, PivotNoise

__all__ = [
    "CHECKPOINTED_BLOCKS",
    "CONDITIONINGS",
    "DEFAULT_CONDITIONING",
    "MODEL_TYPES",
    "PRESETS",
    "VP_MODEL_TYPES",
    "BackbonePreset",
    "Conditioning",
    "ConditioningInputs",
    "EPSDenoiser",
    "build_backbone",
    "checkpoint_blocks",
    "compile_backbone",
    "count_parameters",
]

Conditioning = Literal["none", "scalar", "map", "obs"]


@dataclass(frozen=True)
class ConditioningInputs:
    """What a conditioning gives the network beyond ``c_noise``: an ``s_y`` embedding, the variance
    map, the observation image (each map is ``C`` extra input channels)."""

    sigma_y_embedding: bool
    variance_map: bool
    observation: bool = False

    @property
    def extra_maps(self) -> int:
        """How many ``C``-channel maps are appended to the network's input."""
        return int(self.variance_map) + int(self.observation)


#: The conditioning of EPS models unless asked otherwise (the ablation in the README chose it).
DEFAULT_CONDITIONING = "map"

#: THE conditioning table (see the module docstring).
CONDITIONINGS: dict[str, ConditioningInputs] = {
    "none": ConditioningInputs(sigma_y_embedding=False, variance_map=False),
    "scalar": ConditioningInputs(sigma_y_embedding=True, variance_map=False),
    "map": ConditioningInputs(sigma_y_embedding=True, variance_map=True),
    "obs": ConditioningInputs(sigma_y_embedding=True, variance_map=False, observation=True),
}

#: ``rho`` and ``s_y`` are clamped to these ranges before taking logs (embeddings only).
RHO_RANGE = (1e-5, 1e5)
SIGMA_Y_RANGE = (1e-3, 1e3)


# -- backbone presets ---------------------------------------------------------------------------------


#: The U-Net families of deepinv's :class:`~deepinv.models.NCSNpp` (its ``model_type``).
MODEL_TYPES = ("ddpm", "ncsn")
#: Discrete-time VP backbones (:mod:`exactps.vpnets`): ``"adm"`` is deepinv's ``DiffUNet`` (guided diffusion).
VP_MODEL_TYPES = ("adm",)


@dataclass(frozen=True)
class BackbonePreset:
    """Arguments of deepinv's EDM U-Net ``NCSNpp``: ``model_type`` ``"ddpm"`` (DDPM++, the default) or
    ``"ncsn"`` (NCSN++)."""

    img_resolution: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_blocks: int
    attn_resolutions: tuple[int, ...]
    channel_mult_emb: int = 4
    augment_dim: int = 0
    dropout: float = 0.1
    model_type: str = "ddpm"

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    @property
    def size_multiple(self) -> int:
        """``2^(levels - 1)``: image sides must be multiples of it (the U-Net halves them ``levels - 1`` times)."""
        return 2 ** (self.levels - 1)


PRESETS: dict[str, BackbonePreset] = {
    # ~0.7M parameters; milliseconds per forward pass at 16x16 on a CPU (tests).
    "tiny": BackbonePreset(16, 32, (1, 2), 1, (), channel_mult_emb=2, dropout=0.0),
    # ~7M parameters, for 32x32 images.
    "small-32": BackbonePreset(32, 64, (1, 2, 2), 2, (16,)),
    # ~10M parameters, for 64x64 images.
    "small-64": BackbonePreset(64, 64, (1, 2, 2, 2), 2, (16,)),
    # ~2.5M parameters (5 MB in float16): a 64x64 model small enough to ship in the repository.
    "compact-64": BackbonePreset(64, 32, (1, 2, 2, 2), 2, (16,)),
    # ~62M parameters: EDM's FFHQ-64 DDPM++ (the architecture of ``edm-ffhq-64x64-uncond-vp``).
    "base-64": BackbonePreset(64, 128, (1, 2, 2, 2), 4, (16,), augment_dim=9, dropout=0.05),
    # EDM's FFHQ-64 NCSN++ (``edm-ffhq-64x64-uncond-ve``): base-64's layout with NCSN++ blocks.
    "ncsn-64": BackbonePreset(64, 128, (1, 2, 2, 2), 4, (16,), augment_dim=9, dropout=0.05, model_type="ncsn"),
    # EDM's CIFAR-10 32x32 DDPM++ and NCSN++ (``edm-cifar10-32x32-uncond-vp`` / ``-ve``).
    "base-32": BackbonePreset(32, 128, (2, 2, 2), 4, (16,), augment_dim=9, dropout=0.13),
    "ncsn-32": BackbonePreset(32, 128, (2, 2, 2), 4, (16,), augment_dim=9, dropout=0.13, model_type="ncsn"),
    # guided diffusion's 256x256 ADM U-Nets as deepinv's DiffUNet builds them (exactps.vpnets; epsilon prediction
    # on DDPM's linear schedule, learned variance): the FFHQ checkpoint of DPS (~94M parameters) and ImageNet's.
    "adm-256": BackbonePreset(256, 128, (1, 1, 2, 2, 4, 4), 1, (16,), model_type="adm"),
    "adm-large-256": BackbonePreset(256, 256, (1, 1, 2, 2, 4, 4), 2, (32, 16, 8), model_type="adm"),
    # EDM's class-conditional ImageNet-64 ADM (deepinv's ADMUNet, ``edm-imagenet64-cond``; exactps.admunet):
    # ~296M parameters, 1000 class labels.
    "adm-64": BackbonePreset(64, 192, (1, 2, 3, 4), 3, (32, 16, 8), model_type="edm-adm"),
}


def build_backbone(
    preset: str | BackbonePreset,
    in_channels: int = 3,
    out_channels: int = 3,
    label_dim: int = 0,
    sigma_data: float = 0.5,
    pretrained: str | None = None,
    **overrides,
) -> NCSNpp:
    """deepinv's DDPM++ (or NCSN++) U-Net for a named preset (fields can be overridden): random weights,
    or deepinv's published weights ``pretrained`` (a name deepinv knows, fetched by deepinv's own loader)."""
    cfg = _preset(preset)
    if overrides:
        cfg = replace(cfg, **overrides)
    if cfg.model_channels % 32:
        raise ValueError(f"model_channels must be a multiple of 32 (GroupNorm), got {cfg.model_channels}")
    if cfg.model_type in VP_MODEL_TYPES:
        raise ValueError(f"a {cfg.model_type!r} preset is a discrete-time VP backbone: build it with exactps.vpnets")
    if cfg.model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {cfg.model_type!r}")
    net = NCSNpp(
        precondition_type="edm",
        in_channels=in_channels,
        out_channels=out_channels,
        label_dim=label_dim,
        pretrained=pretrained,
        pixel_std=sigma_data,
        _was_trained_on_minus_one_one=True,
        **asdict(cfg),
    )
    return net.train()


def _preset(preset: str | BackbonePreset) -> BackbonePreset:
    if isinstance(preset, BackbonePreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown backbone preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# -- conditioning pieces ------------------------------------------------------------------------------


class _ImageInputConv(UpDownConv2d):
    """A convolution on the network's raw input that sees only its first ``C`` (image) channels.

    It shares the replaced layer's parameters and resampling filter under the same names, so
    unconditional checkpoints load unchanged. NCSN++'s residual encoder applies one to the raw input
    besides the first convolution; the conditioning maps reach the network through the first one only.
    """

    def __init__(self, conv: UpDownConv2d):
        kw = {"up": conv.up, "down": conv.down, "fused_resample": conv.fused_resample}
        super().__init__(conv.in_channels, conv.out_channels, kernel=0, **kw)  # kernel=0: no new random weights
        self.weight, self.bias = conv.weight, conv.bias
        self.resample_filter = conv.resample_filter

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x[:, : self.in_channels])


class _InputConv(_ImageInputConv):
    """The backbone's first convolution plus a zero-initialised one for ``extra`` map channels.

    ``conv(x[:, :C]) + conv_extra(x[:, C:])``; parameter names ``weight``/``bias`` are those of the
    replaced layer, so unconditional checkpoints load (``extra_weight`` is the only new key).
    """

    def __init__(self, conv: UpDownConv2d, extra: int):
        if conv.up or conv.down:
            raise ValueError("the conditioning maps are added by the backbone's first (non-resampling) convolution")
        kernel = conv.weight.shape[-1]
        super().__init__(conv)
        self.extra_weight = nn.Parameter(torch.zeros(conv.out_channels, extra, kernel, kernel))

    def forward(self, x: Tensor) -> Tensor:
        main = super().forward(x)
        w = self.extra_weight.to(x.dtype)
        return main + F.conv2d(x[:, self.in_channels :], w, padding=w.shape[-1] // 2)


def _positional(c: Tensor, dim: int) -> Tensor:
    """EDM's positional embedding ``[cos(c w_k), sin(c w_k)]``, ``w_k = 10^(-4 k/(dim/2 - 1))``."""
    half = dim // 2
    freqs = (1e-4) ** (torch.arange(half, dtype=torch.float32, device=c.device) / max(half - 1, 1))
    arg = c.float()[:, None] * freqs[None]
    return torch.cat([arg.cos(), arg.sin()], dim=1)


# -- the EPS denoiser ---------------------------------------------------------------------------------


class EPSDenoiser(nn.Module):
    """``D_theta(m; S_t) -> x0``: a DDPM++ (or NCSN++) U-Net with matrix-valued EDM preconditioning.

    Callable as a :data:`exactps.posterior.Denoiser`: ``model(m, noise)`` with ``noise`` an
    :class:`IsotropicNoise` (the unconditional denoiser, ``A = 0``) or :class:`SpectralNoise`.
    """

    def __init__(
        self,
        preset: str | BackbonePreset = "small-64",
        channels: int = 3,
        conditioning: Conditioning = "scalar",
        sigma_data: float = 0.5,
        **overrides,
    ):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            names = ", ".join(repr(c) for c in CONDITIONINGS)
            raise ValueError(f"conditioning must be one of {names}, got {conditioning!r}")
        self.inputs = CONDITIONINGS[conditioning]
        self.preset = _preset(preset)
        if overrides:
            self.preset = replace(self.preset, **overrides)
        self.channels, self.conditioning, self.sigma_data = channels, conditioning, float(sigma_data)
        self.embed_dim = self.preset.model_channels if self.inputs.sigma_y_embedding else 0
        self.net = self.build_network()
        if self.inputs.extra_maps:
            self._widen_input(channels * self.inputs.extra_maps)

    def build_network(self) -> nn.Module:
        """The backbone ``F`` with its ``s_y`` embedding (``label_dim = embed_dim``) zero-initialised."""
        net = build_backbone(self.preset, self.channels, self.channels, self.embed_dim, self.sigma_data)
        if self.embed_dim:
            nn.init.zeros_(net.map_label.weight)
            nn.init.zeros_(net.map_label.bias)
        return net

    def _widen_input(self, extra: int) -> None:
        """Give the first convolution ``extra`` zero-initialised input channels (:class:`_InputConv`); the
        other layers that read the raw input (NCSN++'s residual encoder) keep seeing the image only."""
        first = next(iter(self.net.enc))
        self.net.enc[first] = _InputConv(self.net.enc[first], extra)
        for name, block in self.net.enc.items():
            if "aux_residual" in name and block.in_channels == self.channels:
                self.net.enc[name] = _ImageInputConv(block)

    # -- preconditioning coefficients, elementwise in the variance l --------------------------------
    def c_in(self, l: Tensor) -> Tensor:
        """``1 / sqrt(sd^2 + l)``."""
        return torch.rsqrt(self.sigma_data**2 + l)

    def c_skip(self, l: Tensor) -> Tensor:
        """``sd^2 / (sd^2 + l)`` (1 at ``l = 0``)."""
        return self.sigma_data**2 / (self.sigma_data**2 + l)

    def c_out(self, l: Tensor) -> Tensor:
        """``sd sqrt(l) / sqrt(sd^2 + l) = sd / sqrt(1 + sd^2/l)``: exactly 0 at ``l = 0``, ``sd`` at ``inf``."""
        return self.sigma_data * torch.rsqrt(1 + self.sigma_data**2 / l)

    def noise_fraction(self, l: Tensor) -> Tensor:
        """``l / (sd^2 + l) = 1 - c_skip``: the ``"map"`` channels (0 = measured exactly, 1 = noise)."""
        return 1 - self.c_skip(l)

    # -- conditioning inputs ------------------------------------------------------------------------
    def c_noise(self, noise: PivotNoise, like: Tensor) -> Tensor:
        """``log(rho)/4`` per batch element of ``like`` (EDM's noise conditioning)."""
        return torch.log(as_batch(noise.rho, like).clamp(*RHO_RANGE)) / 4

    def sigma_y_features(self, noise: PivotNoise, like: Tensor) -> Tensor:
        """Positional embedding of ``c_y = log(s_y)/4`` (``s_y`` clamped; ``inf`` when ``A = 0``)."""
        c_y = torch.log(as_batch(noise.sigma_y, like).clamp(*SIGMA_Y_RANGE)) / 4
        # NCSNpp multiplies labels by sqrt(label_dim); undo it to keep unit-scale features.
        return _positional(c_y, self.embed_dim) / math.sqrt(self.embed_dim)

    def backbone_input(self, m: Tensor, noise: PivotNoise) -> Tensor:
        """``c_in(S_t) m``, with the ``"map"`` channels ``diag(S_t (sd^2 + S_t)^{-1})`` or the ``"obs"``
        channels ``observation / sqrt(sd^2 + s_y^2)`` appended."""
        x = noise.apply(self.c_in, m)
        maps = [x]
        if self.inputs.variance_map:
            maps.append(noise.diagonal(self.noise_fraction, m).to(x.dtype))
        if self.inputs.observation:
            c_obs = per_batch(torch.rsqrt(self.sigma_data**2 + as_batch(noise.sigma_y, m) ** 2), m.ndim)
            maps.append((c_obs * noise.observation_image(m)).to(x.dtype))  # 0 when s_y = inf
        return torch.cat(maps, dim=1) if len(maps) > 1 else x

    def _check(self, m: Tensor) -> None:
        if m.ndim != 4 or m.shape[1] != self.channels:
            raise ValueError(f"expected images (B, {self.channels}, H, W), got {tuple(m.shape)}")

    def run_unet(self, x: Tensor, c_noise: Tensor, labels: Tensor | None, classes: Tensor | None = None) -> Tensor:
        """The U-Net ``F`` on inputs of any ``H x W``: padded (reflection) at the bottom and right to
        multiples of ``2^(levels - 1)`` (:attr:`BackbonePreset.size_multiple`), output cropped back,
        so a photo is restored at its own size; inputs of such a size are passed as they are. ``classes``: the
        ``(B, K)`` label vectors of a class-conditional network (:meth:`class_vectors`)."""
        step = self.preset.size_multiple
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % step, -w % step
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.forward_network(x, c_noise, labels, classes)[..., :h, :w]

    def forward_network(self, x: Tensor, c_noise: Tensor, labels: Tensor | None, classes: Tensor | None) -> Tensor:
        """The backbone on padded inputs: deepinv's ``forward_unet`` (no preconditioning); ``labels`` are the
        ``s_y`` features, ``classes`` None (this network takes no class labels)."""
        return self.net.forward_unet(x, c_noise, class_labels=labels)

    def class_vectors(self, class_labels: Tensor | None, like: Tensor) -> Tensor | None:
        """The label vectors of ``class_labels`` for the backbone: None, as this network is not
        class-conditional (labels given to it are a :class:`~exactps.classes.ClassLabelsError`)."""
        if class_labels is not None:
            raise ClassLabelsError(f"{type(self).__name__} is not class-conditional: it takes no class labels")
        return None

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the backbone's weights (inputs are cast to it)."""
        return self.net.map_layer0.weight.dtype

    def forward(self, m: Tensor, noise: PivotNoise, class_labels: Tensor | None = None) -> Tensor:
        """``x0 = c_skip(S_t) m + c_out(S_t) F(c_in(S_t) m, c_noise, c_y[, map][, class])``; ``class_labels``
        only for a class-conditional network (:meth:`class_vectors`)."""
        self._check(m)
        dtype = self.weight_dtype
        classes = self.class_vectors(class_labels, m)
        x = self.backbone_input(m, noise).to(dtype)
        labels = self.sigma_y_features(noise, m).to(dtype) if self.embed_dim else None
        classes = classes.to(dtype) if classes is not None else None
        out = self.run_unet(x, self.c_noise(noise, m).to(dtype), labels, classes).to(m.dtype)
        return noise.apply(self.c_skip, m) + noise.apply(self.c_out, out)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """The unconditional denoiser ``D(x; sigma^2 I)`` (EDM's ``D(x, sigma)``, ``A = 0``)."""
        rho = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        return self(x, IsotropicNoise(rho))

    # -- checkpoints ----------------------------------------------------------------------------------
    def config(self) -> dict:
        """JSON-serialisable constructor arguments: ``EPSDenoiser.from_config(model.config())``."""
        return {
            "preset": asdict(self.preset),
            "channels": self.channels,
            "conditioning": self.conditioning,
            "sigma_data": self.sigma_data,
        }

    @classmethod
    def from_config(cls, config: dict) -> EPSDenoiser:
        """A freshly initialised model with the architecture described by :meth:`config`."""
        cfg = dict(config)
        preset = cfg.pop("preset")
        if isinstance(preset, dict):
            preset = BackbonePreset(**{k: tuple(v) if isinstance(v, list) else v for k, v in preset.items()})
        return cls(preset, **cfg)

    def conditioning_keys(self) -> list[str]:
        """State-dict keys of the zero-initialised conditioning weights (absent from plain EDM)."""
        return [k for k in self.state_dict() if k.startswith("net.map_label.") or k.endswith("extra_weight")]

    def load_backbone(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Load an unconditional DDPM++/NCSN++ state dict (deepinv ``NCSNpp`` keys, or this model's ``net.*``).

        Only the conditioning weights may be missing (they keep their current values, zero when
        fresh); any other missing or unexpected key raises. Returns the missing keys.
        """
        sd = {k.removeprefix("net."): v for k, v in state_dict.items()}
        result = self.net.load_state_dict(sd, strict=False)
        allowed = {k.removeprefix("net.") for k in self.conditioning_keys()}
        bad = [k for k in result.missing_keys if k not in allowed]
        if bad or result.unexpected_keys:
            raise KeyError(f"backbone state dict mismatch: missing {bad}, unexpected {result.unexpected_keys}")
        return list(result.missing_keys)


#: The blocks :func:`checkpoint_blocks` recomputes: deepinv's DDPM++/NCSN++ ``UNetBlock`` and guided
#: diffusion's (``DiffUNet``) residual and attention blocks.
CHECKPOINTED_BLOCKS: tuple[type[nn.Module], ...] = (UNetBlock, ResBlock, AttentionBlock)


def checkpoint_blocks(model: nn.Module) -> nn.Module:
    """Gradient checkpointing of every U-Net block inside ``model`` (in place); returns ``model``.

    Each block (:data:`CHECKPOINTED_BLOCKS`) keeps only its inputs for the backward pass and recomputes its
    activations there (``torch.utils.checkpoint``, non-reentrant): the same values and gradients for
    about a third more compute, and the activation memory of one block instead of all of them, which is
    what lets the larger backbones train on large micro-batches. Without gradients (sampling) blocks run
    as usual. A diffusers model inside ``model`` gets diffusers' own ``enable_gradient_checkpointing()``
    (the same non-reentrant checkpointing of its blocks, also only while gradients are enabled)."""
    for block in model.modules():
        if isinstance(block, CHECKPOINTED_BLOCKS) and not getattr(block, "_checkpointed", False):
            block.forward = _checkpointed(block.forward)
            block._checkpointed = True
        elif _is_diffusers_model(block):
            block.enable_gradient_checkpointing()
    return model


def _is_diffusers_model(module: nn.Module) -> bool:
    """Whether ``module`` is a diffusers ``ModelMixin`` that supports gradient checkpointing."""
    return bool(getattr(module, "_supports_gradient_checkpointing", False)) and hasattr(
        module, "enable_gradient_checkpointing"
    )


def _checkpointed(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def run(*inputs: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return checkpoint(forward, *inputs, use_reentrant=False)
        return forward(*inputs)

    return run


def compile_backbone(model: nn.Module, **options) -> nn.Module:
    """``torch.compile`` the U-Net inside ``model`` (in place) and return ``model``.

    Only the backbone's ``forward_unet(x, c_noise, labels)`` is compiled: it sees plain tensors of fixed
    shapes whatever the operator, so one graph serves every task, while the matrix-valued
    preconditioning (a Python function of the operator type) stays eager. Compiling the whole model
    would recompile for every operator type. Modules without a DDPM++ backbone are compiled whole.
    """
    nets = [m for m in model.modules() if isinstance(m, NCSNpp)]
    if not nets:
        model.compile(**options)
    for net in nets:
        net.forward_unet = torch.compile(net.forward_unet, **options)
    return model
