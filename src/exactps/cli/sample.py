"""``exactps sample``: posterior samples from a trained model, simulated from ground truth or for a
real measurement, and prior samples."""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from exactps.cli.options import THREADS_HELP, device
from exactps.data import BUILTIN_IMAGES, IMAGE_EXTENSIONS, builtin_image
from exactps.files import atomic_write_text
from exactps.images import (
    colour_map,
    measurement_from_image,
    read_image,
    read_kernel,
    read_mask,
    resize_shorter_side,
    save_contact_sheet,
    save_grid,
    save_image,
    save_std_map,
    std_scale,
)
from exactps.inference import check_measures, check_operator_for, posterior_samples, sampler_call_size
from exactps.interpolants import get_interpolant
from exactps.loading import LoadedModel, load_model
from exactps.operators import Inpaint
from exactps.restore import RestoredImage, restore, scores
from exactps.samplers import SAMPLERS, check_nfe
from exactps.seeds import SampleSeed, derive_seed, task_key
from exactps.tasks import TASKS, build_operator, check_task_inputs, get_task

__all__ = ["add", "run"]


_SAMPLE_DESCRIPTION = """\
Restore images with a trained model: draw samples of the posterior p(x | y) for a measurement
y = A x + s_y n, where A is the operator of --task and s_y = --sigma-y (images in [-1, 1]), and write
for each image the posterior mean, the per-pixel standard deviation (the uncertainty map), the
samples and a labelled contact sheet. EPS models ('eps') sample with the exact posterior score,
conditional models ('conditional') with their conditioning, both through the chosen sampler. --model
is a run directory of `exactps train` (its latest checkpoint, EMA weights), a checkpoint step-*.json,
or an exported model (`exactps export`, e.g. models/faces-32-eps).

Image size: photos are restored at their own size. The networks are fully convolutional; sides that
the U-Net cannot halve are padded (reflection) and cropped back. A model works best near the size of
its training images (shown when it loads; a note says when an image is far from it): --resize N
brings ground truths to a shorter side of N pixels first, --crop centre-crops and resizes them to the
training size. Memory: samples are drawn in as many calls as needed to fit, and a request that cannot
fit at all is refused before any work.

One of four inputs:
  --image GT ...         simulation: ground-truth images (files or folders of them) are measured
                         (y = A x + s_y n; masks, kernels and noise drawn from --seed) and restored;
                         reports the PSNR and the coverage of the 90% per-pixel interval.
  --example NAME         simulation on a photograph that ships with scikit-image (e.g. astronaut).
  --measurement Y ...    real measurements (files or folders), each a picture of y (below).
  --task none            prior samples, no measurement (the only mode of unconditional models).
A file that cannot be restored is named and skipped; the others are processed, a summary table is
printed at the end and the exit status is 1 if any file failed.
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
    "tasks, and what --measurement holds for an image of H x W pixels:\n"
    + _task_lines()
    + "\n"
    + """  Pictures are read as in training (pixel values u in [0, 1] become 2u - 1) and never resized,
  except ground truths with --resize or --crop. --mask M.png has the image's size, white = observed;
  --kernel K.npy (2-D array) or K.png (grayscale) is normalised to sum 1; blurs are circular
  (periodic boundary). Random masks and kernels are drawn for the image's size.

files written to --out DIR, one folder per image (NAME: the file name without suffix):
  NAME/contact.png       labelled contact sheet: measurement, samples, mean, std (, ground truth)
  NAME/mean.png          the posterior mean (average of the samples)
  NAME/std.png           per-pixel standard deviation of the samples, colour-mapped, with a scale bar
                         in pixel values of [0, 1] images
  NAME/sample-K.png      each sample
  NAME/measurement.png   (simulation) the simulated y as a picture (clipped, 8-bit), which
                         --measurement reads back approximately; NAME/mask.png for inpainting
  NAME/report.json       settings, size, seconds, NFE, mean std; with a ground truth the PSNR of the
                         measurement's view, of the mean and of each sample, and coverage90: the
                         fraction of pixels inside the 90% prediction interval mean +- t s sqrt(1+1/J)
  summary.json           one row per image (and the files that failed, with the reason)
  prior/                 (--task none) the samples and their grid

