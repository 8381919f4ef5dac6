"""One training session: build the network, check the run's tasks, initialise, train."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exactps.admunet import IMAGENET_CLASSES
from exactps.classes import FOLDER_LABELS, ClassLabelsError, with_class_labels
from exactps.data import ClassFolder
from exactps.models import ModelConfig, build_model, get_objective, load_pretrained
from exactps.networks import PRESETS, BackbonePreset, count_parameters
from exactps.objectives import sigma_y_range
from exactps.runtime import device_memory
from exactps.tasks import NO_MEASUREMENT, make_task_operator
from exactps.train.config import TrainConfig
from exactps.train.distributed import dist_info
from exactps.train.loop import Trainer

__all__ = [
    "InsufficientMemoryError",
    "check_data_labels",
    "check_image_size",
    "check_step_memory",
    "estimate_step_memory",
    "preflight",
    "run_training",
]

#: bytes of activations per image pixel and per unit of :func:`_activation_width` kept for the backward
#: pass of one training step (float32). Calibrated on the CPU from the peak RSS growth over one EPS
#: step (``sr4``, ``resource.getrusage``): ``tiny`` (width 96) took 4.17 GB for 16 images of 128x128, i.e.
#: 16 KB per image pixel = 170 B per unit of width, rounded up to 192. Checked on the deeper presets at
#: 64x64 (growth per added image): ``small-64`` 125 MB (bound 239 MB), ``base-64`` 430 MB (bound 795 MB).
#: An upper bound within 1.1-1.9x, not a prediction; bf16 autocast on CUDA needs less.
_ACTIVATION_BYTES = 192
#: bytes per parameter in training: float32 weights, gradients, AdamW's two moments and the EMA copy
_PARAMETER_BYTES = 4 * 5
#: the share of the activation bound kept with gradient checkpointing (block inputs plus one block recomputed)
_CHECKPOINT_FRACTION = 0.25


class InsufficientMemoryError(ValueError):
    """The run's training step would not fit in the device's memory (raised before any work)."""


def _activation_width(p: BackbonePreset) -> float:
    """``model_channels * sum_l channel_mult[l] (num_blocks + 1) / 4^l``: the channels per image pixel
    that the U-Net keeps across its levels (each level halves H and W)."""
    return p.model_channels * sum(m * (p.num_blocks + 1) / 4**level for level, m in enumerate(p.channel_mult))


def check_image_size(size: int, preset: str | BackbonePreset) -> None:
    """Raise ``ValueError`` unless ``size`` is a positive multiple of ``2^(levels - 1)`` (the U-Net
    halves the image ``levels - 1`` times); ``preset`` is a name of :data:`~exactps.networks.PRESETS` or
    a network's own :class:`~exactps.networks.BackbonePreset`."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    name = repr(preset) if isinstance(preset, str) else f"{p.model_type!r}"
    if size < 1 or size % p.size_multiple:
        raise ValueError(
            f"--size {size} does not work with the {name} preset: it must be a positive multiple of "
            f"{p.size_multiple} (the preset's default is {p.img_resolution})"
        )


def estimate_step_memory(
    model_config: ModelConfig, micro_batch: int, parameters: int, grad_checkpoint: bool = False
) -> int:
    """An upper bound (bytes) of the memory one training step needs: ``parameters * 20`` (weights,
    gradients, AdamW moments, EMA) plus ``micro_batch * size^2 * width * 192`` activations, ``width``
    from the preset (:func:`_activation_width`); calibrated on the ``tiny`` preset (``_ACTIVATION_BYTES``).
    With ``grad_checkpoint`` the blocks keep only their inputs (about one value per channel and pixel of
    the ~48 a block stores): the activation term is scaled by ``_CHECKPOINT_FRACTION`` (an allowance, not
    a calibration)."""
    pixels = micro_batch * model_config.image_size**2
    activations = pixels * _activation_width(model_config.backbone_preset) * _ACTIVATION_BYTES
    if grad_checkpoint:
        activations *= _CHECKPOINT_FRACTION
    return int(parameters * _PARAMETER_BYTES + activations)


