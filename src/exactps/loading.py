"""Trained models from files: load a run directory, a checkpoint or an exported model; export one.

* :func:`load_model`: a run directory (its latest checkpoint), a checkpoint ``step-*.json``, an
  exported model or a published prior's name (:func:`load_published`), as a :class:`LoadedModel` in
  eval mode (EMA weights by default);
* :func:`export_model`: ``<out>.safetensors`` (EMA weights, float16 by default) and ``<out>.json``
  (what the network is and what it was trained on), the form in which small models are shared;
* :func:`export_diffusers`: a network fine-tuned from a diffusers U-Net, back as a diffusers folder.

Sampling with a loaded model is :func:`exactps.inference.posterior_samples`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from exactps.admunet import check_class_labels
from exactps.checkpoint import (
    FORMAT,
    MODEL_FORMAT,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_model_file,
    model_file_paths,
    record_format,
    save_model_file,
)
from exactps.diffusers_unet import (
    is_diffusers_folder,
    load_diffusers_weights,
    read_diffusers_folder,
    write_diffusers_folder,
)
from exactps.models import OBJECTIVES, ModelConfig, Objective, build_model, get_objective
from exactps.networks import PRESETS
from exactps.published import get_published, is_published, published_state_dict
from exactps.runtime import default_device
from exactps.tasks import NO_MEASUREMENT

__all__ = [
    "LoadedModel",
    "export_diffusers",
    "export_model",
    "load_diffusers",
    "load_model",
    "load_published",
    "published_model_config",
]


@dataclass
class LoadedModel:
    """A trained network ready to sample: ``model`` (eval mode, no gradients), its ``objective`` (a
    name of :data:`OBJECTIVES`), ``model_config``, the ``source`` file it was read from (a checkpoint's
    or an exported model's JSON record) and, when recorded, the training progress (``images_seen``,
    ``step``) and training distribution (``tasks``, ``sigma_y``, ``train_data``)."""

    model: nn.Module
    objective: str
    model_config: ModelConfig
    source: Path
    images_seen: int | None = None
    step: int | None = None
    tasks: tuple[str, ...] | None = None
    sigma_y: float | tuple[float, ...] | None = None
    train_data: str | None = None  # "builtin", the training image folder's name, or a published prior's data

    @property
    def spec(self) -> Objective:
        """The registry entry of :attr:`objective`."""
        return get_objective(self.objective)

    @property
    def resolution(self) -> int:
        """The training image size (``model_config.resolution``, else the preset's)."""
        return self.model_config.image_size

    @property
    def img_shape(self) -> tuple[int, int, int]:
        return self.model_config.img_shape

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> str:
        """One line: objective, network, progress and training distribution."""
        c, h, w = self.img_shape
        text = f"{self.objective} model ({self.model_config.preset}, {c}x{h}x{w}"
        if self.spec.conditioning is not None:
            text += f", {self.model_config.conditioning} conditioning"
        text += ")"
        if self.step is not None:
            text += f", step {self.step}"
        if self.images_seen is not None:
            text += f" ({self.images_seen} images seen)"
        if self.tasks and self.spec.measures:
            text += f", trained on {','.join(self.tasks)} with s_y {_format_sigma_y(self.sigma_y)}"
        return text


def _format_sigma_y(sigma_y: Any) -> str:
    if isinstance(sigma_y, list | tuple):
        return "-".join(f"{float(v):g}" for v in sigma_y)
    return "?" if sigma_y is None else f"{float(sigma_y):g}"


@dataclass
class _Weights:
    """What a model file holds: the state dict and its description (internal)."""

    state: dict[str, Tensor]
    objective: str
    model_config: ModelConfig
    source: Path
    ema: bool
    images_seen: int | None
    step: int | None
    train: dict[str, Any]


def _resolve(path: str | Path) -> tuple[str, Path]:
    """``("checkpoint" | "export", JSON record)`` for a run directory, checkpoint or exported model."""
    p = Path(path)
    if p.is_dir():
        return "checkpoint", find_checkpoint(p)
    if p.suffix == ".safetensors":
        json_path = p.with_suffix(".json")
        if p.exists() and not json_path.exists():
            raise ValueError(
                f"{p} has no record {json_path.name} beside it: a bare state dict does not say which network "
                "it holds (pass a run directory, a checkpoint step-*.json or an exported model)"
            )
    elif p.suffix == ".json":
        json_path = p
    else:
        json_path = model_file_paths(p)[0]  # an exported model named without its suffix
    if not json_path.exists():
        raise FileNotFoundError(
            f"model {p} does not exist (expected a run directory, a checkpoint step-*.json or an exported model)"
        )
    fmt = record_format(json_path)
    if fmt == MODEL_FORMAT:
        return "export", json_path
    if fmt is None or fmt == FORMAT:  # unreadable records get load_checkpoint's error
        return "checkpoint", json_path
    raise CheckpointError(
        f"{json_path} is neither an exactps checkpoint nor an exported model (format {fmt!r}, "
        f"expected {FORMAT!r} or {MODEL_FORMAT!r})"
    )


def _model_record(record: dict[str, Any], json_path: Path) -> tuple[str, ModelConfig]:
    """The objective and model configuration a record (or its run's ``config.json``) describes."""
    objective, mcfg = record.get("objective"), record.get("model_config") or {}
    run_config = json_path.parent.parent / "config.json"
    if (not mcfg or objective is None) and run_config.exists():
        try:
            stored = json.loads(run_config.read_text())
        except (OSError, ValueError):
            stored = {}
        objective = objective or stored.get("objective")
        mcfg = mcfg or stored.get("model_config") or {}
    known = isinstance(objective, str) and objective in OBJECTIVES
    if not known or not isinstance(mcfg, dict) or "preset" not in mcfg:
        raise ValueError(
            f"{json_path} does not record which network it holds (objective {objective!r}, model_config "
            f"{mcfg!r}); load it with exactps.checkpoint.load_checkpoint and build the network yourself"
        )
    return objective, ModelConfig.from_dict(mcfg)


def _train_summary(objective: str, train_config: dict[str, Any], data: str | None = None) -> dict[str, Any]:
    """What a shared model records of its training (a model that never measures only saw ``A = 0``: task
    ``none``); the data as ``builtin`` or the image folder's name (never a full path)."""
    keys = ("tasks", "task_probs", "sigma_y", "steps", "batch_size", "seed")
    summary = {k: train_config[k] for k in keys if k in train_config}
    if data is not None:
        summary["data"] = data if data == "builtin" else Path(data).name
    if not get_objective(objective).measures:
        summary.update(tasks=[NO_MEASUREMENT], task_probs=None)
    return summary


def _read_weights(path: str | Path, prefer_ema: bool = True) -> _Weights:
    if is_diffusers_folder(path):
        return _diffusers_weights(path)
    kind, json_path = _resolve(path)
    if kind == "export":
        record, state = load_model_file(json_path)
        objective, mcfg = _model_record(record, json_path)
        return _Weights(
            state,
            objective,
            mcfg,
            json_path,
            bool(record.get("ema", True)),
            record.get("images_seen"),
            record.get("step"),
            dict(record.get("train") or {}),
        )
    ckpt = load_checkpoint(json_path)
    objective, mcfg = _model_record(ckpt.meta, ckpt.path)
    use_ema = bool(prefer_ema and ckpt.ema)
    position = ckpt.meta.get("data_position") or {}
    return _Weights(
        ckpt.ema if use_ema else ckpt.model,  # type: ignore[arg-type]
        objective,
        mcfg,
        ckpt.path,
        use_ema,
        position.get("images_seen"),
        ckpt.step,
        _train_summary(objective, ckpt.meta.get("train_config") or {}, (ckpt.meta.get("run") or {}).get("data")),
    )


def _diffusers_weights(path: str | Path) -> _Weights:
    """A diffusers folder's weights: a plain folder as an unconditional ``denoiser`` (no conditioning
    weights), one :func:`export_diffusers` wrote as the model its ``EXTRAS_JSON`` record describes."""
    folder = read_diffusers_folder(path)
    record = folder.exported or {}
    conditioning = record.get("conditioning", "none")
    config = ModelConfig.from_diffusers(folder.backbone, conditioning, float(record.get("sigma_data", 0.5)))
    config = replace(config, resolution=record.get("resolution") or config.resolution)
    train = dict(record.get("train") or {"data": Path(path).name})
    state = load_diffusers_weights(folder)
    objective = record.get("objective", "denoiser")
    return _Weights(state, objective, config, Path(path), True, record.get("images_seen"), record.get("step"), train)


def _loaded(w: _Weights, model: nn.Module) -> LoadedModel:
    """The :class:`LoadedModel` of ``model``, built from ``w``."""
    tasks = tuple(w.train["tasks"]) if w.train.get("tasks") else None
    sigma_y = w.train.get("sigma_y")
    sigma_y = tuple(sigma_y) if isinstance(sigma_y, list) else sigma_y
    return LoadedModel(
        model, w.objective, w.model_config, w.source, w.images_seen, w.step, tasks, sigma_y, w.train.get("data")
    )


def _build(weights: _Weights, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The network of ``weights``, strictly loaded, in eval mode without gradients."""
    src = weights.source
    bad = [k for k, v in weights.state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"the weights in {src} hold NaN or infinite values ({', '.join(bad[:3])}, ...)")
    try:
        with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
            model = build_model(weights.objective, weights.model_config)
    except ValueError as err:
        raise ValueError(f"cannot build the network {src} describes: {err}") from err
    try:
        model.load_state_dict(weights.state, strict=True)
    except RuntimeError as err:
        cfg = weights.model_config
        raise ValueError(
            f"the weights in {src} do not fit a {weights.objective} model with preset {cfg.preset!r}, "
            f"{cfg.channels} channels and {cfg.conditioning!r} conditioning: {err}"
        ) from err
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def published_model_config(name: str, class_labels: str | None = None) -> ModelConfig:
    """The :class:`~exactps.models.ModelConfig` of the published prior ``name`` as :func:`load_published` builds
    it, without fetching anything; :class:`~exactps.admunet.ClassLabelsError` for a class-conditional prior
    without ``class_labels`` (or ``class_labels`` for one that takes none)."""
    prior = get_published(name)
    check_class_labels(PRESETS[prior.preset].model_type, class_labels, f"the published prior {name}")
    return ModelConfig(prior.preset, prior.channels, "none", prior.sigma_data, prior.resolution, None, class_labels)


def load_published(
    name: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    class_labels: str | None = None,
) -> LoadedModel:
    """The published prior ``name`` (:data:`exactps.published.PUBLISHED`) as an unconditional
    ``denoiser`` model (no conditioning weights): exactly the published EDM denoiser. A class-conditional
    prior needs ``class_labels`` (:data:`exactps.admunet.CLASS_LABELS`); without it
    :class:`~exactps.admunet.ClassLabelsError` is raised before anything is fetched."""
    prior = get_published(name)
    config = published_model_config(name, class_labels)
    state = {f"net.{k}": v for k, v in published_state_dict(name).items()}
    weights = _Weights(state, "denoiser", config, Path(name), True, None, None, {"data": prior.data})
    dev = torch.device(device) if device is not None else default_device()
    model = _build(weights, dev, dtype)
    return LoadedModel(model, "denoiser", config, Path(name), train_data=prior.data)


def load_diffusers(
    path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """A diffusers ``UNet2DModel`` folder (:mod:`exactps.diffusers_unet`): a plain one as an unconditional
    ``denoiser`` model (the U-Net's own denoiser on its DDPM schedule, no conditioning weights), one that
    :func:`export_diffusers` wrote as the model it was exported from."""
    dev = torch.device(device) if device is not None else default_device()
    w = _diffusers_weights(path)
    return _loaded(w, _build(w, dev, dtype))


def load_model(
    path: str | Path,
    device: torch.device | str | None = None,
    prefer_ema: bool = True,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a trained network for sampling.

    ``path``: a run directory of ``exactps train`` (its latest checkpoint), a checkpoint's
    ``step-*.json`` (or ``.safetensors``), an exported model (``NAME.json``, ``NAME.safetensors``
    or ``NAME``), the name of a published prior (:func:`load_published`) or a diffusers folder
    (:func:`load_diffusers`). Checkpoints give their EMA
    weights if ``prefer_ema`` (and they have them); exported weights are cast to ``dtype`` (float32 by
    default). ``device`` defaults to CUDA when available.

    Raises ``FileNotFoundError`` for a missing path or file and ``ValueError`` (``CheckpointError``
    for corrupt or truncated files) when the files cannot be used, each naming the file.
    """
    if is_published(path):
        return load_published(str(path), device, dtype)
    w = _read_weights(path, prefer_ema)
    dev = torch.device(device) if device is not None else default_device()
    return _loaded(w, _build(w, dev, dtype))


def export_model(
    source: str | Path,
    out: str | Path,
    dtype: torch.dtype = torch.float16,
    force: bool = False,
    prefer_ema: bool = True,
) -> Path:
    """Write ``<out>.safetensors`` (the EMA weights of ``source`` cast to ``dtype``) and ``<out>.json``
    (format tag, objective, model configuration, training tasks and ``s_y``, images seen, SHA-256 and
    size of the weights), atomically; ``out`` may carry either suffix. Returns the JSON path.

    ``source`` is anything :func:`load_model` reads. Existing files are an error unless ``force``.
    The weights are checked to load into the network before anything is written.
    """
    json_path, tensor_path = model_file_paths(out)
    if not force:
        for p in (json_path, tensor_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists (use --force to overwrite it)")
    weights = _read_weights(source, prefer_ema)
    _build(weights, torch.device("cpu"), torch.float32)  # fits the network: fail before writing
    state = _cast(weights, dtype)
    meta = {
        "objective": weights.objective,
        "model_config": asdict(weights.model_config),
        "train": weights.train,
        "images_seen": weights.images_seen,
        "step": weights.step,
        "ema": weights.ema,
        "dtype": str(dtype).removeprefix("torch."),
        "exported_from": weights.source.name,
        "torch_version": torch.__version__,
    }
    return save_model_file(json_path, state, meta, overwrite=force)


def _cast(weights: _Weights, dtype: torch.dtype) -> dict[str, Tensor]:
    """The floating-point tensors of ``weights`` in ``dtype``; ``ValueError`` naming one that overflows."""
    state = {}
    for key, value in weights.state.items():
        if value.is_floating_point():
            if dtype.is_floating_point and value.abs().max() > torch.finfo(dtype).max:
                raise ValueError(f"weight {key} of {weights.source} does not fit in {dtype}; export in float32")
            value = value.to(dtype)
        state[key] = value
    return state


def export_diffusers(
    source: str | Path,
    out: str | Path,
    dtype: torch.dtype = torch.float32,
    force: bool = False,
    prefer_ema: bool = True,
) -> Path:
    """Write a network built from a diffusers U-Net (``exactps train --init DIR``) back as the diffusers
    folder ``out`` (:func:`exactps.diffusers_unet.write_diffusers_folder`: the ``UNet2DModel`` with its
    widened first convolution, the scheduler config, exactps' conditioning record and ``s_y`` embedding),
    weights (EMA by default) cast to ``dtype``. :func:`load_model` reads ``out`` back to the same network.

    ``source`` is anything :func:`load_model` reads; a preset network is refused by name, and an existing
    ``out`` unless ``force``, before anything is written. Returns ``out``.
    """
    if Path(out).exists() and not force:
        raise FileExistsError(f"{out} already exists (use --force to overwrite it)")
    weights = _read_weights(source, prefer_ema)
    backbone = weights.model_config.diffusers_backbone
    if backbone is None:
        raise ValueError(
            f"{weights.source} holds a {weights.model_config.preset!r} preset network, not one built from a diffusers "
            "U-Net (`exactps train --init DIR`): only those are saved as diffusers folders; export it with --format "
            "exactps"
        )
    _build(weights, torch.device("cpu"), torch.float32)  # fits the network: fail before writing
    record = {
        "objective": weights.objective,
        "conditioning": weights.model_config.conditioning,
        "channels": weights.model_config.channels,
        "sigma_data": weights.model_config.sigma_data,
        "resolution": weights.model_config.image_size,
        "train": weights.train,
        "images_seen": weights.images_seen,
        "step": weights.step,
        "ema": weights.ema,
        "exported_from": weights.source.name,
        "torch_version": torch.__version__,
    }
    return write_diffusers_folder(out, backbone, _cast(weights, dtype), record, force)