the models shipped in the repository's models/ folder (fp16, about 1.4 MB each):
  natural-32-eps, faces-32-eps   EPS, one network for the five paper-* tasks (s_y 0.05), trained on
                                 32x32 natural photographs / faces: they expect about 32x32 pictures;
                                 larger photos are restored at their own size (padded U-Net), best with
                                 --resize N for N up to about 4x the training size (128)
  natural-32-prior, faces-32-prior  unconditional: --task none, and the prior of the baselines

examples:
  exactps sample --model models/natural-32-eps --task paper-sr4 --example astronaut --resize 96 --out restored
  exactps sample --model models/faces-32-eps --task paper-inpaint-box --image faces/ --resize 32 --out out/box
  exactps sample --model models/faces-32-eps --task inpaint --measurement holes.png --mask mask.png --out out/inp
  exactps sample --model models/faces-32-prior --task none --num-samples 16 --out out/prior
"""
)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="restore images with a trained model: posterior samples, mean and uncertainty map",
        description=_SAMPLE_DESCRIPTION,
        epilog=_SAMPLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, help="run directory, checkpoint .json or exported model")
    tasks = tuple(TASKS)
    p.add_argument("--task", required=True, choices=tasks, metavar="TASK", help=f"the operator A: {', '.join(tasks)}")
    p.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise s_y (default 0.05; 0 = noiseless)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--image", type=Path, nargs="+", metavar="GT", help="ground-truth images or folders: simulation")
    mode.add_argument("--example", choices=BUILTIN_IMAGES, metavar="NAME",
                      help=f"simulation on a scikit-image photograph: {', '.join(BUILTIN_IMAGES)}")  # fmt: skip
    mode.add_argument("--measurement", type=Path, nargs="+", metavar="Y", help="measurements (images or folders)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--resize", type=int, metavar="N", help="simulation: resize ground truths to a shorter side of N")
    size.add_argument("--crop", action="store_true", help="simulation: centre-crop and resize to the model's size")
    p.add_argument("--max-images", type=int, metavar="N", help="restore only the first N files (sorted)")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = observed), the image's size")
    p.add_argument("--kernel", type=Path, help="blur kernel: .npy 2-D array or grayscale image (normalised)")
    p.add_argument("--num-samples", type=int, default=4, help="samples per image, >= 2 (default 4)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun", help="default heun")
    p.add_argument(
        "--nfe",
        type=int,
        default=35,
        help="network evaluations per sample (default 35; heun needs >= 7: fewer diverge)",
    )
    p.add_argument("--interpolant", default="ve", help="ve (default), vp-linear, vp-cosine, flow or trig")
    p.add_argument("--seed", type=int, default=0, help="seeds the simulation and the sampler (default 0)")
    p.add_argument("--batch", type=int, default=None, help="max images per sampler call (default: as many as fit)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1, ... (default cuda if available)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR, overwriting files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


@dataclass
class _Input:
    """One image to restore: its output name, its file (None for --example) and, when known before
    reading, its size ``(H, W)``."""

    name: str
    path: Path | None
    size: tuple[int, int] | None = None


def _check_sample_args(args: argparse.Namespace) -> str:
    """The mode (``prior``, ``simulation``, ``measurement``); raises ``ValueError`` on bad combinations."""
    if args.out.exists() and not args.out.is_dir():
        raise FileExistsError(f"--out {args.out} exists and is not a directory")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.force:
        raise FileExistsError(f"output directory {args.out} exists and is not empty (use --force to overwrite)")
    for name in ("num_samples", "nfe", "batch", "resize", "max_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not args.sigma_y >= 0 or math.isinf(args.sigma_y):
        raise ValueError(f"--sigma-y must be finite and >= 0, got {args.sigma_y}")
    problem = check_nfe(args.sampler, args.nfe)
    if problem is not None:
        raise ValueError(f"--sampler {args.sampler} --nfe {args.nfe}: {problem}")
    get_interpolant(args.interpolant)  # unknown names fail before the model loads
    if not get_task(args.task).measures:
        given = [o for o in ("image", "example", "measurement", "mask", "kernel", "resize", "max_images")
                 if getattr(args, o)]  # fmt: skip
        given += ["crop"] if args.crop else []
        if given:
            raise ValueError(f"--task {args.task} draws prior samples; it takes no --{', --'.join(given)}")
        return "prior"
    if args.image is None and args.measurement is None and args.example is None:
        raise ValueError(f"--task {args.task} needs --image GT.png ..., --example NAME or --measurement Y.png")
    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be >= 2 for the uncertainty map (std), got {args.num_samples}")
    mode = "measurement" if args.measurement is not None else "simulation"
    if mode == "measurement" and (args.resize or args.crop):
        raise ValueError("--resize and --crop apply to ground truths (simulation); measurements are never resized")
    check_task_inputs(args.task, args.mask is not None, args.kernel is not None, random_ok=mode == "simulation")
    return mode


def _image_files(paths: Sequence[Path]) -> list[Path]:
    """The files of ``paths``, folders expanded to their image files (sorted, recursively)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"folder {p} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return files


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """File names without suffix, made unique."""
    out: list[str] = []
    for i, p in enumerate(paths):
        stem = p.stem
        out.append(stem if stem not in out else f"{stem}-{i + 1}")
    return out


