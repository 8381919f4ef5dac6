"""Command-line interface: ``exactps verify``, ``bench exactness``, ``train``, ``export`` and ``sample``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

__all__ = ["main"]


def _csv_list(kind: type = str):
    def parse(text: str) -> list:
        return [kind(v) for v in text.split(",") if v]

    return parse


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="exactness report: EPS posterior samples vs exact posteriors (GMM and finite-image priors)",
        description=(
            "For each interpolant x sampler x NFE, sample the posterior with EPS driven by the exact "
            "(oracle) denoiser and compare with exact posterior samples: SW2 / Monte-Carlo floor on a "
            "Gaussian-mixture prior (1.0 = indistinguishable from exact) and atom total variation on a "
            "finite prior of natural-image crops (0 = exact)."
        ),
    )
    p.add_argument("--quick", action="store_true", help="a small grid that runs in about a minute")
    p.add_argument("--tasks", type=_csv_list(), default=None, help="comma list (default sr4,inpaint-box,deblur-gauss)")
    p.add_argument("--interpolants", type=_csv_list(), default=None)
    p.add_argument("--samplers", type=_csv_list(), default=None)
    p.add_argument("--nfe", type=_csv_list(int), default=None, help="comma list (default 10,20,50,100,200)")
    p.add_argument("--gmm-samples", type=int, default=2000)
    p.add_argument("--no-finite", action="store_true", help="skip the finite-image prior")
    p.add_argument("--atoms", type=int, default=200, help="images in the finite prior")
    p.add_argument("--crop", type=int, default=32, help="crop size of the finite prior's images")
    p.add_argument("--finite-samples", type=int, default=500)
    p.add_argument("--finite-interpolants", type=_csv_list(), default=["ve", "flow"])
    p.add_argument("--finite-samplers", type=_csv_list(), default=["ddim", "dpmpp-2m"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small problems run fastest on 1)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows to OUT.csv and OUT.json")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from exactps.verify import exactness_table, format_table

    tasks = args.tasks or (["inpaint-box", "deblur-motion"] if args.quick else ["sr4", "inpaint-box", "deblur-gauss"])
    interps = args.interpolants or (["ve", "flow"] if args.quick else ["vp-linear", "vp-cosine", "ve", "flow", "trig"])
    samplers = args.samplers or (
        ["ddim", "heun", "dpmpp-2m"] if args.quick else ["ddim", "ddim-eta1", "ddpm", "euler", "heun", "dpmpp-2m"]
    )
    nfes = args.nfe or ([10, 50, 200] if args.quick else [10, 20, 50, 100, 200])
    if args.out is not None and not args.force and _existing(args.out, (".csv", ".json")):
        return 2
    atoms = None
    if not args.no_finite:
        from exactps.data import builtin_crops

        n_atoms = min(args.atoms, 100) if args.quick else args.atoms
        crop = min(args.crop, 16) if args.quick else args.crop
        atoms = builtin_crops(n_atoms, crop, generator=torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    print(
        f"exactness report: tasks={','.join(tasks)} interpolants={','.join(interps)} "
        f"samplers={','.join(samplers)} nfe={','.join(map(str, nfes))}",
        flush=True,
    )
    rows = exactness_table(
        tasks,
        interps,
        samplers,
        nfes,
        gmm_samples=args.gmm_samples if not args.quick else min(args.gmm_samples, 1000),
        finite_atoms=atoms,
        finite_samples=args.finite_samples if not args.quick else min(args.finite_samples, 300),
        finite_interpolants=args.finite_interpolants if not args.quick else interps[:1],
        finite_samplers=args.finite_samplers if not args.quick else samplers[:2],
        seed=args.seed,
    )
    print(format_table(rows))
    print(f"\n({time.perf_counter() - start:.0f} s on {torch.get_num_threads()} CPU threads)")
    if args.out is not None:
        _write_rows(args.out, [asdict(r) for r in rows])
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser(
        "exactness",
        help="EPS vs DPS, PiGDM, DDRM, DiffPIR, DDNM where the true posterior is known",
        description=(
            "Every method uses the same exact denoiser (Gaussian-mixture prior on 8x8 images; finite prior "
            "of natural 32x32 crops). Prints per prior and operator: NFE, backward passes (VJP), time per "
            "sample, SW2 / Monte-Carlo floor (GMM) or atom TV (finite), and the PSNR of the sample mean."
        ),
    )
    p.add_argument("--tasks", type=_csv_list(), default=None, help="comma list (default: all five)")
    p.add_argument("--baselines", type=_csv_list(), default=None, help="comma list (default: all)")
    p.add_argument("--gmm-samples", type=int, default=1000)
    p.add_argument("--no-finite", action="store_true")
    p.add_argument("--atoms", type=int, default=200)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--finite-samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small problems run fastest on 1)")
    p.add_argument("--out", type=Path, default=None, help="write OUT.csv, OUT.json and OUT.png (error vs cost)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=_run_bench)
    _add_bench_models(bench)


def _add_bench_models(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "models",
        help="score trained models on held-out images (denoiser PSNR, held-out loss, posterior samples)",
        description=(
            "Scores every model on the same held-out images with the same draws (operators, noise): the PSNR "
            "of its one-step estimate E[x0 | x_t, y] at each --rho (large rho: the MMSE restoration from y), "
            "the held-out training loss, and with --samples K the PSNR of posterior samples and of their "
            "mean. Images: crops of the built-in photographs' test split (never seen in training with "
            "--data builtin), or a folder. MODEL: a run directory, a checkpoint or an exported model; "
            "--all-checkpoints expands run directories into every checkpoint (score vs images seen)."
        ),
    )
    p.add_argument("models", type=Path, nargs="+", metavar="MODEL")
    p.add_argument("--all-checkpoints", action="store_true", help="every checkpoint of each run directory")
    p.add_argument("--tasks", type=_csv_list(), default=None, help="comma list (default: the first model's)")
    p.add_argument("--sigma-y", type=_csv_list(float), default=None, help="comma list of s_y (default 0.05)")
    p.add_argument("--rho", type=_csv_list(float), default=[0.5, 10.0], help="noise ratios (default 0.5,10)")
    p.add_argument("--images", type=int, default=64, help="number of held-out images (default 64)")
    p.add_argument("--data", default="builtin", help="'builtin' (test split) or an image folder")
    p.add_argument("--samples", type=int, default=0, help="posterior samples per image (default 0: none)")
    p.add_argument("--sampler", default="heun")
    p.add_argument("--nfe", type=int, default=35)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write the scores as OUT.json")
    p.add_argument(
        "--grid",
        type=Path,
        default=None,
        help="write a PNG: measurement view, one sample per model, ground truth (first task, 8 images)",
    )
    p.add_argument("--grid-scale", type=int, default=1, help="enlarge the grid's pixels (small images)")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of PSNR vs images seen (one line per run)")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT.json or grid")
    p.set_defaults(func=_run_bench_models)


def _model_paths(paths: Sequence[Path], every: bool) -> list[Path]:
    from exactps.checkpoint import list_checkpoints

    out: list[Path] = []
    for path in paths:
        found = list_checkpoints(path / "checkpoints") if every and path.is_dir() else []
        if every and path.is_dir() and not found:
            raise FileNotFoundError(f"no checkpoint (step-*.json) found in {path / 'checkpoints'}")
        out += [json_path for _, json_path in found] or [path]
    return out


def _heldout_images(spec: str, n: int, size: int, channels: int, seed: int) -> torch.Tensor:
    from exactps.data import ImageFolder, builtin_crops

    if spec == "builtin":
        return builtin_crops(n, size, torch.Generator().manual_seed(seed), channels, split="test")
    folder = ImageFolder(spec, size, channels, flip=False)
    return torch.stack([folder[i] for i in range(min(n, len(folder)))])


def _run_bench_models(args: argparse.Namespace) -> int:
    from exactps.evaluation import DrawSpec, format_scores, measurement_view_psnr, score_model
    from exactps.inference import load_model
    from exactps.samplers import SAMPLERS

    if args.images < 1 or args.samples < 0 or args.nfe < 1 or not args.rho or min(args.rho) <= 0:
        raise ValueError("need --images >= 1, --samples >= 0, --nfe >= 1 and positive --rho values")
    if args.sampler not in SAMPLERS:
        raise ValueError(f"unknown --sampler {args.sampler!r}; choose one of {sorted(SAMPLERS)}")
    if args.out is not None and not args.force and _existing(args.out, (".json",)):
        return 2
    for picture in (args.grid, args.plot):
        if picture is not None and not args.force and _existing(picture, (".png",)):
            return 2
    start = time.perf_counter()
    paths = _model_paths(args.models, args.all_checkpoints)
    first = load_model(paths[0], device=args.device)
    tasks = args.tasks or [t for t in (first.tasks or ("none",))]
    specs = [DrawSpec(t, sy, args.seed) for t in tasks for sy in (args.sigma_y or [0.05])]
    x0 = _heldout_images(args.data, args.images, first.resolution, first.model_config.channels, args.seed)
    x0 = x0.to(first.device)
    trained_on = first.train_data
    if args.data == "builtin" and trained_on not in (None, "builtin"):
        print(f"note: {paths[0]} was trained on {trained_on}; scoring on built-in photographs", file=sys.stderr)
    scores, models = [], []
    for path in paths:
        loaded = first if path == paths[0] else load_model(path, device=args.device)
        if loaded.img_shape != first.img_shape:
            raise ValueError(f"{path} works on {loaded.img_shape} images but {paths[0]} on {first.img_shape}")
        models.append(loaded)
        in_run = path.suffix == ".json" and args.all_checkpoints
        name = f"{path.parent.parent.name}/{path.stem}" if in_run else str(path)
        scores.append(score_model(name, loaded, x0, specs, args.rho, args.samples, args.sampler, args.nfe))
        print(f"  scored {name}", file=sys.stderr, flush=True)
    reference = {(s.task, s.sigma_y): measurement_view_psnr(x0, s) for s in specs}
    print(format_scores(scores, specs, args.rho, reference))
    if args.plot is not None:
        from exactps.evaluation import plot_curves

        plot_curves(scores, specs, args.rho, args.plot.with_suffix(".png"))
        print(f"wrote {args.plot.with_suffix('.png')}")
    if args.grid is not None:
        from exactps.evaluation import comparison_rows
        from exactps.images import save_grid

        sampled = [m for m in models if m.objective != "denoiser" or specs[0].task == "none"]
        rows = comparison_rows(sampled, x0[:8], specs[0], args.sampler, args.nfe)
        print(f"wrote {save_grid(rows, args.grid.with_suffix('.png'), scale=args.grid_scale)} (rows: measurement, "
              f"{', '.join(str(m.source) for m in sampled)}, ground truth)")  # fmt: skip
    print(f"\n({len(x0)} held-out images; {time.perf_counter() - start:.0f} s on {first.device})")
    if args.out is not None:
        rows = [sc.to_dict() for sc in scores]
        from exactps.checkpoint import atomic_write_text

        out = args.out.with_suffix(".json")
        atomic_write_text(out, json.dumps(rows, indent=1))
        print(f"wrote {out}")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from exactps.bench import BENCH_TASKS, format_bench, format_summary, plot_bench, run_bench

    if args.out is not None and not args.force and _existing(args.out, (".csv", ".json", ".png")):
        return 2
    atoms = None
    if not args.no_finite:
        from exactps.data import builtin_crops

        atoms = builtin_crops(args.atoms, args.crop, generator=torch.Generator().manual_seed(args.seed))
    kwargs = {} if args.baselines is None else {"baselines": args.baselines}
    start = time.perf_counter()
    rows = run_bench(
        args.tasks or BENCH_TASKS,
        gmm_samples=args.gmm_samples,
        finite_atoms=atoms,
        finite_samples=args.finite_samples,
        seed=args.seed,
        progress=lambda r: print(f"  {r.prior} {r.task} {r.method}: {r.value:.3f}", file=sys.stderr, flush=True),
        **kwargs,
    )
    print(format_bench(rows))
    print(format_summary(rows))
    print(f"\n({time.perf_counter() - start:.0f} s on {torch.get_num_threads()} CPU threads, {_cpu_name()})")
    if args.out is not None:
        _write_rows(args.out, [asdict(r) for r in rows])
        plot_bench(rows, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}")
    return 0


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _existing(out: Path, suffixes: tuple[str, ...]) -> bool:
    for suffix in suffixes:
        if out.with_suffix(suffix).exists():
            print(f"exactps: error: {out.with_suffix(suffix)} exists (use --force to overwrite)", file=sys.stderr)
            return True
    return False


def _write_rows(out: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``out.csv`` and ``out.json`` atomically."""
    from exactps.checkpoint import atomic_write, atomic_write_text

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out.with_suffix(".csv"), write_csv)
    atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=1))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.json')}")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from exactps.training import add_train_arguments, train_main

    p = sub.add_parser(
        "train",
        help="train a denoiser, an EPS denoiser or the conditional baseline (torchrun for several GPUs)",
    )
    add_train_arguments(p)
    p.set_defaults(func=train_main)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model's EMA weights (float16) and description, to share or commit",
        description=(
            "Write OUT.safetensors (the EMA weights, float16 by default) and OUT.json (objective, network, "
            "training tasks and s_y, images seen, SHA-256 of the weights) from a run directory (its latest "
            "checkpoint) or a checkpoint step-*.json. `exactps sample --model OUT` and "
            "`exactps train --init OUT.json` read it."
        ),
    )
    p.add_argument("source", type=Path, metavar="RUN_OR_CKPT", help="run directory, checkpoint .json or exported model")
    p.add_argument("--out", type=Path, required=True, help="output name: writes OUT.json and OUT.safetensors")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16", help="default float16")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from exactps.inference import export_model, load_model

    json_path = export_model(
        args.source, args.out, dtype=getattr(torch, args.dtype), force=args.force, prefer_ema=not args.no_ema
    )
    loaded = load_model(json_path, device="cpu")
    tensors = json_path.with_suffix(".safetensors")
    print(f"wrote {json_path} and {tensors} ({tensors.stat().st_size / 1e6:.2f} MB, {args.dtype})")
    print(loaded.describe())
    return 0


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

