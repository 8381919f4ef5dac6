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
a schedule that is not DDPM's (no betas, trained betas, zero terminal SNR), ``prediction_type="sample"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from exactps.interpolants import BETA_SCHEDULES, VPDiscrete
from exactps.networks import BackbonePreset
from exactps.vpnets import VPDenoiser, get_prediction

__all__ = [
    "DiffusersDenoiser",
    "DiffusersFolder",
    "DiffusersFolderError",
    "is_diffusers_folder",
    "load_diffusers_weights",
    "read_diffusers_folder",
    "require_diffusers",
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


@dataclass(frozen=True)
class DiffusersFolder:
    """What a diffusers folder holds: the U-Net's folder and config, its schedule and prediction type."""

    unet_dir: Path
    unet_config: dict[str, Any]
    schedule: VPDiscrete
    prediction: str

    @property
    def channels(self) -> int:
        return int(self.unet_config.get("in_channels", 3))

    @property
    def resolution(self) -> int:
        size = self.unet_config.get("sample_size") or 64
        return int(size if isinstance(size, int) else size[0])


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
    """Read (and check) a diffusers folder: the U-Net's config (``unet/config.json``, else ``config.json``) and
    ``scheduler/scheduler_config.json`` (in the folder, or in the parent of a ``unet/`` folder). Raises
    :class:`DiffusersFolderError` or :class:`~exactps.vpnets.PredictionTypeError` naming the problem."""
    root = Path(path)
    if not root.is_dir():
        raise DiffusersFolderError(f"{root} is not a folder")
    unet_dir = root / "unet" if (root / "unet").is_dir() else root
    if unet_dir.name == "unet" and not (root / _SCHEDULER).exists() and (root.parent / _SCHEDULER).exists():
        root = root.parent
    unet_config = _read_json(unet_dir / "config.json", "the UNet2DModel's config is needed")
    _check_unet(unet_config, unet_dir / "config.json")
    scheduler = _read_json(root / _SCHEDULER, "it says which DDPM schedule the U-Net was trained on")
    schedule = _schedule(scheduler, root / _SCHEDULER)
    prediction = scheduler.get("prediction_type", "epsilon")
    get_prediction(prediction)
    return DiffusersFolder(unet_dir, unet_config, schedule, prediction)


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
        model_type="diffusers",
    )


class DiffusersDenoiser(VPDenoiser):
    """A diffusers ``UNet2DModel`` as an EPS denoiser (:mod:`exactps.vpnets`): ``unet_config`` (its
    ``config.json``), ``schedule`` and ``prediction`` (from the scheduler config)."""

    def __init__(
        self,
        unet_config: dict[str, Any],
        schedule: VPDiscrete,
        prediction: str,
        conditioning: str = "scalar",
        sigma_data: float = 0.5,
    ):
        self.unet_config = dict(unet_config)
        channels = int(unet_config.get("in_channels", 3))
        super().__init__(_preset(unet_config), channels, conditioning, sigma_data, schedule, prediction)

    @classmethod
    def from_folder(cls, folder: DiffusersFolder, conditioning: str = "scalar", sigma_data: float = 0.5):
        """The network of ``folder`` (random weights; load them with :func:`load_diffusers_weights`)."""
        return cls(folder.unet_config, folder.schedule, folder.prediction, conditioning, sigma_data)

    def build_unet(self) -> nn.Module:
        diffusers = require_diffusers()
        config = {k: v for k, v in self.unet_config.items() if not k.startswith("_")}
        net = diffusers.UNet2DModel.from_config(config)
        net.time_embedding.register_forward_hook(self._add_embedding)
        return net.train()

    def first_conv(self) -> tuple[nn.Module, str]:
        return self.net, "conv_in"

    def time_embedding_dim(self, net: nn.Module) -> int:
        return net.time_embedding.linear_2.out_features

    def run_network(self, x: Tensor, timestep: Tensor) -> Tensor:
        return self.net(x, timestep).sample


def load_diffusers_weights(folder: DiffusersFolder) -> dict[str, Tensor]:
    """The U-Net's weights (diffusers' own loader, ``UNet2DModel.from_pretrained``) as a state dict."""
    diffusers = require_diffusers()
    try:
        unet = diffusers.UNet2DModel.from_pretrained(folder.unet_dir)
    except (OSError, ValueError, RuntimeError) as err:
        raise DiffusersFolderError(f"cannot read the UNet2DModel weights in {folder.unet_dir}: {err}") from err
    return unet.state_dict()