def _inputs(args: argparse.Namespace) -> list[_Input]:
    if args.example is not None:
        return [_Input(args.example, None)]
    files = _image_files(args.image if args.image is not None else args.measurement)[: args.max_images]
    return [_Input(name, path) for name, path in zip(_unique_names(files), files, strict=True)]


def _scan(inputs: list[_Input]) -> tuple[list[_Input], list[dict[str, str]]]:
    """Open every file's header before any work: the readable ones (with their size) and the failures."""
    ok, failed = [], []
    for item in inputs:
        if item.path is None:
            ok.append(item)
            continue
        try:
            with Image.open(item.path) as im:
                item.size = (im.height, im.width)
            ok.append(item)
        except Exception as err:  # PIL raises many types
            failed.append({"input": str(item.path), "error": f"could not read image {item.path}: {err}"})
    return ok, failed


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


#: A side more than this many times larger or smaller than the training size gets a note.
SIZE_NOTE_RATIO = 4


def _size_note(loaded: LoadedModel, h: int, w: int) -> str | None:
    r = loaded.model_config.image_size
    if max(h, w) > SIZE_NOTE_RATIO * r or min(h, w) * SIZE_NOTE_RATIO < r:
        return (f"the model was trained on {r}x{r} images and this one is {h}x{w}: far from the training size "
                f"the restoration may be poorer (--resize N or --crop bring ground truths closer)")  # fmt: skip
    return None


def _ground_truth(args: argparse.Namespace, loaded: LoadedModel, item: _Input) -> tuple[Tensor, list[str]]:
    """The ground truth ``(1, C, H, W)`` of a simulation, resized or cropped as asked and trimmed
    (bottom/right) to a multiple of the task's scale factor; the notes on what was done."""
    c, r = loaded.model_config.channels, loaded.model_config.image_size
    notes = []
    if item.path is None:
        x0 = builtin_image(item.name, c)[None]
        if args.crop:
            x0 = resize_shorter_side(_centre_square(x0), r)
    else:
        x0 = read_image(item.path, r if args.crop else None, c, upscale=False)
    if args.resize is not None:
        x0 = resize_shorter_side(x0, args.resize)
    factor = get_task(args.task).scale_factor
    h, w = x0.shape[-2:]
    th, tw = h - h % factor, w - w % factor
    if th < factor or tw < factor:
        raise ValueError(f"the image is {h}x{w}: too small for {args.task} (sides must be at least {factor})")
    if (th, tw) != (h, w):
        x0 = x0[..., :th, :tw]
        notes.append(f"cropped from {h}x{w} to {th}x{tw} (bottom/right): {args.task} needs multiples of {factor}")
    return x0, notes


