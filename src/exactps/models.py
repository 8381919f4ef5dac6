"""THE objective registry, the network configuration, and building / initialising networks.

An *objective* says what a network is trained to be and how it is fed (:data:`OBJECTIVES`); nothing
else in exactps compares objective names:

* ``denoiser``: ``A = 0`` (``m = x_t/a``, ``S_t = rho^2 I``), the unconditional EDM denoiser, e.g. to
  pretrain; it samples the prior only;
* ``eps``: the EPS denoiser ``D(m; S_t)`` at the pivot (:func:`exactps.objectives.eps_loss`), from
  scratch or fine-tuned from an unconditional model (:func:`load_pretrained`);
* ``conditional``: the training-based baseline (:mod:`exactps.conditional`), same backbone, loss and
  draws, the observation fed as an image (masked, upsampled or blurred ``y``) by channel concatenation.

Every objective minimises :func:`exactps.objectives.regression_loss` with its own network inputs, and
samples through its own x0-predictor (:class:`~exactps.posterior.PosteriorPredictor` or
:class:`~exactps.conditional.ConditionalPredictor`).

A trained network is read back with :func:`exactps.loading.load_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from exactps.admunet import EDM_ADM_MODEL_TYPE, ADMUNetDenoiser, check_class_labels
from exactps.checkpoint import load_state_dict_file
from exactps.conditional import ConditionalDenoiser, ConditionalPredictor, ConditionalUNet, conditional_network_inputs
from exactps.diffusers_unet import (
    DIFFUSERS_PRESET,
    DiffusersBackbone,
    DiffusersDenoiser,
    is_diffusers_folder,
    load_diffusers_weights,
    read_diffusers_folder,
)
from exactps.interpolants import Interpolant, X0Predictor
from exactps.networks import DEFAULT_CONDITIONING, PRESETS, VP_MODEL_TYPES, BackbonePreset, EPSDenoiser
from exactps.objectives import NetworkInputs, pivot_or_isotropic, regression_loss
from exactps.operators.base import LinearOperator
from exactps.posterior import PosteriorPredictor
from exactps.published import is_published, published_state_dict
from exactps.vpnets import ADMDenoiser

__all__ = [
    "OBJECTIVES",
    "ModelConfig",
    "Objective",
    "PretrainedReport",
    "build_model",
    "get_objective",
    "load_pretrained",
]


@dataclass
class ModelConfig:
    """The network: a backbone preset of :mod:`exactps.networks` and its conditioning.

    ``conditioning`` is the EPS denoiser's (``none``/``scalar``/``map``; ignored by the conditional
    baseline, which always sees ``s_y``); ``resolution`` is the training image size (default: the
    preset's). ``backbone`` describes a network that is not a preset (JSON): with ``preset == "diffusers"``,
    a diffusers U-Net and its schedule (:meth:`exactps.diffusers_unet.DiffusersBackbone.record`); None
    for the presets (and in records written before it existed). ``class_labels`` is the explicit label
    vector of a class-conditional network (a name of :data:`exactps.admunet.CLASS_LABELS`; None for the
    others, and a class-conditional network without it is refused: :class:`~exactps.admunet.ClassLabelsError`);
    with ``class_labels == "folder"`` (per-image labels), ``class_names`` are the classes in index order
    (:func:`exactps.data.class_names` of the training folder), so that any folder read for this network
    later is numbered the same way.
    """

    preset: str = "small-64"
    channels: int = 3
    conditioning: str = DEFAULT_CONDITIONING
    sigma_data: float = 0.5
    resolution: int | None = None
    backbone: dict[str, Any] | None = None
    class_labels: str | None = None
    class_names: list[str] | None = None

    @classmethod
    def from_diffusers(cls, backbone: DiffusersBackbone, conditioning: str, sigma_data: float = 0.5) -> ModelConfig:
        """The configuration of a :class:`~exactps.diffusers_unet.DiffusersDenoiser` over ``backbone``."""
        return cls(
            DIFFUSERS_PRESET, backbone.channels, conditioning, sigma_data, backbone.resolution, backbone.record()
        )

    @property
    def diffusers_backbone(self) -> DiffusersBackbone | None:
        """The diffusers U-Net of ``backbone`` (None for a preset); ``ValueError`` where the two disagree."""
        if (self.preset == DIFFUSERS_PRESET) != (self.backbone is not None):
            raise ValueError(
                f"model_config preset {self.preset!r} with backbone {self.backbone!r}: a diffusers network needs "
                f"preset {DIFFUSERS_PRESET!r} and its backbone record, a preset no backbone record"
            )
        return None if self.backbone is None else DiffusersBackbone.from_record(self.backbone)

    @property
    def backbone_preset(self) -> BackbonePreset:
        """The U-Net's :class:`~exactps.networks.BackbonePreset` (a diffusers U-Net's as described by it)."""
        backbone = self.diffusers_backbone
        if backbone is not None:
            return backbone.preset
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[self.preset]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})

    @property
    def image_size(self) -> int:
        """The training image size: ``resolution``, else the preset's."""
        return int(self.resolution or self.backbone_preset.img_resolution)

    @property
    def img_shape(self) -> tuple[int, int, int]:
        return (int(self.channels), self.image_size, self.image_size)


# -- the registry ----------------------------------------------------------------------------------------


#: ``predictor(model, interp, operator, y, s_y)``: the ``(x_t, t) -> x0`` predictor of a trained network.
PredictorFactory = Callable[[Callable[..., Tensor], Interpolant, "LinearOperator | None", "Tensor | None", Any],
                            X0Predictor]  # fmt: skip


