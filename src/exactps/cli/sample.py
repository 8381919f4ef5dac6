"""``exactps sample``: posterior samples from a trained model, simulated from ground truth or for a
real measurement, and prior samples."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from exactps.cli.options import device
from exactps.files import atomic_write_text
from exactps.images import measurement_from_image, read_image, read_kernel, read_mask, save_grid, save_image
from exactps.inference import check_operator_for, posterior_samples
from exactps.interpolants import get_interpolant
from exactps.loading import LoadedModel, load_model
from exactps.metrics import psnr
from exactps.operators import Inpaint, LinearOperator
from exactps.posterior import measurement_image
from exactps.samplers import SAMPLERS, check_nfe
from exactps.seeds import SampleSeed, derive_seed
from exactps.tasks import TASKS, build_operator, check_task_inputs, get_task

__all__ = ["add", "run"]


_SAMPLE_DESCRIPTION = """\
Draw samples of the posterior p(x | y) with a trained model for a measurement y = A x + s_y n, where
A is the operator of --task and s_y = --sigma-y (images in [-1, 1]). EPS models ('eps') sample with
the exact posterior score, conditional models ('conditional') with their conditioning, both through
the chosen sampler. --model is a run directory of `exactps train` (its latest checkpoint, EMA
weights), a checkpoint step-*.json, or an exported model (`exactps export`).

One of three modes:
  --image GT.png ...    simulation: each ground-truth image is centre-cropped and resized to the
                        model's size, measured (y = A x + s_y n, masks, kernels and noise drawn from
                        --seed) and restored; prints the PSNR of every sample, of the sample mean and
                        of the measurement's image-space view against the ground truth.
  --measurement Y.png   a real measurement, stored as a picture of y at its exact size (below).
  --task none           prior samples, no measurement (the only mode of unconditional models).
"""


def _task_lines() -> str:
    """One line per task of the registry: what ``--measurement`` holds, and the input it needs."""
    lines = []
    for name, task in TASKS.items():
        need = ""
        if task.needs_input(random_ok=True):
            need = f"; needs --{task.accepts} in both modes"
        elif task.needs_input(random_ok=False):
            need = f"; needs --{task.accepts} (simulation: random if absent)"
        text = f"{name:<20} {task.measurement}{need}"
        lines.append(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent=" " * 23))
    return "\n".join(lines)


_SAMPLE_EPILOG = (
    "tasks, and what --measurement holds for images of the model's size R x R:\n"
    + _task_lines()
    + "\n"
    + """  Pictures are read as in training (pixel values u in [0, 1] become 2u - 1), never resized except
  --image. --mask M.png is R x R, white = observed; --kernel K.npy (2-D array) or K.png (grayscale)
  is normalised to sum 1; blurs are circular (periodic boundary).