def _centre_square(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top : top + s, left : left + s]


def _measurement_shape(args: argparse.Namespace, loaded: LoadedModel, item: _Input) -> tuple[int, int, int]:
    """The image shape ``(C, H, W)`` behind a stored measurement: its size times the task's scale factor."""
    assert item.size is not None
    factor = get_task(args.task).scale_factor
    return (loaded.model_config.channels, item.size[0] * factor, item.size[1] * factor)


def _planned_shape(args: argparse.Namespace, loaded: LoadedModel, item: _Input) -> tuple[int, int, int] | None:
    """The ``(C, H, W)`` an input will be restored at, from its header alone (None if unknown yet)."""
    c, r = loaded.model_config.channels, loaded.model_config.image_size
    if args.measurement is not None:
        return _measurement_shape(args, loaded, item)
    if args.crop:
        return (c, r, r)
    if item.size is None:
        return None
    h, w = item.size
    if args.resize is not None and args.resize <= min(h, w):
        h, w = round(h * args.resize / min(h, w)), round(w * args.resize / min(h, w))
    return (c, h, w)


def _check_memory(args: argparse.Namespace, loaded: LoadedModel, inputs: list[_Input]) -> None:
    """Refuse, before any work, a request whose largest image cannot be sampled in the memory there is
    (:class:`~exactps.inference.SampleMemoryError`); smaller calls are made automatically otherwise."""
    shapes = [s for s in (_planned_shape(args, loaded, item) for item in inputs) if s is not None]
    if not shapes:
        return
    largest = max(shapes, key=math.prod)
    dtype = next(loaded.model.parameters()).dtype
    sampler_call_size(loaded, args.num_samples, largest, args.batch, 0, dtype)


def run(args: argparse.Namespace) -> int:
    mode = _check_sample_args(args)
    start = time.perf_counter()
    loaded = load_model(args.model, device=args.device)
    r = loaded.model_config.image_size
    print(f"{loaded.describe()}\n  from {loaded.source} (trained on {r}x{r} images)", flush=True)
    for note in _task_notes(loaded, args.task, args.sigma_y):
        print(f"note: {note}", file=sys.stderr)
    if mode == "prior":
        return _run_prior(args, loaded, start)
    check_measures(loaded)
    mask = read_mask(args.mask) if args.mask is not None else None
    kernel = read_kernel(args.kernel) if args.kernel is not None else None
    inputs, failed = _scan(_inputs(args))
    for f in failed:
        print(f"skipped {f['input']}: {f['error']}", file=sys.stderr)
    _check_memory(args, loaded, inputs)
    rows = []
    bar = tqdm(inputs, unit="image", desc="restoring", disable=args.no_progress or len(inputs) < 2)
    for index, item in enumerate(bar):
        bar.set_postfix(image=item.name)
        try:
            rows.append(_restore_one(args, loaded, mode, item, index, mask, kernel))
        except (ValueError, OSError, RuntimeError) as err:
            failed.append({"input": str(item.path or item.name), "error": str(err)})
            tqdm.write(f"skipped {item.path or item.name}: {err}", file=sys.stderr)
    bar.close()
    seconds = time.perf_counter() - start
    _write_summary(args, loaded, rows, failed, seconds)
    return 1 if failed else 0


