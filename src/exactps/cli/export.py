"""``exactps export``: a trained model's EMA weights (float16) and description, to share or commit; or a
network fine-tuned from a diffusers U-Net back as a diffusers folder (``--format diffusers``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from exactps.loading import export_diffusers, export_model, load_model

__all__ = ["add", "run"]

#: ``--format`` -> the writer ``(source, out, dtype, force, prefer_ema) -> written path``.
FORMATS = {"exactps": export_model, "diffusers": export_diffusers}


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model's EMA weights (float16) and description, to share or commit",
        description=(
            "Write OUT.safetensors (the EMA weights, float16 by default) and OUT.json (objective, network, "
            "training tasks and s_y, images seen, SHA-256 of the weights) from a run directory (its latest "
            "checkpoint) or a checkpoint step-*.json. `exactps sample --model OUT` and "
            "`exactps train --init OUT.json` read it. With --format diffusers, a network fine-tuned from a "
            "diffusers UNet2DModel folder (`exactps train --init DIR`) is written as the folder OUT instead: "
            "unet/ (the UNet2DModel, first convolution widened to the conditioning maps), scheduler/ and "
            "exactps_conditioning.json|.safetensors (what exactps needs to rebuild the EPS denoiser)."
        ),
    )
    p.add_argument("source", type=Path, metavar="RUN_OR_CKPT", help="run directory, checkpoint .json or exported model")
    p.add_argument("--out", type=Path, required=True, help="output name: writes OUT.json and OUT.safetensors")
    p.add_argument("--format", choices=tuple(FORMATS), default="exactps", help="default exactps")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16", help="default float16")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    write = FORMATS[getattr(args, "format", "exactps")]
    path = write(args.source, args.out, dtype=getattr(torch, args.dtype), force=args.force, prefer_ema=not args.no_ema)
    loaded = load_model(path, device="cpu")
    if path.is_dir():
        print(f"wrote the diffusers folder {path} ({args.dtype})")
    else:
        tensors = path.with_suffix(".safetensors")
        print(f"wrote {path} and {tensors} ({tensors.stat().st_size / 1e6:.2f} MB, {args.dtype})")
    print(loaded.describe())
    return 0
