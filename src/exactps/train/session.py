"""One training session: build the network, check the run's tasks, initialise, train."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exactps.models import ModelConfig, build_model, get_objective, load_pretrained
from exactps.networks import count_parameters
from exactps.objectives import sigma_y_range
from exactps.tasks import NO_MEASUREMENT, make_task_operator
from exactps.train.config import TrainConfig
from exactps.train.distributed import dist_info
from exactps.train.loop import Trainer

__all__ = ["preflight", "run_training"]


@torch.no_grad()
def preflight(model: nn.Module, config: TrainConfig, model_config: ModelConfig) -> None:
    """Build every task's operator for the run's image shape and call the model once on a zero image
    per task, so that a bad combination (``sr4`` with a size not divisible by 4, ``colorize`` on grey
    images, a size the U-Net cannot halve) fails before the run directory is created."""
    shape = model_config.img_shape
    x0 = torch.zeros(1, *shape)
    objective = get_objective(config.objective)
    tasks = config.tasks if objective.measures else (NO_MEASUREMENT,)
    was_training = model.training
    model.eval()
    try:
        for task in tasks:
            op = make_task_operator(task, shape, torch.Generator().manual_seed(0))
            objective.loss(model, x0, op, sigma_y_range(config.sigma_y)[1], torch.Generator().manual_seed(0))
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