def _restore_one(
    args: argparse.Namespace,
    loaded: LoadedModel,
    mode: str,
    item: _Input,
    index: int,
    mask: Tensor | None,
    kernel: Tensor | None,
) -> dict[str, Any]:
    """Measure (simulation) or read ``item``, restore it, write its folder; its report."""
    notes: list[str] = []
    key = task_key(item.name)
    if mode == "simulation":
        x0, notes = _ground_truth(args, loaded, item)
        shape = tuple(x0.shape[1:])
    else:
        x0, shape = None, _measurement_shape(args, loaded, item)
    if mask is not None and tuple(mask.shape[-2:]) != shape[1:]:
        h, w = mask.shape[-2:]
        raise ValueError(f"--mask is {h}x{w} but the image is {shape[1]}x{shape[2]}: a mask has the image's size")
    size_note = _size_note(loaded, shape[1], shape[2])
    notes += [size_note] if size_note else []
    g_op = torch.Generator().manual_seed(derive_seed(args.seed, SampleSeed.OPERATOR, key))
    random_ok = mode == "simulation"
    op = build_operator(args.task, shape, mask=mask, kernel=kernel, generator=g_op, random_ok=random_ok)
    check_operator_for(loaded, op)
    if x0 is not None:
        y = op.measure(x0, args.sigma_y, torch.Generator().manual_seed(derive_seed(args.seed, SampleSeed.NOISE, key)))
    else:
        assert item.path is not None
        y = measurement_from_image(op, item.path, args.task)
    result = restore(
        loaded, op, y, args.sigma_y, args.num_samples, truth=x0, sampler=args.sampler, nfe=args.nfe,
        interpolant=args.interpolant, generator=derive_seed(args.seed, SampleSeed.SAMPLER, key), batch_size=args.batch,
    )  # fmt: skip
    report = {
        "input": str(item.path) if item.path is not None else f"scikit-image:{item.name}",
        "name": item.name,
        "size": list(shape[1:]),
        "seconds": result.seconds,
        "nfe_per_sample": result.nfe,
        **scores(result),
        "notes": notes,
    }
    _write_restoration(args, item.name, result, mode == "simulation", report)
    for note in notes:
        tqdm.write(f"note ({item.name}): {note}", file=sys.stderr)
    return report