files written to --out DIR (NAME: the input's file name without suffix; 'prior' for --task none):
  NAME_grid.png         one row: measurement view, the samples, their mean (, the ground truth)
  NAME_sample-K.png     each sample, and NAME_mean.png their mean
  NAME_measurement.png  (--image) the simulated y as a picture (clipped to [-1, 1], 8-bit), which
                        --measurement reads back approximately; NAME_mask.png
                        the mask of inpainting tasks
  metrics.json          (--image) the settings and every PSNR

examples:
  exactps sample --model runs/ffhq64 --task sr4 --image face.png --num-samples 8 --out out/sr4
  exactps sample --model models/ffhq64 --task inpaint --measurement holes.png --mask mask.png --out out/inp
  exactps sample --model models/ffhq64 --task none --num-samples 16 --out out/prior
"""
)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="posterior samples from a trained model: simulated from ground truth, or for a real measurement",
        description=_SAMPLE_DESCRIPTION,
        epilog=_SAMPLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, help="run directory, checkpoint .json or exported model")
    tasks = tuple(TASKS)
    p.add_argument("--task", required=True, choices=tasks, metavar="TASK", help=f"the operator A: {', '.join(tasks)}")
    p.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise s_y (default 0.05; 0 = noiseless)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--image", type=Path, nargs="+", metavar="GT", help="ground-truth image(s): simulation mode")
    mode.add_argument("--measurement", type=Path, metavar="Y", help="a measurement y stored as an image")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = observed), the model's size")
    p.add_argument("--kernel", type=Path, help="blur kernel: .npy 2-D array or grayscale image (normalised)")
    p.add_argument("--num-samples", type=int, default=4, help="samples per measurement (default 4)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun", help="default heun")
    p.add_argument(
        "--nfe",
        type=int,
        default=35,
        help="network evaluations per sample (default 35; heun needs >= 7: fewer diverge)",
    )
    p.add_argument("--interpolant", default="ve", help="ve (default), vp-linear, vp-cosine, flow or trig")
    p.add_argument("--seed", type=int, default=0, help="seeds the simulation and the sampler (default 0)")
    p.add_argument("--batch", type=int, default=None, help="max images per sampler call (default all; saves memory)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1, ... (default cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR, overwriting files")
    p.set_defaults(func=run)


def _check_sample_args(args: argparse.Namespace) -> str:
    """The mode (``prior``, ``simulation``, ``measurement``); raises ``ValueError`` on bad combinations."""
    if args.out.exists() and not args.out.is_dir():
        raise FileExistsError(f"--out {args.out} exists and is not a directory")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.force:
        raise FileExistsError(f"output directory {args.out} exists and is not empty (use --force to overwrite)")
    for name in ("num_samples", "nfe", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not args.sigma_y >= 0:
        raise ValueError(f"--sigma-y must be >= 0, got {args.sigma_y}")
    problem = check_nfe(args.sampler, args.nfe)
    if problem is not None:
        raise ValueError(f"--sampler {args.sampler} --nfe {args.nfe}: {problem}")
    get_interpolant(args.interpolant)  # unknown names fail before the model loads
    if not get_task(args.task).measures:
        given = [o for o in ("image", "measurement", "mask", "kernel") if getattr(args, o) is not None]
        if given:
            raise ValueError(f"--task {args.task} draws prior samples; it takes no --{', --'.join(given)}")
        return "prior"
    if args.image is None and args.measurement is None:
        raise ValueError(f"--task {args.task} needs --image GT.png ... (simulation) or --measurement Y.png")
    mode = "simulation" if args.image is not None else "measurement"
    check_task_inputs(args.task, args.mask is not None, args.kernel is not None, random_ok=mode == "simulation")
    return mode


def _task_notes(loaded: LoadedModel, task: str, sigma_y: float) -> list[str]:
    """Warnings when the task or s_y lies outside what the model was trained on."""
    notes: list[str] = []
    if not get_task(task).measures:
        return notes
    trained_families = {TASKS[t].family for t in loaded.tasks or () if t in TASKS}
    if loaded.tasks and get_task(task).family not in trained_families:
        notes.append(f"the model was trained on {','.join(loaded.tasks)}, not on {task}: expect poor samples")
    trained = loaded.sigma_y
    if trained is not None:
        lo, hi = (min(trained), max(trained)) if isinstance(trained, tuple) else (trained, trained)
        if not lo * 0.999 <= sigma_y <= hi * 1.001:
            trained_text = f"{lo:g}" if hi == lo else f"{lo:g} to {hi:g}"
            notes.append(f"the model was trained with s_y {trained_text}, not {sigma_y:g}")
    return notes


def _stems(paths: Sequence[Path]) -> list[str]:
    """File names without suffix, made unique."""
    out: list[str] = []
    for i, p in enumerate(paths):
        stem = p.stem
        out.append(stem if stem not in out else f"{stem}-{i + 1}")
    return out


def _mean(values) -> float:
    v = list(values)
    return sum(v) / len(v)


def _psnr_table(rows: list[tuple[str, list[float]]], header: list[str]) -> str:
    width = max([len(h) for h in header[1:]] + [7])
    first = max([len(header[0])] + [len(label) for label, _ in rows])
    lines = [f"{header[0]:<{first}}  " + "  ".join(f"{h:>{width}}" for h in header[1:])]
    lines += [f"{label:<{first}}  " + "  ".join(f"{v:>{width}.2f}" for v in values) for label, values in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    mode = _check_sample_args(args)
    start = time.perf_counter()
    loaded = load_model(args.model, device=args.device)
    shape = loaded.img_shape
    print(f"{loaded.describe()}\n  from {loaded.source}", flush=True)
    for note in _task_notes(loaded, args.task, args.sigma_y):
        print(f"note: {note}", file=sys.stderr)
    settings = {
        "sampler": args.sampler,
        "nfe": args.nfe,
        "interpolant": args.interpolant,
        "generator": derive_seed(args.seed, SampleSeed.SAMPLER),
        "batch_size": args.batch,
    }
    if mode == "prior":
        samples = posterior_samples(loaded, None, None, 0.0, args.num_samples, **settings)[:, 0].cpu().clamp(-1, 1)
        _write_prior_samples(samples, args.out)
        seconds = time.perf_counter() - start
        how = f"{args.sampler}, {args.nfe} NFE, {args.interpolant}, seed {args.seed}"
        print(f"{args.num_samples} prior samples ({how}) in {seconds:.1f} s")
        print(f"wrote {args.out}")
        return 0

    mask = read_mask(args.mask, shape) if args.mask is not None else None
    kernel = read_kernel(args.kernel) if args.kernel is not None else None
    if mode == "simulation":
        x0 = torch.cat([read_image(p, shape[1], shape[0], upscale=False) for p in args.image])
        names = _stems(args.image)
        g_op = torch.Generator().manual_seed(derive_seed(args.seed, SampleSeed.OPERATOR))
        op = build_operator(args.task, shape, mask=mask, kernel=kernel, generator=g_op, batch=x0.shape[0])
        check_operator_for(loaded, op)
        y = op.measure(x0, args.sigma_y, torch.Generator().manual_seed(derive_seed(args.seed, SampleSeed.NOISE)))
    else:
        x0, names = None, _stems([args.measurement])
        op = build_operator(args.task, shape, mask=mask, kernel=kernel, random_ok=False)
        check_operator_for(loaded, op)
        y = measurement_from_image(op, args.measurement, args.task)
    op, y = op.to(loaded.device), y.to(loaded.device)
    view = measurement_image(op, y, args.sigma_y).cpu().clamp(-1, 1)
    samples = posterior_samples(loaded, op, y, args.sigma_y, args.num_samples, **settings).cpu().clamp(-1, 1)
    seconds = time.perf_counter() - start
    print(
        f"task {args.task}, s_y {args.sigma_y:g}: {args.num_samples} sample(s) x {len(names)} measurement(s) "
        f"({args.sampler}, {args.nfe} NFE, {args.interpolant}, seed {args.seed}) in {seconds:.1f} s"
    )
    _write_posterior_samples(args.out, names, view, samples, x0, y if mode == "simulation" else None, op)
    if x0 is not None:
        _report_psnr(args, loaded.objective, names, view, samples, x0, seconds)
    print(f"wrote {args.out}")
    return 0


def _write_prior_samples(samples: torch.Tensor, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_grid([samples], out / "prior_grid.png")
    for k, x in enumerate(samples):
        save_image(x, out / f"prior_sample-{k + 1}.png")


def _write_posterior_samples(
    out: Path,
    names: list[str],
    view: torch.Tensor,
    samples: torch.Tensor,
    x0: torch.Tensor | None,
    y_simulated: torch.Tensor | None,
    op: LinearOperator,
) -> None:
    """Per measurement: the grid (view, samples, mean[, ground truth]), each sample, the mean, and for
    a simulation the measurement (and the inpainting mask) as pictures."""
    mean = samples.mean(0)
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        row = [view[i : i + 1], samples[:, i], mean[i : i + 1]] + ([x0[i : i + 1]] if x0 is not None else [])
        save_grid([torch.cat(row)], out / f"{name}_grid.png")
        for k in range(samples.shape[0]):
            save_image(samples[k, i], out / f"{name}_sample-{k + 1}.png")
        save_image(mean[i], out / f"{name}_mean.png")
        if y_simulated is not None:
            save_image(y_simulated[i].cpu().clamp(-1, 1), out / f"{name}_measurement.png")
            if isinstance(op, Inpaint):
                m = op.physics.mask[min(i, op.batch - 1), :1].cpu()
                save_image(2 * m - 1, out / f"{name}_mask.png")


def _report_psnr(
    args: argparse.Namespace,
    objective: str,
    names: list[str],
    view: torch.Tensor,
    samples: torch.Tensor,
    x0: torch.Tensor,
    seconds: float,
) -> None:
    """Print the PSNR table (measurement view, mean, each sample) and write ``metrics.json``."""
    mean = samples.mean(0)
    images, rows = [], []
    for i, name in enumerate(names):
        per = {
            "input": args.image[i].name,
            "psnr_measurement": float(psnr(view[i : i + 1], x0[i : i + 1])),
            "psnr_mean": float(psnr(mean[i : i + 1], x0[i : i + 1])),
            "psnr_samples": [float(v) for v in psnr(samples[:, i], x0[i : i + 1].expand_as(samples[:, i]))],
        }
        images.append(per)
        rows.append((name, [per["psnr_measurement"], per["psnr_mean"], *per["psnr_samples"]]))
    if len(rows) > 1:
        rows.append(("average", [_mean(col) for col in zip(*(r[1] for r in rows), strict=True)]))
    header = ["PSNR (dB)", "measurement", "mean", *[f"sample {k + 1}" for k in range(args.num_samples)]]
    print(_psnr_table(rows, header))
    metrics = {
        "model": str(args.model),
        "objective": objective,
        "task": args.task,
        "sigma_y": args.sigma_y,
        "seed": args.seed,
        "num_samples": args.num_samples,
        "sampler": args.sampler,
        "nfe": args.nfe,
        "interpolant": args.interpolant,
        "images": images,
        "average": {
            "psnr_measurement": _mean(p["psnr_measurement"] for p in images),
            "psnr_mean": _mean(p["psnr_mean"] for p in images),
            "psnr_samples": _mean(v for p in images for v in p["psnr_samples"]),
        },
        "seconds": seconds,
    }
    atomic_write_text(args.out / "metrics.json", json.dumps(metrics, indent=1))