_SAMPLE_EPILOG = """\
tasks, and what --measurement holds for images of the model's size R x R:
  sr4                  the low-resolution image, R/4 x R/4, made by exactps's operator (deepinv's
                       bicubic Downsampling, circular boundary); other resizers sample other pixel
                       positions, so simulate with --image, or measure with exactps.tasks
  sr2-avg              the low-resolution image, R/2 x R/2 (2x2 average pooling)
  deblur-gauss         the blurred image, R x R (the training Gaussian blur, or --kernel)
  deblur-motion        the blurred image, R x R; needs --kernel (simulation: random if absent)
  deblur               the blurred image, R x R; needs --kernel
  colorize             the grayscale image, R x R (Rec. 601 luma)
  inpaint-box          the image with holes, R x R (the holes' values are ignored); needs --mask
  inpaint-random       the same (in simulation both draw a random mask if --mask is absent)
  inpaint              the same; needs --mask in both modes
  none                 nothing: prior samples
  Pictures are read as in training (pixel values u in [0, 1] become 2u - 1), never resized except
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


def _device(text: str) -> str:
    try:
        dev = torch.device(text)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"invalid device {text!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available")
    return text


def _add_sample(sub: argparse._SubParsersAction) -> None:
    from exactps.inference import MEASUREMENT_TASKS
    from exactps.samplers import SAMPLERS

    p = sub.add_parser(
        "sample",
        help="posterior samples from a trained model: simulated from ground truth, or for a real measurement",
        description=_SAMPLE_DESCRIPTION,
        epilog=_SAMPLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, help="run directory, checkpoint .json or exported model")
    tasks = (*MEASUREMENT_TASKS, "none")
    p.add_argument("--task", required=True, choices=tasks, metavar="TASK", help=f"the operator A: {', '.join(tasks)}")
    p.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise s_y (default 0.05; 0 = noiseless)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--image", type=Path, nargs="+", metavar="GT", help="ground-truth image(s): simulation mode")
    mode.add_argument("--measurement", type=Path, metavar="Y", help="a measurement y stored as an image")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = observed), the model's size")
    p.add_argument("--kernel", type=Path, help="blur kernel: .npy 2-D array or grayscale image (normalised)")
    p.add_argument("--num-samples", type=int, default=4, help="samples per measurement (default 4)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun", help="default heun")
    p.add_argument("--nfe", type=int, default=35, help="network evaluations per sample (default 35)")
    p.add_argument("--interpolant", default="ve", help="ve (default), vp-linear, vp-cosine, flow or trig")
    p.add_argument("--seed", type=int, default=0, help="seeds the simulation and the sampler (default 0)")
    p.add_argument("--batch", type=int, default=None, help="max images per sampler call (default all; saves memory)")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1, ... (default cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR, overwriting files")
    p.set_defaults(func=_run_sample)


def _check_sample_args(args: argparse.Namespace) -> str:
    """The mode (``prior``, ``simulation``, ``measurement``); raises ``ValueError`` on bad combinations."""
    from exactps.inference import check_task_inputs
    from exactps.interpolants import get_interpolant

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
    get_interpolant(args.interpolant)  # unknown names fail before the model loads
    if args.task == "none":
        given = [o for o in ("image", "measurement", "mask", "kernel") if getattr(args, o) is not None]
        if given:
            raise ValueError(f"--task none draws prior samples; it takes no --{', --'.join(given)}")
        return "prior"
    if args.image is None and args.measurement is None:
        raise ValueError(f"--task {args.task} needs --image GT.png ... (simulation) or --measurement Y.png")
    mode = "simulation" if args.image is not None else "measurement"
    check_task_inputs(args.task, args.mask is not None, args.kernel is not None, random_ok=mode == "simulation")
    return mode


def _task_notes(loaded, task: str, sigma_y: float) -> list[str]:
    """Warnings when the task or s_y lies outside what the model was trained on."""
    notes = []

    def family(t: str) -> str:
        return t.split("-")[0] if t.startswith(("inpaint", "deblur")) else t

    if task != "none" and loaded.tasks and family(task) not in {family(t) for t in loaded.tasks}:
        notes.append(f"the model was trained on {','.join(loaded.tasks)}, not on {task}: expect poor samples")
    trained = loaded.sigma_y
    if task != "none" and trained is not None:
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


def _save_image(img: torch.Tensor, path: Path) -> None:
    from exactps.images import save_grid

    save_grid([img[None]], path, pad=0)


def _mean(values) -> float:
    v = list(values)
    return sum(v) / len(v)


def _psnr_table(rows: list[tuple[str, list[float]]], header: list[str]) -> str:
    width = max([len(h) for h in header[1:]] + [7])
    first = max([len(header[0])] + [len(label) for label, _ in rows])
    lines = [f"{header[0]:<{first}}  " + "  ".join(f"{h:>{width}}" for h in header[1:])]
    lines += [f"{label:<{first}}  " + "  ".join(f"{v:>{width}.2f}" for v in values) for label, values in rows]
    return "\n".join(lines)


def _run_sample(args: argparse.Namespace) -> int:
    from exactps.data import derive_seed
    from exactps.images import measurement_image
    from exactps.inference import (
        build_operator,
        check_operator_for,
        load_model,
        measurement_from_image,
        posterior_samples,
        read_image,
        read_kernel,
        read_mask,
    )

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
        "generator": derive_seed(args.seed, 3),
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
        x0 = torch.cat([read_image(p, shape[1], shape[0]) for p in args.image])
        names = _stems(args.image)
        g_op = torch.Generator().manual_seed(derive_seed(args.seed, 1))
        op = build_operator(args.task, shape, mask=mask, kernel=kernel, generator=g_op, batch=x0.shape[0])
        check_operator_for(loaded, op)
        y = op.measure(x0, args.sigma_y, torch.Generator().manual_seed(derive_seed(args.seed, 2)))
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
    from exactps.images import save_grid

    out.mkdir(parents=True, exist_ok=True)
    save_grid([samples], out / "prior_grid.png")
    for k, x in enumerate(samples):
        _save_image(x, out / f"prior_sample-{k + 1}.png")


def _write_posterior_samples(
    out: Path,
    names: list[str],
    view: torch.Tensor,
    samples: torch.Tensor,
    x0: torch.Tensor | None,
    y_simulated: torch.Tensor | None,
    op,
) -> None:
    """Per measurement: the grid (view, samples, mean[, ground truth]), each sample, the mean, and for
    a simulation the measurement (and the inpainting mask) as pictures."""
    from exactps.images import save_grid
    from exactps.operators import Inpaint

    mean = samples.mean(0)
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        row = [view[i : i + 1], samples[:, i], mean[i : i + 1]] + ([x0[i : i + 1]] if x0 is not None else [])
        save_grid([torch.cat(row)], out / f"{name}_grid.png")
        for k in range(samples.shape[0]):
            _save_image(samples[k, i], out / f"{name}_sample-{k + 1}.png")
        _save_image(mean[i], out / f"{name}_mean.png")
        if y_simulated is not None:
            _save_image(y_simulated[i].cpu().clamp(-1, 1), out / f"{name}_measurement.png")
            if isinstance(op, Inpaint):
                m = op.physics.mask[min(i, op.batch - 1), :1].cpu()
                _save_image(2 * m - 1, out / f"{name}_mask.png")


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
    from exactps.checkpoint import atomic_write_text
    from exactps.metrics import psnr

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


_EPILOG = """\
tasks, and what --measurement holds for images of the model's size R x R:
  sr4                  the low-resolution image, R/4 x R/4, made by exactps's operator (deepinv's
                       bicubic Downsampling, circular boundary); other resizers sample other pixel
                       positions, so simulate with --image, or measure with exactps.tasks
  sr2-avg              the low-resolution image, R/2 x R/2 (2x2 average pooling)
  deblur-gauss         the blurred image, R x R (the training Gaussian blur, or --kernel)
  deblur-motion        the blurred image, R x R; needs --kernel (simulation: random if absent)
  deblur               the blurred image, R x R; needs --kernel
  colorize             the grayscale image, R x R (Rec. 601 luma)
  inpaint-box          the image with holes, R x R (the holes' values are ignored); needs --mask
  inpaint-random       the same (in simulation both draw a random mask if --mask is absent)
  inpaint              the same; needs --mask in both modes
  none                 nothing: prior samples
  Pictures are read as in training (pixel values u in [0, 1] become 2u - 1), never resized except
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


def _device(text: str) -> str:
    try:
        dev = torch.device(text)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"invalid device {text!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available")
    return text