def _contact_scale(h: int, w: int) -> int:
    """Pixel enlargement of small images in contact sheets: about 128 pixels a side, at most 8x."""
    return max(1, min(8, 128 // max(1, min(h, w))))


def _write_restoration(
    args: argparse.Namespace, name: str, r: RestoredImage, simulated: bool, report: dict[str, Any]
) -> None:
    """The image's folder: contact sheet, mean, std map, samples, (simulated) measurement and mask, report."""
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    h, w = r.mean.shape[-2:]
    scale = _contact_scale(h, w)
    vmax = std_scale(r.std_map)
    columns = [("measurement", r.view)]
    columns += [(f"sample {k + 1}", x) for k, x in enumerate(r.samples[:CONTACT_SAMPLES])]
    columns += [("mean", r.mean), (f"std (0-{vmax / 2:.3g})", colour_map(r.std_map, vmax))]
    if r.truth is not None:
        columns.append(("ground truth", r.truth))
    title = f"{args.task}, s_y {args.sigma_y:g}, {r.samples.shape[0]} samples, {args.sampler} {r.nfe} NFE"
    if "psnr_mean" in report:
        title += f": mean {report['psnr_mean']:.2f} dB, 90% interval covers {100 * report['coverage90']:.0f}%"
    save_contact_sheet(columns, out / "contact.png", scale=scale, title=title)
    save_image(r.mean, out / "mean.png")
    save_std_map(r.std_map, out / "std.png", vmax=vmax, scale=scale, title="posterior std (0-1 pixel values)")
    for k, x in enumerate(r.samples):
        save_image(x, out / f"sample-{k + 1}.png")
    if simulated:
        y = r.y[0]
        if y.ndim == 3 and y.shape[0] in (1, 3):
            save_image(y.clamp(-1, 1), out / "measurement.png")
        if isinstance(r.operator, Inpaint):
            save_image(2 * r.operator.physics.mask[0, :1].cpu() - 1, out / "mask.png")
    settings = {
        "model": str(args.model), "task": args.task, "sigma_y": args.sigma_y, "seed": args.seed,
        "num_samples": args.num_samples, "sampler": args.sampler, "interpolant": args.interpolant,
    }  # fmt: skip
    atomic_write_text(out / "report.json", json.dumps({**settings, **report}, indent=1))


#: Samples shown in a contact sheet (all are written as files).
CONTACT_SAMPLES = 4


def _write_summary(
    args: argparse.Namespace, loaded: LoadedModel, rows: list[dict[str, Any]], failed: list[dict[str, str]],
    seconds: float,
) -> None:  # fmt: skip
    """Print the table of every restored image and write ``summary.json``."""
    args.out.mkdir(parents=True, exist_ok=True)
    has_truth = any("psnr_mean" in r for r in rows)
    header = ["image", "size", "mean std", "s"]
    header += ["PSNR view", "PSNR mean", "PSNR sample", "cover90"] if has_truth else []
    table = []
    for r in rows:
        line = [r["name"], "x".join(str(n) for n in r["size"]), f"{r['mean_std']:.4f}", f"{r['seconds']:.1f}"]
        if has_truth:
            line += [f"{r['psnr_measurement']:.2f}", f"{r['psnr_mean']:.2f}", f"{_mean(r['psnr_samples']):.2f}",
                     f"{r['coverage90']:.3f}"]  # fmt: skip
        table.append(line)
    average = None
    if len(rows) > 1:
        average = {"mean_std": _mean(r["mean_std"] for r in rows)}
        line = ["average", "", f"{average['mean_std']:.4f}", f"{_mean(r['seconds'] for r in rows):.1f}"]
        if has_truth:
            average.update(
                psnr_measurement=_mean(r["psnr_measurement"] for r in rows),
                psnr_mean=_mean(r["psnr_mean"] for r in rows),
                psnr_samples=_mean(v for r in rows for v in r["psnr_samples"]),
                coverage90=_mean(r["coverage90"] for r in rows),
            )
            line += [f"{average[k]:.2f}" for k in ("psnr_measurement", "psnr_mean", "psnr_samples")]
            line += [f"{average['coverage90']:.3f}"]
        table.append(line)
    if table:
        widths = [max(len(str(c)) for c in col) for col in zip(header, *table, strict=True)]
        for line in [header, *table]:
            cells = zip(line, widths, strict=True)
            print("  ".join(f"{c:<{wd}}" if i == 0 else f"{c:>{wd}}" for i, (c, wd) in enumerate(cells)))
    summary = {
        "model": str(args.model), "objective": loaded.objective, "task": args.task, "sigma_y": args.sigma_y,
        "num_samples": args.num_samples, "sampler": args.sampler, "nfe": args.nfe, "interpolant": args.interpolant,
        "seed": args.seed, "threads": torch.get_num_threads(), "seconds": seconds,
        "images": rows, "average": average, "failed": failed,
    }  # fmt: skip
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1))
    done = f"{len(rows)} image(s) restored"
    done += f", {len(failed)} failed ({', '.join(Path(f['input']).name for f in failed)})" if failed else ""
    print(f"{done} in {seconds:.1f} s on {torch.get_num_threads()} thread(s); wrote {args.out}")


def _mean(values) -> float:
    v = list(values)
    return sum(v) / len(v)


def _run_prior(args: argparse.Namespace, loaded: LoadedModel, start: float) -> int:
    samples = posterior_samples(
        loaded, None, None, 0.0, args.num_samples, sampler=args.sampler, nfe=args.nfe, interpolant=args.interpolant,
        generator=derive_seed(args.seed, SampleSeed.SAMPLER), batch_size=args.batch,
    )[:, 0].cpu().clamp(-1, 1)  # fmt: skip
    out = args.out / "prior"
    out.mkdir(parents=True, exist_ok=True)
    save_grid([samples], out / "grid.png", scale=_contact_scale(*samples.shape[-2:]))
    for k, x in enumerate(samples):
        save_image(x, out / f"sample-{k + 1}.png")
    seconds = time.perf_counter() - start
    how = f"{args.sampler}, {args.nfe} NFE, {args.interpolant}, seed {args.seed}"
    print(f"{args.num_samples} prior samples ({how}) in {seconds:.1f} s; wrote {out}")
    return 0