@dataclass(frozen=True)
class Objective:
    """One entry of :data:`OBJECTIVES`: the network (``build``), what it is fed for one draw
    (``inputs``, see :data:`~exactps.objectives.NetworkInputs`), how it samples (``predictor``), whether
    it is trained with measurements (``measures``; False: ``A = 0`` only) and its default EPS
    conditioning (``conditioning``; None where the network has no such choice)."""

    build: Callable[[ModelConfig], nn.Module]
    inputs: NetworkInputs
    predictor: PredictorFactory
    measures: bool
    conditioning: str | None

    def loss(
        self,
        model: Callable[..., Tensor],
        x0: Tensor,
        operator: LinearOperator | None,
        sigma_y: float | Tensor,
        generator: torch.Generator | None = None,
        **kw: float,
    ) -> Tensor:
        """The training loss of one batch (:func:`exactps.objectives.regression_loss` with ``inputs``)."""
        return regression_loss(model, self.inputs, x0, operator, sigma_y, generator, **kw)


def _eps_network(config: ModelConfig) -> nn.Module:
    """:class:`~exactps.networks.EPSDenoiser`, :class:`~exactps.vpnets.ADMDenoiser` for an ``adm`` preset,
    :class:`~exactps.admunet.ADMUNetDenoiser` for EDM's class-conditional ADM (``adm-64``), or
    :class:`~exactps.diffusers_unet.DiffusersDenoiser` for a diffusers backbone."""
    backbone = config.diffusers_backbone
    model_type = config.backbone_preset.model_type
    check_class_labels(model_type, config.class_labels, f"the {config.preset!r} network")
    if backbone is not None:
        return DiffusersDenoiser(backbone, config.conditioning, config.sigma_data)
    if model_type == EDM_ADM_MODEL_TYPE:
        labels = config.class_labels
        return ADMUNetDenoiser(config.preset, config.channels, config.conditioning, config.sigma_data, labels)
    if model_type in VP_MODEL_TYPES:
        return ADMDenoiser(config.preset, config.channels, config.conditioning, config.sigma_data)
    return EPSDenoiser(config.preset, config.channels, config.conditioning, config.sigma_data)


def _conditional_network(config: ModelConfig) -> nn.Module:
    if config.diffusers_backbone is not None:
        raise ValueError(
            "the conditional baseline is built on a DDPM++/NCSN++ preset (the observation enters as input "
            "channels of its U-Net), not on a diffusers U-Net: pass --preset"
        )
    backbone = ConditionalUNet(config.preset, config.channels, config.sigma_data)
    return ConditionalDenoiser(backbone, config.channels, config.sigma_data)


OBJECTIVES: dict[str, Objective] = {
    "denoiser": Objective(_eps_network, pivot_or_isotropic, PosteriorPredictor, measures=False, conditioning="none"),
    "eps": Objective(_eps_network, pivot_or_isotropic, PosteriorPredictor, True, DEFAULT_CONDITIONING),
    "conditional": Objective(_conditional_network, conditional_network_inputs, ConditionalPredictor, True, None),
}


def get_objective(name: str) -> Objective:
    """The :class:`Objective` called ``name``; ``ValueError`` listing the choices otherwise."""
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {name!r}") from None


def build_model(objective: str, config: ModelConfig) -> nn.Module:
    """The network of ``objective`` (random weights): :class:`~exactps.networks.EPSDenoiser` for
    ``denoiser``/``eps``, :class:`ConditionalDenoiser` over :class:`ConditionalUNet` (same preset) for
    ``conditional``."""
    return get_objective(objective).build(config)


# -- fine-tuning from a pretrained checkpoint ---------------------------------------------------------


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` did: ``loaded`` tensors, allowed ``missing`` (zero-initialised
    conditioning) keys and ``unexpected`` keys (always empty: they raise)."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        miss = f"; kept at their zero initialisation: {', '.join(self.missing)}" if self.missing else ""
        return f"loaded {self.loaded} pretrained tensors from {self.path}{miss}"


def load_pretrained(model: nn.Module, path: str | Path, prefer_ema: bool = True) -> PretrainedReport:
    """Initialise ``model`` from a checkpoint (EMA weights by default), a state-dict file or a published
    prior's name (:data:`exactps.published.PUBLISHED`, fetched by deepinv).

    Every pretrained tensor must load; the only keys allowed to be missing are the model's
    zero-initialised conditioning weights (``model.conditioning_keys()``). Any other missing or
    unexpected key, or a shape mismatch, raises ``ValueError`` naming the file.
    """
    if is_published(path):
        state = published_state_dict(str(path))
    elif is_diffusers_folder(path):  # into a DiffusersDenoiser of the folder's U-Net
        state = load_diffusers_weights(read_diffusers_folder(path))
    else:
        state = load_state_dict_file(path, prefer_ema)
    try:
        if hasattr(model, "load_backbone"):
            missing = _own_keys(model, model.load_backbone(state))
            return PretrainedReport(str(path), len(state), missing)
        result = model.load_state_dict(state, strict=False)
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path} does not fit the model: {err}") from err
    allowed = set(getattr(model, "conditioning_keys", list)())
    bad = [k for k in result.missing_keys if k not in allowed]
    if bad or result.unexpected_keys:
        raise ValueError(f"{path} does not fit the model: missing {bad}, unexpected {result.unexpected_keys}")
    return PretrainedReport(str(path), len(state), list(result.missing_keys))


def _own_keys(model: nn.Module, keys: Iterable[str]) -> list[str]:
    """``keys`` (possibly relative to a submodule, e.g. the backbone) as keys of ``model.state_dict()``."""
    own = list(model.state_dict())
    out = []
    for k in keys:
        matches = [o for o in own if o == k or o.endswith(f".{k}")]
        out.append(matches[0] if len(matches) == 1 else k)
    return out
