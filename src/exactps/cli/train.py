"""``exactps train``: a new run (``--out``) or a resumed one (``--resume``), on one process or under
``torchrun --nproc_per_node N -m exactps.cli train ...`` (DDP)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from exactps.admunet import IMAGENET_CLASSES, LABEL_CHOICES, check_class_labels
from exactps.checkpoint import checkpoint_step, list_checkpoints
from exactps.classes import FOLDER_LABELS, ClassLabelsError
from exactps.cli.options import THREADS_HELP, csv_list
from exactps.data import class_names, open_data
from exactps.diffusers_unet import DIFFUSERS_PRESET, DiffusersBackbone, is_diffusers_folder, read_diffusers_folder
from exactps.models import OBJECTIVES, ModelConfig, get_objective
from exactps.networks import CONDITIONINGS, PRESETS
from exactps.published import check_fits, get_published, is_published, published_names
from exactps.runtime import default_device
from exactps.tasks import training_tasks
from exactps.train import TrainConfig, run_training
from exactps.train.distributed import dist_info, init_distributed
from exactps.train.rundir import RunDir
from exactps.train.session import check_image_size, check_step_memory

__all__ = ["add", "add_train_arguments", "run"]


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a denoiser, an EPS denoiser or the conditional baseline (torchrun for several GPUs)",
    )
    add_train_arguments(p)
    p.set_defaults(func=run)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``exactps train`` (defaults None: filled from :class:`TrainConfig` / :class:`ModelConfig`)."""
    d = TrainConfig()
    p = parser
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default=None, help=f"default {d.objective}")
    p.add_argument(
        "--task",
        type=csv_list(),
        default=None,
        help=f"comma list of tasks ({', '.join(training_tasks())}); default {','.join(d.tasks)}",
    )
    p.add_argument("--task-probs", type=csv_list(float), default=None, help="task weights, comma list (default equal)")
    floats = csv_list(float)
    p.add_argument("--sigma-y", type=floats, default=None, help="s_y, or lo,hi drawn per sample (default 0.05)")
    p.add_argument(
        "--data",
        default=None,
        help="image folder, 'builtin' (scikit-image photographs), or a Gaussian-mixture .safetensors file "
        "(fresh draws every step)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="training image size, a multiple of 2^(levels-1) of the preset (default: the preset's)",
    )
    p.add_argument("--channels", type=int, default=None, choices=(1, 3), help="default 3")
    presets = ", ".join(PRESETS)
    p.add_argument("--preset", default=None, help=f"backbone preset: {presets} (default {ModelConfig.preset})")
    told = "what the EPS network is told about S_t (default: the objective's)"
    p.add_argument("--conditioning", choices=tuple(CONDITIONINGS), default=None, help=told)
    p.add_argument(
        "--init",
        default=None,
        metavar="FILE|DIR|NAME",
        help="initialise from this unconditional checkpoint or weights file, a diffusers UNet2DModel folder "
        "(epsilon or v prediction on a DDPM schedule: its U-Net is the network), or a published prior fetched "
        f"by deepinv: {', '.join(published_names())} (its preset is then the default --preset)",
    )
    p.add_argument(
        "--class-labels",
        choices=LABEL_CHOICES,
        default=None,
        help="the class labels of a class-conditional network (preset adm-64, edm-imagenet64-cond), which it "
        f"needs: {FOLDER_LABELS} (the true class of each image: --data has one sub-folder per class, sorted names "
        "= class indices, recorded in the run), or, for unconditional use, uniform (the mean class embedding) or "
        "zero (no class embedding)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="continue the run in this directory (from its latest checkpoint; that checkpoint's file is accepted too)",
    )
    p.add_argument("--out", type=Path, default=None, help="new run directory (must not exist or be empty)")
    p.add_argument("--steps", type=int, default=None, help=f"total optimizer steps (default {d.steps})")
    p.add_argument("--batch", type=int, default=None, help=f"global batch size (default {d.batch_size})")
    p.add_argument("--micro-batch", type=int, default=None, help="images per forward pass (default batch/world)")
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    p.add_argument("--betas", type=csv_list(float), default=None, help="AdamW betas b1,b2 (default 0.9,0.999)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"linear LR warm-up steps (default min({d.warmup_steps}, steps // 10) for a new run; "
        "a resumed run keeps its own)",
    )
    p.add_argument("--ema", type=float, default=None, help=f"EMA decay per step (default {d.ema_decay})")
    p.add_argument("--grad-clip", type=float, default=None, help="max gradient norm, 0 = off (default 1)")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--grad-checkpoint",
        action="store_true",
        help="recompute each U-Net block in the backward pass: less memory, about a third more compute",
    )
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--ckpt-every", type=int, default=None)
    p.add_argument("--grid-every", type=int, default=None)
    p.add_argument("--keep", type=int, default=None, help="checkpoints kept (0 = all; default 3)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default: 0 on CPU, 4 on CUDA)")
    p.add_argument("--device", default=None, help="default cuda:LOCAL_RANK if available, else cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=THREADS_HELP + "; use 1 when several processes share a CPU",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


#: CLI option -> TrainConfig field; the options that may change when resuming are in _RESUMABLE.
_TRAIN_OPTIONS = {
    "objective": "objective",
    "task": "tasks",
    "task_probs": "task_probs",
    "sigma_y": "sigma_y",
    "steps": "steps",
    "batch": "batch_size",
    "micro_batch": "micro_batch",
    "lr": "lr",
    "betas": "betas",
    "weight_decay": "weight_decay",
    "warmup": "warmup_steps",
    "ema": "ema_decay",
    "grad_clip": "grad_clip",
    "log_every": "log_every",
    "ckpt_every": "ckpt_every",
    "grid_every": "grid_every",
    "keep": "keep_checkpoints",
    "seed": "seed",
    "workers": "num_workers",
}
_RESUMABLE = {"steps", "log_every", "ckpt_every", "grid_every", "keep", "workers"}
_MODEL_OPTIONS = ("preset", "conditioning", "channels", "size", "init", "data", "class_labels")


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt, name in _TRAIN_OPTIONS.items():
        v = getattr(args, opt, None)
        if v is None:
            continue
        if opt == "sigma_y":
            v = v[0] if len(v) == 1 else tuple(v)
        elif opt == "grad_clip":
            v = None if v <= 0 else v
        out[name] = v
    if getattr(args, "no_bf16", False):
        out["bf16"] = False
    if getattr(args, "compile", False):
        out["compile"] = True
    if getattr(args, "grad_checkpoint", False):
        out["grad_checkpoint"] = True
    return out


def default_warmup(steps: int) -> int:
    """The warm-up of a new run without ``--warmup``: a tenth of the run, at most TrainConfig's default."""
    return min(TrainConfig.warmup_steps, max(steps, 0) // 10)


def _check_data(spec: str) -> None:
    """``--data``: ``builtin``, an existing folder or a Gaussian-mixture file; errors name the path and
    what is expected."""
    if spec == "builtin":
        return
    path = Path(spec)
    expected = "expected a folder of images (searched recursively), a Gaussian-mixture .safetensors file or 'builtin'"
    if not path.exists():
        raise FileNotFoundError(f"--data {spec}: {path} does not exist; {expected}")
    if path.is_file() and path.suffix == ".safetensors":
        return
    if not path.is_dir():
        raise NotADirectoryError(f"--data {spec}: {path} is a file, not a folder; {expected}")


def _init_preset(init: str | None) -> str | None:
    """The preset of a published ``--init`` prior (None for a file or no ``--init``)."""
    return get_published(init).preset if is_published(init) else None


def _check_init(init: str | None, preset: str, channels: int, sigma_data: float) -> None:
    """``--init``: an existing file, or a published prior whose network is the one asked for."""
    if init is None:
        return
    if is_published(init):
        check_fits(init, preset, channels, sigma_data)
    elif not Path(init).exists():
        raise FileNotFoundError(
            f"--init {init}: no such file, and not a published prior (known: {', '.join(published_names())})"
        )


def _configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig, dict[str, Any]]:
    if args.out is None:
        raise ValueError("--out DIR is required for a new run (or --resume DIR to continue one)")
    if args.data is None:
        raise ValueError("--data DIR|builtin is required for a new run")
    _check_data(args.data)
    overrides = _train_overrides(args)
    if "warmup_steps" not in overrides:
        overrides["warmup_steps"] = default_warmup(overrides.get("steps", TrainConfig.steps))
    cfg = TrainConfig(**overrides).validate()
    conditioning = args.conditioning or get_objective(cfg.objective).conditioning or ModelConfig.conditioning
    if is_diffusers_folder(args.init):
        mcfg = _diffusers_model_config(args, read_diffusers_folder(args.init).backbone, conditioning, cfg.sigma_data)
    else:
        mcfg = _preset_model_config(args, conditioning, cfg.sigma_data)
    data = "builtin" if args.data == "builtin" else str(Path(args.data).resolve())  # resumable from anywhere
    return cfg, mcfg, {"data": data, "size": mcfg.image_size, "channels": mcfg.channels}


def _preset_model_config(args: argparse.Namespace, conditioning: str, sigma_data: float) -> ModelConfig:
    """The network of a preset (``--preset``, a published ``--init``'s, or the default)."""
    preset = args.preset or _init_preset(args.init) or ModelConfig.preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if args.size is not None:
        check_image_size(args.size, preset)
    size = args.size or PRESETS[preset].img_resolution
    channels = args.channels or 3
    check_class_labels(PRESETS[preset].model_type, args.class_labels, args.init or f"the {preset!r} network")
    names = _class_names(args) if args.class_labels == FOLDER_LABELS else None
    _check_init(args.init, preset, channels, sigma_data)
    labels = args.class_labels
    return ModelConfig(preset, channels, conditioning, sigma_data, size, class_labels=labels, class_names=names)


def _class_names(args: argparse.Namespace) -> list[str]:
    """The classes of ``--data`` for ``--class-labels folder``; a published ``--init`` prior numbers
    ImageNet's classes, so the folder must have all of them (sorted names; empty sub-folders count)."""
    if args.data == "builtin" or not Path(args.data).is_dir():
        raise ClassLabelsError(
            f"--class-labels {FOLDER_LABELS} needs --data to be a folder with one sub-folder per class"
        )
    names = class_names(args.data)
    if is_published(args.init) and len(names) != IMAGENET_CLASSES:
        raise ClassLabelsError(
            f"--init {args.init} numbers ImageNet's {IMAGENET_CLASSES} classes in sorted order, but --data "
            f"{args.data} has {len(names)} class sub-folders: give it all {IMAGENET_CLASSES} (empty ones count), "
            "so that every class keeps its index"
        )
    return names


def _diffusers_model_config(
    args: argparse.Namespace, backbone: DiffusersBackbone, conditioning: str, sigma_data: float
) -> ModelConfig:
    """``--init DIR``, a diffusers folder: its U-Net is the network (``--preset`` and ``--channels``, when
    given, must agree with it; ``--size`` defaults to its ``sample_size``)."""
    where = f"--init {args.init}, a diffusers UNet2DModel folder (the network is its U-Net)"
    if args.preset not in (None, DIFFUSERS_PRESET):
        raise ValueError(f"--preset {args.preset} does not fit {where}; leave --preset out")
    if args.channels not in (None, backbone.channels):
        raise ValueError(
            f"--channels {args.channels} does not fit {where}: it reads {backbone.channels}-channel images"
        )
    check_class_labels(DIFFUSERS_PRESET, args.class_labels, where)
    if args.size is not None:
        check_image_size(args.size, backbone.preset)
    mcfg = ModelConfig.from_diffusers(backbone, conditioning, sigma_data)
    return replace(mcfg, resolution=args.size or mcfg.resolution)


def resolve_resume(path: str | Path) -> Path:
    """The run directory of ``--resume``: a run directory, or its ``checkpoints/`` folder, or the file of
    its latest checkpoint (a run resumes from its latest checkpoint only; an older one is refused with
    a message saying what to do). Errors name the path and what is expected."""
    p = Path(path)
    expected = "--resume expects a run directory made by `exactps train --out DIR`"
    if p.suffix in (".json", ".safetensors") and not p.is_dir():
        folder = p.parent
        if folder.name != "checkpoints" or not folder.is_dir():
            raise FileNotFoundError(f"{expected}; {p} is not a checkpoint inside a run's checkpoints/ folder")
        run = folder.parent
        found = list_checkpoints(folder)
        if not found:
            raise FileNotFoundError(f"cannot resume: no checkpoint found in {folder}")
        step = checkpoint_step(p)
        steps = [s for s, _ in found]
        if step is None or step not in steps:
            raise FileNotFoundError(
                f"{expected}; {p} is not a checkpoint of {run} (its checkpoints are steps {steps}): pass --resume {run}"
            )
        if step != steps[-1]:
            raise ValueError(
                f"{p} is not the latest checkpoint of {run} (step {steps[-1]} is): a run resumes from its latest "
                f"checkpoint, so pass --resume {run}; to continue from step {step} instead, move the newer "
                f"checkpoints out of {folder} first"
            )
        return run
    if not p.exists():
        raise FileNotFoundError(f"{expected}; {p} does not exist")
    if not p.is_dir():
        raise NotADirectoryError(f"{expected}; {p} is a file")
    if not (p / "checkpoints").is_dir() and p.name == "checkpoints" and (p.parent / "config.json").exists():
        return p.parent
    if not (p / "checkpoints").is_dir():
        raise FileNotFoundError(f"{expected}; {p} is not one (it has no checkpoints/ folder)")
    return p


def _configs_from_run(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig, dict[str, Any]]:
    given = _train_overrides(args)
    fixed = {opt for opt, name in _TRAIN_OPTIONS.items() if name in given and opt not in _RESUMABLE}
    fixed |= {opt for opt in _MODEL_OPTIONS if getattr(args, opt, None) is not None}
    fixed |= {"no_bf16"} if args.no_bf16 else set()
    if fixed:
        raise ValueError(
            f"--{', --'.join(sorted(o.replace('_', '-') for o in fixed))} cannot change when resuming "
            f"{args.resume} (the run's stored configuration is used; only --steps and the intervals can change)"
        )
    run = RunDir(resolve_resume(args.resume))
    record = json.loads(run.latest_checkpoint(verify=True).read_text())
    stored = dict(record["train_config"])
    stored.update({k: v for k, v in given.items()})
    return TrainConfig.from_dict(stored).validate(), ModelConfig.from_dict(record["model_config"]), record["run"]


def run(args: argparse.Namespace) -> int:
    """``exactps train``: a new run (``--out``) or a resumed one (``--resume``), on one process or
    under ``torchrun --nproc_per_node N -m exactps.cli train ...`` (DDP)."""
    started = init_distributed()
    try:
        if args.resume is not None:
            out = resolve_resume(args.resume)
            if args.out is not None and Path(args.out).resolve() != out.resolve():
                raise ValueError(f"--out {args.out} and --resume {args.resume} name different runs")
            cfg, mcfg, run_info = _configs_from_run(args)
        else:
            cfg, mcfg, run_info = _configs_from_args(args)
            out = Path(args.out)
        device = default_device() if args.device is None else torch.device(args.device)
        check_step_memory(cfg, mcfg, device, dist_info()[1])
        classes = mcfg.class_names if mcfg.class_labels == FOLDER_LABELS else None
        data = open_data(run_info["data"], int(run_info["size"]), int(run_info["channels"]), classes)
        run_training(
            cfg,
            mcfg,
            data,
            out,
            resume=args.resume is not None,
            init=None if args.resume is not None else args.init,
            device=args.device,
            run_info=run_info,
            show_progress=not args.no_progress,
        )
    finally:
        if started:
            dist.destroy_process_group()
    return 0
