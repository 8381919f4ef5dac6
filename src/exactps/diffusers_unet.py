"""diffusers ``UNet2DModel`` checkpoint folders as priors (optional extra: ``pip install "exactps[diffusers]"``).

A folder is either a pipeline (``model_index.json``, ``unet/config.json`` and its weights,
``scheduler/scheduler_config.json``) or a bare U-Net (``config.json`` and its weights) with
``scheduler/scheduler_config.json`` beside them. The scheduler config gives the DDPM schedule the network
was trained on (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps``:
:class:`~exactps.interpolants.VPDiscrete`) and what it predicts (``prediction_type``: ``epsilon`` or
``v_prediction``, :data:`~exactps.vpnets.PREDICTIONS`); :class:`DiffusersDenoiser` turns the U-Net into the
EPS denoiser of :mod:`exactps.vpnets` (``D(x; sigma^2 I) = x - sigma eps(x/sqrt(1+sigma^2), k(sigma))`` for
epsilon prediction). Images are in ``[-1, 1]``, as diffusers' DDPM pipelines train them.

Refused by name, before any work (:class:`DiffusersFolderError`, :class:`~exactps.vpnets.PredictionTypeError`):
a folder without a U-Net config or without a scheduler config, a network that is not a ``UNet2DModel``,
a class-conditional one, Fourier (variance-exploding) time embeddings or inputs centred from ``[0, 1]``,
a schedule that is not DDPM's (no betas, trained betas, zero terminal SNR), ``prediction_type="sample"``,
skip down blocks (they feed the raw input past the first convolution).

Fine-tuning: ``exactps train --init DIR`` builds a :class:`DiffusersDenoiser` of the folder's U-Net; the
U-Net's and scheduler's configs travel in ``ModelConfig.backbone`` (:meth:`DiffusersBackbone.record`, with
``ModelConfig.preset == "diffusers"``), so checkpoints resume and ``load_model`` rebuilds the network.
:func:`write_diffusers_folder` (``exactps export --format diffusers``) saves a fine-tuned network back as a
folder: the U-Net with its widened first convolution (a plain ``UNet2DModel``), the scheduler config, and
``exactps_conditioning.json`` / ``.safetensors`` (what it is conditioned on, the ``s_y`` embedding); this
module reads such a folder back to the same network.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from exactps.interpolants import BETA_SCHEDULES, VPDiscrete
from exactps.networks import CONDITIONINGS, BackbonePreset
from exactps.vpnets import VPDenoiser, get_prediction

__all__ = [
    "DIFFUSERS_PRESET",
    "EXTRAS_JSON",
    "EXTRAS_TENSORS",
    "DiffusersBackbone",
    "DiffusersDenoiser",
    "DiffusersFolder",
    "DiffusersFolderError",
    "from_diffusers_state",
    "is_diffusers_folder",
    "load_diffusers_weights",
    "read_diffusers_folder",
    "require_diffusers",
    "to_diffusers_state",
    "write_diffusers_folder",
]

_SCHEDULER = Path("scheduler") / "scheduler_config.json"


class DiffusersFolderError(ValueError):
    """A diffusers folder that exactps cannot use (missing config, unsupported network or schedule)."""


def require_diffusers() -> Any:
    """The ``diffusers`` module; :class:`DiffusersFolderError` saying how to install it otherwise."""
    try:
        import diffusers
    except ImportError as err:
        raise DiffusersFolderError(
            'diffusers checkpoints need the optional extra: pip install "exactps[diffusers]"'
        ) from err
    return diffusers


#: ``ModelConfig.preset`` of a network built from a diffusers U-Net (``ModelConfig.backbone`` records which).
DIFFUSERS_PRESET = "diffusers"
#: The files of an exported exactps model beside ``unet/`` and ``scheduler/`` (:func:`write_diffusers_folder`):
#: what the network is conditioned on and the weights that diffusers' ``UNet2DModel`` has no place for.
EXTRAS_JSON, EXTRAS_TENSORS = "exactps_conditioning.json", "exactps_conditioning.safetensors"
EXTRAS_FORMAT = "exactps-diffusers/1"


@dataclass(frozen=True)
class DiffusersBackbone:
    """A diffusers U-Net and its schedule: ``unet_config`` (the ``UNet2DModel``'s ``config.json``, its
    ``in_channels`` the image channels) and ``scheduler_config`` (``scheduler_config.json``), both checked.
    :meth:`record` / :meth:`from_record` is its JSON form (``ModelConfig.backbone``)."""

    unet_config: dict[str, Any]
    scheduler_config: dict[str, Any]

    @classmethod
    def from_configs(
        cls, unet_config: dict[str, Any], scheduler_config: dict[str, Any], where: str | Path = "backbone"
    ) -> DiffusersBackbone:
        """Check both configs (:class:`DiffusersFolderError` / :class:`~exactps.vpnets.PredictionTypeError`
        naming ``where``) and hold them."""
        _check_unet(unet_config, Path(where) / "config.json")
        backbone = cls(dict(unet_config), dict(scheduler_config))
        _schedule(backbone.scheduler_config, Path(where) / _SCHEDULER)
        get_prediction(backbone.prediction)
        return backbone

    @property
    def schedule(self) -> VPDiscrete:
        return _schedule(self.scheduler_config, _SCHEDULER)

    @property
    def prediction(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def channels(self) -> int:
        return int(self.unet_config.get("in_channels", 3))

    @property
    def resolution(self) -> int:
        size = self.unet_config.get("sample_size") or 64
        return int(size if isinstance(size, int) else size[0])

    @property
    def preset(self) -> BackbonePreset:
        """A :class:`~exactps.networks.BackbonePreset` describing the U-Net (resolution, widths, depth)."""
        return _preset(self.unet_config)

    def record(self) -> dict[str, Any]:
        """The JSON form: ``{"type": "diffusers", "unet": unet_config, "scheduler": scheduler_config}``."""
        return {"type": DIFFUSERS_PRESET, "unet": dict(self.unet_config), "scheduler": dict(self.scheduler_config)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DiffusersBackbone:
        """The inverse of :meth:`record`; :class:`DiffusersFolderError` for anything else."""
        if not isinstance(record, Mapping) or record.get("type") != DIFFUSERS_PRESET:
            raise DiffusersFolderError(f"not a diffusers backbone record: {record!r}")
        return cls.from_configs(record.get("unet") or {}, record.get("scheduler") or {})


@dataclass(frozen=True)
class DiffusersFolder:
    """What a diffusers folder holds: the U-Net's folder, its :class:`DiffusersBackbone` and, for a folder
    exactps exported (:func:`write_diffusers_folder`), its record ``exported`` (``EXTRAS_JSON``; None otherwise)."""

    unet_dir: Path
    backbone: DiffusersBackbone
    exported: dict[str, Any] | None = None

    @property
    def channels(self) -> int:
        return self.backbone.channels

    @property
    def resolution(self) -> int:
        return self.backbone.resolution


def is_diffusers_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder laid out as a diffusers checkpoint (a pipeline's ``model_index.json``, a
    ``unet/`` or ``scheduler/`` folder): such folders are read by :func:`read_diffusers_folder`."""
    if path is None:
        return False
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in ("model_index.json", "unet", "scheduler"))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DiffusersFolderError(f"{path.parent} has no {path.name}: {what}")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise DiffusersFolderError(f"{path} is not valid JSON: {err}") from err