def _add_sample(sub: argparse._SubParsersAction) -> None:
    from exactps.inference import MEASUREMENT_TASKS
    from exactps.samplers import SAMPLERS

    p = sub.add_parser(
        "sample",
        help="posterior samples from a trained model: simulated from ground truth, or for a real measurement",
        description=_SAMPLE_DESCRIPTION,
        epilog=_SAMPLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, help="run directory, checkpoint .json or exported model")
    tasks = (*MEASUREMENT_TASKS, "none")
    p.add_argument("--task", required=True, choices=tasks, metavar="TASK", help=f"the operator A: {', '.join(tasks)}")
    p.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise s_y (default 0.05; 0 = noiseless)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--image", type=Path, nargs="+", metavar="GT", help="ground-truth image(s): simulation mode")
    mode.add_argument("--measurement", type=Path, metavar="Y", help="a measurement y stored as an image")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = observed), the model's size")
    p.add_argument("--kernel", type=Path, help="blur kernel: .npy 2-D array or grayscale image (normalised)")
    p.add_argument("--num-samples", type=int, default=4, help="samples per measurement (default 4)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun", help="default heun")
    p.add_argument("--nfe", type=int, default=35, help="network evaluations per sample (default 35)")
    p.add_argument("--interpolant", default="ve", help="ve (default), vp-linear, vp-cosine, flow or trig")
    p.add_argument("--seed", type=int, default=0, help="seeds the simulation and the sampler (default 0)")
    p.add_argument("--batch", type=int, default=None, help="max images per sampler call (default all; saves memory)")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1, ... (default cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR, overwriting files")
    p.set_defaults(func=_run_sample)


def _check_sample_args(args: argparse.Namespace) -> str:
    """The mode (``prior``, ``simulation``, ``measurement``); raises ``ValueError`` on bad combinations."""
    from exactps.inference import check_task_inputs
    from exactps.interpolants import get_interpolant

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
    get_interpolant(args.interpolant)  # unknown names fail before the model loads
    if args.task == "none":
        given = [o for o in ("image", "measurement", "mask", "kernel") if getattr(args, o) is not None]
        if given:
            raise ValueError(f"--task none draws prior samples; it takes no --{', --'.join(given)}")
        return "prior"
    if args.image is None and args.measurement is None:
        raise ValueError(f"--task {args.task} needs --image GT.png ... (simulation) or --measurement Y.png")
    mode = "simulation" if args.image is not None else "measurement"
    check_task_inputs(args.task, args.mask is not None, args.kernel is not None, random_ok=mode == "simulation")
    return mode


def _task_notes(loaded, task: str, sigma_y: float) -> list[str]:
    """Warnings when the task or s_y lies outside what the model was trained on."""
    notes = []

    def family(t: str) -> str:
        return t.split("-")[0] if t.startswith(("inpaint", "deblur")) else t

    if task != "none" and loaded.tasks and family(task) not in {family(t) for t in loaded.tasks}:
        notes.append(f"the model was trained on {','.join(loaded.tasks)}, not on {task}: expect poor samples")
    trained = loaded.sigma_y
    if task != "none" and trained is not None:
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


def _save_image(img: torch.Tensor, path: Path) -> None:
    from exactps.images import save_grid

    save_grid([img[None]], path, pad=0)


def _mean(values) -> float:
    v = list(values)
    return sum(v) / len(v)


def _psnr_table(rows: list[tuple[str, list[float]]], header: list[str]) -> str:
    width = max([len(h) for h in header[1:]] + [7])
    first = max([len(header[0])] + [len(label) for label, _ in rows])
    lines = [f"{header[0]:<{first}}  " + "  ".join(f"{h:>{width}}" for h in header[1:])]
    lines += [f"{label:<{first}}  " + "  ".join(f"{v:>{width}.2f}" for v in values) for label, values in rows]
    return "\n".join(lines)


def _run_sample(args: argparse.Namespace) -> int:
    from exactps.checkpoint import atomic_write_text
    from exactps.data import derive_seed
    from exactps.images import measurement_image, save_grid
    from exactps.inference import (
        build_operator,
        check_operator_for,
        load_model,
        measurement_from_image,
        posterior_samples,
        read_image,
        read_kernel,
        read_mask,
    )
    from exactps.metrics import psnr
    from exactps.operators import Inpaint

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
        "generator": derive_seed(args.seed, 3),
        "batch_size": args.batch,
    }
    out: Path = args.out
    if mode == "prior":
        samples = posterior_samples(loaded, None, None, 0.0, args.num_samples, **settings)[:, 0].cpu().clamp(-1, 1)
        out.mkdir(parents=True, exist_ok=True)
        save_grid([samples], out / "prior_grid.png")
        for k, x in enumerate(samples):
            _save_image(x, out / f"prior_sample-{k + 1}.png")
        seconds = time.perf_counter() - start
        how = f"{args.sampler}, {args.nfe} NFE, {args.interpolant}, seed {args.seed}"
        print(f"{args.num_samples} prior samples ({how}) in {seconds:.1f} s")
        print(f"wrote {out}")
        return 0

    mask = read_mask(args.mask, shape) if args.mask is not None else None
    kernel = read_kernel(args.kernel) if args.kernel is not None else None
    if mode == "simulation":
        x0 = torch.cat([read_image(p, shape[1], shape[0]) for p in args.image])
        names = _stems(args.image)
        g_op = torch.Generator().manual_seed(derive_seed(args.seed, 1))
        op = build_operator(args.task, shape, mask=mask, kernel=kernel, generator=g_op, batch=x0.shape[0])
        check_operator_for(loaded, op)
        y = op.measure(x0, args.sigma_y, torch.Generator().manual_seed(derive_seed(args.seed, 2)))
    else:
        x0, names = None, _stems([args.measurement])
        op = build_operator(args.task, shape, mask=mask, kernel=kernel, random_ok=False)
        check_operator_for(loaded, op)
        y = measurement_from_image(op, args.measurement, args.task)
    op, y = op.to(loaded.device), y.to(loaded.device)
    view = measurement_image(op, y, args.sigma_y).cpu().clamp(-1, 1)
    samples = posterior_samples(loaded, op, y, args.sigma_y, args.num_samples, **settings).cpu().clamp(-1, 1)
    mean = samples.mean(0)
    seconds = time.perf_counter() - start
    print(
        f"task {args.task}, s_y {args.sigma_y:g}: {args.num_samples} sample(s) x {len(names)} measurement(s) "
        f"({args.sampler}, {args.nfe} NFE, {args.interpolant}, seed {args.seed}) in {seconds:.1f} s"
    )

    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        row = [view[i : i + 1], samples[:, i], mean[i : i + 1]] + ([x0[i : i + 1]] if x0 is not None else [])
        save_grid([torch.cat(row)], out / f"{name}_grid.png")
        for k in range(args.num_samples):
            _save_image(samples[k, i], out / f"{name}_sample-{k + 1}.png")
        _save_image(mean[i], out / f"{name}_mean.png")
        if mode == "simulation":
            _save_image(y[i].cpu().clamp(-1, 1), out / f"{name}_measurement.png")
            if isinstance(op, Inpaint):
                m = op.physics.mask[min(i, op.batch - 1), :1].cpu()
                _save_image(2 * m - 1, out / f"{name}_mask.png")
    if x0 is None:
        print(f"wrote {out}")
        return 0

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
        "objective": loaded.objective,
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
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    print(f"wrote {out}")
    return 0


_EPILOG = """\
examples:
  exactps verify --quick                        exactness report with oracle denoisers (about a minute)
  exactps train --data builtin --preset tiny --size 16 --steps 200 --out runs/tiny
  exactps export runs/tiny --out models/tiny    EMA weights in float16: models/tiny.{json,safetensors}
  exactps sample --model models/tiny --task sr4 --image photo.png --out samples
  exactps sample --model models/tiny --task sr4 --measurement low-res.png --out samples

Run `exactps COMMAND --help` for the options of a command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exactps",
        description="Exact posterior sampling for linear inverse problems in imaging.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_verify(sub)
    _add_bench(sub)
    _add_train(sub)
    _add_export(sub)
    _add_sample(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"exactps: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