def check_step_memory(config: TrainConfig, model_config: ModelConfig, device: torch.device, world: int = 1) -> None:
    """Raise :class:`InsufficientMemoryError` (before any work) when :func:`estimate_step_memory` exceeds the device's
    memory (:func:`exactps.runtime.device_memory`), saying how to fit."""
    micro = config.micro_batch or max(1, config.batch_size // world)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the parameter count, no weights, no draws
        parameters = count_parameters(build_model(config.objective, model_config))
    need = estimate_step_memory(model_config, micro, parameters, config.grad_checkpoint)
    have = device_memory(device)
    if have is None or need <= have:
        return
    size = model_config.image_size
    raise InsufficientMemoryError(
        f"one training step of {micro} images of {size}x{size} with the {model_config.preset!r} preset needs "
        f"up to {need / 2**30:.1f} GiB, but {device} has {have / 2**30:.1f} GiB; use a smaller --micro-batch "
        f"(or --batch){'' if config.grad_checkpoint else ', --grad-checkpoint'} or a smaller --size"
    )


def check_data_labels(model_config: ModelConfig, data: Any) -> None:
    """Raise :class:`~exactps.classes.ClassLabelsError` (before any work) unless the data carries class labels
    exactly when the network takes per-image labels (``class_labels == "folder"``), numbered by its
    ``class_names``."""
    labelled = isinstance(data, ClassFolder)
    if model_config.class_labels == FOLDER_LABELS and not labelled:
        raise ClassLabelsError(
            f"--class-labels {FOLDER_LABELS} needs the data as a folder with one sub-folder of images per class"
        )
    if labelled and model_config.class_labels != FOLDER_LABELS:
        raise ClassLabelsError(
            f"the data carries class labels but the network takes none per image (class_labels "
            f"{model_config.class_labels!r}); only a class-conditional network with --class-labels {FOLDER_LABELS} does"
        )
    if not labelled:
        return
    if not model_config.class_names or data.classes != list(model_config.class_names):
        raise ClassLabelsError(
            f"the classes of {data.root} ({len(data.classes)}) are not those recorded with the network "
            f"({len(model_config.class_names or [])}): the class indices would change"
        )
    if len(data.classes) > IMAGENET_CLASSES:
        raise ClassLabelsError(f"{data.root} has {len(data.classes)} classes; the network takes {IMAGENET_CLASSES}")


@torch.no_grad()
def preflight(model: nn.Module, config: TrainConfig, model_config: ModelConfig) -> None:
    """Build every task's operator for the run's image shape and call the model once on a zero image
    per task (class 0 where it takes per-image labels), so that a bad combination (``sr4`` with a size not
    divisible by 4, ``colorize`` on grey images, a size the U-Net cannot halve) fails before the run
    directory is created."""
    shape = model_config.img_shape
    x0 = torch.zeros(1, *shape)
    objective = get_objective(config.objective)
    per_image = model_config.class_labels == FOLDER_LABELS
    call = with_class_labels(model, torch.zeros(1, dtype=torch.long) if per_image else None)
    tasks = config.tasks if objective.measures else (NO_MEASUREMENT,)
    was_training = model.training
    model.eval()
    try:
        for task in tasks:
            op = make_task_operator(task, shape, torch.Generator().manual_seed(0))
            objective.loss(call, x0, op, sigma_y_range(config.sigma_y)[1], torch.Generator().manual_seed(0))
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"task {task!r} on {shape} images does not work with this model: {err}") from err
    finally:
        model.train(was_training)


def run_training(
    config: TrainConfig,
    model_config: ModelConfig,
    data: Any,
    out: str | Path,
    *,
    resume: bool = False,
    init: str | Path | None = None,
    device: torch.device | str | None = None,
    run_info: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> Trainer:
    """Build the model (seeded by ``config.seed``), optionally initialise it from ``init``, train on
    ``data`` into ``out`` (or resume it) and return the trainer."""
    check_data_labels(model_config, data)
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
        torch.manual_seed(config.seed)
        model = build_model(config.objective, model_config)
    rank, _ = dist_info()
    if not resume:
        preflight(model, config, model_config)
    if init is not None and not resume:
        report = load_pretrained(model, init)
        if rank == 0:
            print(report.summary(), flush=True)
    trainer = Trainer(
        model,
        config,
        out,
        resume=resume,
        model_config=asdict(model_config),
        run_info=run_info,
        device=device,
        show_progress=show_progress,
    )
    if rank == 0:
        lay = trainer.layout
        print(
            f"{config.objective}: {count_parameters(model) / 1e6:.2f}M parameters, step {trainer.step} -> "
            f"{config.steps}, batch {config.batch_size} = {lay.n_shards} x {lay.micro_batch} "
            f"on {trainer.world} process(es), {trainer.device}",
            flush=True,
        )
    trainer.fit(data)
    return trainer