def _check_unet(config: dict[str, Any], path: Path) -> None:
    name = config.get("_class_name")
    if name != "UNet2DModel":
        raise DiffusersFolderError(f"{path} describes a {name!r}, not a diffusers UNet2DModel")
    if config.get("num_class_embeds") or config.get("class_embed_type"):
        raise DiffusersFolderError(f"{path}: class-conditional UNet2DModels are not supported")
    if config.get("time_embedding_type", "positional") != "positional":
        raise DiffusersFolderError(
            f"{path}: time embedding {config['time_embedding_type']!r} is a variance-exploding (score SDE) network, "
            "not one trained on a DDPM schedule"
        )
    if any("Skip" in str(block) for block in config.get("down_block_types", ())):
        raise DiffusersFolderError(f"{path}: skip down blocks (score SDE's NCSN++ layout) are not supported")
    if config.get("center_input_sample"):
        raise DiffusersFolderError(f"{path}: center_input_sample (inputs in [0, 1]) is not supported")


def _schedule(config: dict[str, Any], path: Path) -> VPDiscrete:
    """The DDPM schedule of a scheduler config; :class:`DiffusersFolderError` for anything else."""
    keys = ("beta_schedule", "num_train_timesteps")
    if any(k not in config for k in keys) or config.get("trained_betas") is not None:
        raise DiffusersFolderError(
            f"{path} ({config.get('_class_name')}) is not a DDPM schedule: exactps needs beta_schedule, beta_start, "
            "beta_end and num_train_timesteps (trained betas are not supported)"
        )
    if config["beta_schedule"] not in BETA_SCHEDULES:
        raise DiffusersFolderError(
            f"{path}: beta_schedule {config['beta_schedule']!r} is not supported (known: {', '.join(BETA_SCHEDULES)})"
        )
    if config.get("rescale_betas_zero_snr"):
        raise DiffusersFolderError(f"{path}: zero terminal SNR schedules (rescale_betas_zero_snr) are not supported")
    b0, b1 = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 2e-2))
    return VPDiscrete(config["beta_schedule"], b0, b1, int(config["num_train_timesteps"]))


def read_diffusers_folder(path: str | Path) -> DiffusersFolder:
    """Read (and check) a diffusers folder: the U-Net's config (``unet/config.json``, else ``config.json``),
    ``scheduler/scheduler_config.json`` (in the folder, or in the parent of a ``unet/`` folder) and, if there,
    exactps' record ``EXTRAS_JSON`` (:func:`write_diffusers_folder`). Raises :class:`DiffusersFolderError` or
    :class:`~exactps.vpnets.PredictionTypeError` naming the problem."""
    root = Path(path)
    if not root.is_dir():
        raise DiffusersFolderError(f"{root} is not a folder")
    unet_dir = root / "unet" if (root / "unet").is_dir() else root
    if unet_dir.name == "unet" and not (root / _SCHEDULER).exists() and (root.parent / _SCHEDULER).exists():
        root = root.parent
    unet_config = _read_json(unet_dir / "config.json", "the UNet2DModel's config is needed")
    exported = _read_json(root / EXTRAS_JSON, "") if (root / EXTRAS_JSON).exists() else None
    if exported is not None:
        unet_config = _source_unet_config(unet_config, exported, root / EXTRAS_JSON)
    scheduler = _read_json(root / _SCHEDULER, "it says which DDPM schedule the U-Net was trained on")
    return DiffusersFolder(unet_dir, DiffusersBackbone.from_configs(unet_config, scheduler, unet_dir), exported)


def _source_unet_config(config: dict[str, Any], exported: dict[str, Any], path: Path) -> dict[str, Any]:
    """The config of the U-Net an exported one was widened from: ``in_channels`` the image channels ``C``
    (the exported first convolution reads ``C (1 + maps)`` channels, :data:`~exactps.networks.CONDITIONINGS`)."""
    if exported.get("format") != EXTRAS_FORMAT:
        raise DiffusersFolderError(f"{path} is not an exactps record (format {exported.get('format')!r})")
    conditioning, channels = exported.get("conditioning"), int(exported.get("channels", 0))
    if conditioning not in CONDITIONINGS:
        raise DiffusersFolderError(f"{path}: unknown conditioning {conditioning!r}")
    expected = channels * (1 + CONDITIONINGS[conditioning].extra_maps)
    if config.get("in_channels") != expected:
        raise DiffusersFolderError(
            f"{path} describes {channels}-channel images with {conditioning!r} conditioning, a U-Net reading "
            f"{expected} channels, but its config has in_channels {config.get('in_channels')}"
        )
    return {**config, "in_channels": channels}


def _preset(config: dict[str, Any]) -> BackbonePreset:
    """A :class:`~exactps.networks.BackbonePreset` describing the U-Net (its resolution, widths and depth)."""
    widths = tuple(int(c) for c in config.get("block_out_channels", (224, 448, 672, 896)))
    size = config.get("sample_size") or 64
    return BackbonePreset(
        img_resolution=int(size if isinstance(size, int) else size[0]),
        model_channels=widths[0],
        channel_mult=tuple(c // widths[0] for c in widths),
        num_blocks=int(config.get("layers_per_block", 2)),
        attn_resolutions=(),
        dropout=float(config.get("dropout", 0.0)),
        model_type=DIFFUSERS_PRESET,
    )


class DiffusersDenoiser(VPDenoiser):
    """A diffusers ``UNet2DModel`` as an EPS denoiser (:mod:`exactps.vpnets`): the U-Net and its schedule
    and prediction type (``backbone``, a :class:`DiffusersBackbone`)."""

    def __init__(self, backbone: DiffusersBackbone, conditioning: str = "scalar", sigma_data: float = 0.5):
        self.backbone = backbone
        super().__init__(
            backbone.preset, backbone.channels, conditioning, sigma_data, backbone.schedule, backbone.prediction
        )

    @classmethod
    def from_folder(cls, folder: DiffusersFolder, conditioning: str = "scalar", sigma_data: float = 0.5):
        """The network of ``folder`` (random weights; load them with :func:`load_diffusers_weights`)."""
        return cls(folder.backbone, conditioning, sigma_data)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments: ``DiffusersDenoiser.from_config(model.config())``."""
        return {"backbone": self.backbone.record(), "conditioning": self.conditioning, "sigma_data": self.sigma_data}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DiffusersDenoiser:
        """A freshly initialised model with the network described by :meth:`config`."""
        cfg = dict(config)
        return cls(DiffusersBackbone.from_record(cfg.pop("backbone")), **cfg)

    def build_unet(self) -> nn.Module:
        diffusers = require_diffusers()
        config = {k: v for k, v in self.backbone.unet_config.items() if not k.startswith("_")}
        net = diffusers.UNet2DModel.from_config(config)
        net.time_embedding.register_forward_hook(self._add_embedding)
        return net.train()

    def first_conv(self) -> tuple[nn.Module, str]:
        return self.net, "conv_in"

    def time_embedding_dim(self, net: nn.Module) -> int:
        return net.time_embedding.linear_2.out_features

    def run_network(self, x: Tensor, timestep: Tensor) -> Tensor:
        return self.net(x, timestep).sample


# -- weights: diffusers' keys <-> the EPS denoiser's --------------------------------------------------------


def to_diffusers_state(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A :class:`DiffusersDenoiser` state dict as ``(U-Net state, extras)``: the ``net.*`` tensors in
    ``UNet2DModel``'s keys, the widened first convolution as one convolution on all input channels
    (``conv([x, maps]; [W, W_extra]) = conv(x; W) + conv(maps; W_extra)``, one bias), and the rest (the
    ``s_y`` embedding ``sigma_y_embed.*``) as extras."""
    unet = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    extras = {k: v for k, v in state.items() if not k.startswith("net.")}
    extra = unet.pop("conv_in.extra_weight", None)
    if extra is not None:
        unet["conv_in.weight"] = torch.cat([unet["conv_in.weight"], extra.to(unet["conv_in.weight"].dtype)], dim=1)
    return unet, extras


def from_diffusers_state(unet: Mapping[str, Tensor], extras: Mapping[str, Tensor], channels: int) -> dict[str, Tensor]:
    """The inverse of :func:`to_diffusers_state`: input channels of ``conv_in`` beyond the first ``channels``
    (the image's) become ``net.conv_in.extra_weight``."""
    state = {f"net.{k}": v for k, v in unet.items()}
    weight = state.get("net.conv_in.weight")
    if weight is not None and weight.shape[1] > channels:
        state["net.conv_in.weight"] = weight[:, :channels].contiguous()
        state["net.conv_in.extra_weight"] = weight[:, channels:].contiguous()
    return {**state, **extras}


def load_diffusers_weights(folder: DiffusersFolder) -> dict[str, Tensor]:
    """The weights of ``folder`` as a :class:`DiffusersDenoiser` state dict (:func:`from_diffusers_state`): the
    U-Net's through diffusers' own loader (``UNet2DModel.from_pretrained``), and an exported folder's extras."""
    diffusers = require_diffusers()
    try:
        unet = diffusers.UNet2DModel.from_pretrained(folder.unet_dir).state_dict()
    except (OSError, ValueError, RuntimeError) as err:
        raise DiffusersFolderError(f"cannot read the UNet2DModel weights in {folder.unet_dir}: {err}") from err
    extras: dict[str, Tensor] = {}
    if folder.exported and folder.exported.get("extras"):
        path = _root(folder) / EXTRAS_TENSORS
        try:
            extras = load_file(str(path))
        except (OSError, SafetensorError) as err:
            raise DiffusersFolderError(f"cannot read exactps' conditioning weights {path}: {err}") from err
    return from_diffusers_state(unet, extras, folder.channels)


def _root(folder: DiffusersFolder) -> Path:
    """The folder holding ``unet/`` (or the bare U-Net's folder)."""
    return folder.unet_dir.parent if folder.unet_dir.name == "unet" else folder.unet_dir


# -- writing a fine-tuned network back as a diffusers folder ----------------------------------------------


def write_diffusers_folder(
    out: str | Path,
    backbone: DiffusersBackbone,
    state: Mapping[str, Tensor],
    record: Mapping[str, Any],
    force: bool = False,
) -> Path:
    """Write a :class:`DiffusersDenoiser`'s ``state`` (tensors in the dtype to save) as the folder ``out``:

    * ``unet/``: the ``UNet2DModel`` (``save_pretrained``), its first convolution widened to the conditioning
      maps and ``in_channels`` updated (:func:`to_diffusers_state`): diffusers loads it as it is;
    * ``scheduler/scheduler_config.json``: the source's schedule, unchanged;
    * ``EXTRAS_JSON`` (``record``: objective, conditioning, image channels, ``sigma_data``, training) and
      ``EXTRAS_TENSORS`` (the ``s_y`` embedding, if any): what exactps needs to rebuild the EPS denoiser;
    * ``model_index.json`` (a ``DDPMPipeline``) only where the network is still a plain unconditional U-Net.

    Written into a temporary folder, then moved into place; an existing ``out`` is an error unless ``force``.
    :func:`read_diffusers_folder` and :func:`load_diffusers_weights` read it back. Returns ``out``.
    """
    diffusers = require_diffusers()
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists (use --force to overwrite it)")
    unet_state, extras = to_diffusers_state(state)
    config = {k: v for k, v in backbone.unet_config.items() if not k.startswith("_")}
    config["in_channels"] = int(unet_state["conv_in.weight"].shape[1])
    unet = diffusers.UNet2DModel.from_config(config)
    unet.load_state_dict(unet_state, strict=True)  # it is a UNet2DModel: fail before writing anything
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    unet.to(next(iter(unet_state.values())).dtype).save_pretrained(tmp / "unet", safe_serialization=True)
    (tmp / "scheduler").mkdir()
    (tmp / _SCHEDULER).write_text(json.dumps(backbone.scheduler_config, indent=2))
    (tmp / EXTRAS_JSON).write_text(json.dumps({**record, "format": EXTRAS_FORMAT, "extras": sorted(extras)}, indent=2))
    if extras:
        save_file({k: v.contiguous() for k, v in extras.items()}, str(tmp / EXTRAS_TENSORS))
    elif config["in_channels"] == backbone.channels:
        pipeline = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}
        pipeline["scheduler"] = ["diffusers", backbone.scheduler_config.get("_class_name", "DDPMScheduler")]
        (tmp / "model_index.json").write_text(json.dumps(pipeline, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
