"""``exactps bench``: ``exactness`` (EPS and the baselines where the posterior is exact), ``models`` (trained
models scored on held-out images) and ``images`` (the image benchmark on real photographs)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from exactps.admunet import CLASS_LABELS, EDM_ADM_MODEL_TYPE, IMAGENET_CLASSES, LABEL_CHOICES
from exactps.checkpoint import list_checkpoints
from exactps.classes import FOLDER_LABELS, ClassLabelsError
from exactps.cli.options import THREADS_HELP, csv_list, device
from exactps.data import ImageFolder, builtin_crops, class_names
from exactps.evaluation import (
    DrawSpec,
    comparison_rows,
    format_scores,
    measurement_view_psnr,
    plot_curves,
    score_model,
)
from exactps.exactbench import (
    FAMILIES,
    Denoisers,
    ExactBenchConfig,
    format_summary,
    format_tuning,
    learned_denoisers,
    oracle_denoisers,
    plot_summary,
    run_exactbench,
    write_result,
)
from exactps.files import atomic_write_text, existing_outputs
from exactps.imagebench import (
    METRICS,
    SET_METRICS,
    BenchConfig,
    Scorer,
    format_results,
    load_images,
    output_paths,
    run_image_benchmark,
    write_results,
)
from exactps.imagebench.problems import image_labels
from exactps.imagebench.scoring import check_metrics
from exactps.images import save_grid
from exactps.loading import load_model, load_published, published_model_config
from exactps.mixture_fit import load_mixture
from exactps.models import ModelConfig
from exactps.networks import PRESETS
from exactps.published import get_published, is_published, published_names
from exactps.runtime import cpu_name
from exactps.samplers import SAMPLERS
from exactps.tasks import NO_MEASUREMENT, STANDARD_TASKS, get_task

__all__ = ["add", "run", "run_exactness", "run_images", "run_models"]


def add(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    d = ExactBenchConfig()
    p = bench.add_parser(
        "exactness",
        help="EPS vs DPS, PiGDM, DDRM, DiffPIR, DDNM, DAPS, MPGD where the true posterior is known",
        description=(
            "Every method against exact posterior samples, on priors whose posterior is closed form: a random "
            "Gaussian mixture and a Gaussian on 8x8 images (or --mixture FILE, e.g. fitted to photograph "
            "patches). With the oracle denoisers EPS is exact by construction and the differences are the "
            "methods' own; --learned-prior/--learned-eps add trained networks. Each baseline appears with its "
            "published settings and with settings tuned on separate measurements. Per task: SW2 / Monte-Carlo "
            "floor (and KL, W2 of a fitted Gaussian for the Gaussian prior), mean ± standard error over "
            "measurements, NFE, backward passes (VJP) and time per sample."
        ),
    )
    p.add_argument("--tasks", type=csv_list(), default=None, help="comma list (default: the five standard tasks)")
    p.add_argument(
        "--baselines",
        type=csv_list(),
        default=None,
        help=f"comma list, NAME or NAME:STEPS for a cheaper step budget (default: {','.join(d.baselines)})",
    )
    p.add_argument("--families", type=csv_list(), default=None, help=f"random priors (default: {','.join(d.families)})")
    p.add_argument(
        "--mixture",
        type=Path,
        default=None,
        help="a Gaussian-mixture .safetensors file (scripts/patch_mixture.py) instead of --families",
    )
    p.add_argument(
        "--learned-prior",
        type=Path,
        default=None,
        help="an unconditional model trained on --mixture draws: the baselines' learned denoiser",
    )
    p.add_argument("--learned-eps", type=Path, default=None, help="an EPS model trained on --mixture draws")
    p.add_argument("--no-oracle", action="store_true", help="only the learned denoisers")
    p.add_argument(
        "--measurements",
        type=int,
        default=d.measurements,
        help=f"report measurements per task (default {d.measurements})",
    )
    p.add_argument("--runs", type=int, default=d.runs, help=f"runs (seeds) per measurement (default {d.runs})")
    p.add_argument(
        "--tuning-measurements",
        type=int,
        default=d.tuning_measurements,
        help=f"held-out measurements per task for tuning (default {d.tuning_measurements})",
    )
    p.add_argument(
        "--eps",
        type=csv_list(),
        default=None,
        help="EPS rows as INTERPOLANT:SAMPLER:NFE, comma-separated (default: "
        + ",".join(":".join(map(str, s)) for s in d.eps_specs)
        + ")",
    )
    p.add_argument("--no-tune", action="store_true", help="published settings only")
    p.add_argument(
        "--tune-with",
        choices=("each", "first"),
        default="each",
        help="tune the baselines with each set of denoisers, or reuse the first's (oracle) choice for the learned ones",
    )
    p.add_argument("--samples", type=int, default=d.n_samples, help=f"samples per run (default {d.n_samples})")
    p.add_argument("--refs", type=int, default=d.n_refs, help=f"pairs of exact sets for the floor (default {d.n_refs})")
    p.add_argument("--sigma-y", type=float, default=d.sigma_y)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small problems run fastest on 1)")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json, OUT.md and OUT.png (error vs cost)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--no-progress", action="store_true", help="no per-row progress lines on stderr")
    p.set_defaults(func=run)
    _add_models(bench)
    _add_images(bench)


def _add_models(bench: argparse._SubParsersAction) -> None:
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
    p.add_argument("--tasks", type=csv_list(), default=None, help="comma list (default: the first model's)")
    p.add_argument("--sigma-y", type=csv_list(float), default=None, help="comma list of s_y (default 0.05)")
    p.add_argument("--rho", type=csv_list(float), default=[0.5, 10.0], help="noise ratios (default 0.5,10)")
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
    p.set_defaults(func=run)


def _add_images(bench: argparse._SubParsersAction) -> None:
    d = BenchConfig()
    p = bench.add_parser(
        "images",
        help="EPS, conditional models and the training-free baselines on real photographs (the paper's protocol)",
        description=(
            "Restores the same test images under every method: fixed operators, noise and sampler seeds per "
            "task, J samples per image. Methods: the measurement view (ridge A+ y), each --eps model at each "
            "--eps-nfe (1 NFE = one call at the top noise level: the posterior mean E[x0|y]), each "
            "--conditional model, and each baseline on the --prior's x0-predictor at its budget (DPS 1000 and "
            "250, PiGDM 100, DDRM 20, DiffPIR 100, DDNM 100, DAPS 100, MPGD 100; NAME:K for K steps), with its "
            "published settings and, unless "
            "--no-tune, with settings tuned on the --val images only (a small grid per baseline, mean PSNR). "
            "Prints a table per task (mean ± standard error over images, NFE, backward passes, seconds per "
            "sample timed side by side) and the EPS step overhead; writes OUT.json, OUT.csv and a labelled "
            "grid OUT-<task>.png per task."
        ),
        epilog=(
            "metrics: " + ", ".join(METRICS) + " (per image), " + ", ".join(SET_METRICS) + " (per method). "
            "lpips needs the AlexNet weights (--lpips-weights DIR or EXACTPS_LPIPS_WEIGHTS, else torchvision's "
            'download); the Inception metrics (crps_inc, mmd_inc, fid, kid) need `pip install "exactps[metrics]"`. '
            "--metrics all selects every one."
        ),
    )
    p.add_argument("--test", type=Path, required=True, help="folder of test images (the first --images, sorted)")
    p.add_argument("--val", type=Path, default=None, help="folder of validation images (tuning only)")
    p.add_argument(
        "--prior",
        default=None,
        metavar="MODEL|NAME",
        help="unconditional model the baselines sample with, a diffusers UNet2DModel folder, or a published prior: "
        f"{', '.join(published_names())}",
    )
    p.add_argument("--eps", type=Path, nargs="*", default=[], metavar="MODEL", help="EPS models")
    p.add_argument(
        "--class-labels",
        choices=LABEL_CHOICES,
        default=None,
        help="the class labels of class-conditional models (edm-imagenet64-cond, runs trained with "
        f"--class-labels {FOLDER_LABELS}), which they need: {FOLDER_LABELS} (the true class of each image: --test "
        "and --val have one sub-folder per class, numbered as the model's training classes, or for the "
        "published prior all 1000 ImageNet classes, sorted), or uniform / zero (the same label vector for every image)",
    )
    p.add_argument("--conditional", type=Path, nargs="*", default=[], metavar="MODEL", help="conditional models")
    p.add_argument("--tasks", type=csv_list(), default=list(d.tasks), help=f"default {','.join(d.tasks)}")
    p.add_argument("--sigma-y", type=float, default=d.sigma_y, help=f"measurement noise (default {d.sigma_y})")
    p.add_argument("--images", type=int, default=d.images, help=f"test images (default {d.images})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"samples J per image (default {d.samples})")
    p.add_argument("--val-images", type=int, default=d.val_images, help=f"default {d.val_images}")
    p.add_argument("--eps-nfe", type=csv_list(int), default=list(d.eps_nfe), help="default 100,20,1")
    p.add_argument("--conditional-nfe", type=csv_list(int), default=list(d.conditional_nfe), help="default 100")
    p.add_argument(
        "--zero-shot-nfe",
        type=csv_list(int),
        default=list(d.zero_shot_nfe),
        help="also run the zero-shot pivot (the --prior, not fine-tuned, at the pivot and the closest isotropic "
        "noise level; exact only where A^T A = gamma^2 I) at these NFEs (default: not run)",
    )
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=d.sampler, help=f"EPS sampler (default {d.sampler})")
    p.add_argument("--baselines", type=csv_list(), default=list(d.baselines), help=f"default {','.join(d.baselines)}")
    p.add_argument("--no-tune", action="store_true", help="published settings only")
    p.add_argument("--metrics", type=csv_list(), default=list(d.metrics), help=f"default {','.join(d.metrics)}")
    p.add_argument("--lpips-weights", type=Path, default=None, help="folder with the offline LPIPS weights")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", type=device, default=None, help="default cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--out", type=Path, default=None, help="write OUT.json, OUT.csv and OUT-<task>.png")
    p.add_argument("--grid-scale", type=int, default=2, help="enlarge the grids' pixels (default 2)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run_images(args: argparse.Namespace) -> int:
    """``exactps bench images``: every check before any sampling, results written at the end."""
    metrics = tuple(METRICS) + tuple(SET_METRICS) if tuple(args.metrics) == ("all",) else tuple(args.metrics)
    config = BenchConfig(
        tasks=tuple(args.tasks), sigma_y=args.sigma_y, images=args.images, samples=args.samples,
        eps_nfe=tuple(args.eps_nfe), conditional_nfe=tuple(args.conditional_nfe), sampler=args.sampler,
        zero_shot_nfe=tuple(args.zero_shot_nfe),
        baselines=tuple(args.baselines) if args.prior is not None else (), tune=not args.no_tune,
        val_images=args.val_images, metrics=metrics, seed=args.seed,
    ).validate()  # fmt: skip
    check_metrics(metrics)
    if args.out is not None and not args.force:
        existing = [p for p in output_paths(args.out, config.tasks) if p.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(map(str, existing))} exist (use --force to overwrite)")
    if config.zero_shot_nfe and args.prior is None:
        raise ValueError("--zero-shot-nfe runs the zero-shot pivot on the --prior: give one")
    if config.tune and args.prior is not None and config.baselines and args.val is None:
        raise ValueError("tuning the baselines needs --val DIR (validation images), or --no-tune")
    if args.prior is None and not args.eps and not args.conditional:
        raise ValueError("give --prior (for the baselines), --eps or --conditional models")
    published = _published_class_conditional(args.prior, args.class_labels)  # refused before any fetch
    prior = load_model(args.prior, device=args.device) if args.prior is not None and published is None else None
    eps = [load_model(p, device=args.device) for p in args.eps]
    conditional = [load_model(p, device=args.device) for p in args.conditional]
    configs = [(str(m.source), m.model_config) for m in (prior, *eps, *conditional) if m is not None]
    configs += [(args.prior, published)] if published is not None else []
    classes = _bench_classes(configs, args.class_labels, args.test)
    if published is not None:
        prior = load_published(args.prior, device=args.device, class_labels=args.class_labels)
    models = [m for m in (prior, *eps, *conditional) if m is not None]
    first = models[0]
    size, channels = first.resolution, first.model_config.channels
    test = load_images(args.test, config.images, size, channels)
    val = load_images(args.val, config.val_images, size, channels) if config.tune and args.val else None
    labels = {}
    if args.class_labels is not None:
        choice = args.class_labels
        labels["test_labels"] = _image_labels(choice, classes, args.test, config.images, size, channels)
        if val is not None:
            labels["val_labels"] = _image_labels(choice, classes, args.val, config.val_images, size, channels)
    scorer = Scorer(metrics, args.lpips_weights, device=first.device)
    start = time.perf_counter()
    results = run_image_benchmark(config, test, prior, eps, conditional, val, scorer, progress=not args.no_progress,
                                  **labels)  # fmt: skip
    results.environment.update(torch=torch.__version__, cpu=cpu_name(), threads=torch.get_num_threads())
    print(format_results(results))
    print(f"\n({time.perf_counter() - start:.0f} s on {results.environment['device']}, {cpu_name()})")
    if args.out is not None:
        for path in write_results(results, args.out, args.grid_scale)[2:]:  # the tables say so themselves
            print(f"wrote {path}")
    return 0


def _published_class_conditional(spec: str | None, class_labels: str | None) -> ModelConfig | None:
    """The configuration of ``--prior`` when it is a published class-conditional prior (None otherwise),
    with the ``--class-labels`` choice: :class:`~exactps.classes.ClassLabelsError` without one, before
    anything is fetched."""
    if spec is None or not is_published(spec) or PRESETS[get_published(spec).preset].model_type != EDM_ADM_MODEL_TYPE:
        return None
    return published_model_config(spec, class_labels)


def _bench_classes(models: Sequence[tuple[str, ModelConfig]], choice: str | None, test: Path) -> list[str] | None:
    """The class names that number the test images' classes with ``--class-labels folder`` (None with
    another choice): the training classes recorded with the models (all the same), else for the published
    prior the sorted sub-folders of ``--test``, which must be all of ImageNet's. ``ClassLabelsError`` before
    any work: a model that takes per-image labels without ``--class-labels``, or ``--class-labels`` without
    a class-conditional model."""
    conditional = [config for _, config in models if config.class_labels is not None]
    if choice is None:
        needy = [source for source, config in models if config.class_labels == FOLDER_LABELS]
        if needy:
            raise ClassLabelsError(
                f"class-conditional prior used without labels: {', '.join(needy)} take(s) the class of each "
                f"image; pass --class-labels {FOLDER_LABELS} (the true class, from class sub-folders of --test "
                f"and --val) or --class-labels {' or '.join(CLASS_LABELS)}"
            )
        return None
    if not conditional:
        raise ClassLabelsError(f"--class-labels {choice}: none of the models is class-conditional")
    if choice != FOLDER_LABELS:
        return None
    recorded = {tuple(config.class_names) for config in conditional if config.class_names}
    if len(recorded) > 1:
        raise ClassLabelsError("the class-conditional models were trained on different classes: benchmark them apart")
    if recorded:
        return list(recorded.pop())
    names = class_names(test)
    if len(names) != IMAGENET_CLASSES:
        raise ClassLabelsError(
            f"--class-labels {FOLDER_LABELS}: the published prior numbers ImageNet's {IMAGENET_CLASSES} classes in "
            f"sorted order, but --test {test} has {len(names)} class sub-folders: give it all {IMAGENET_CLASSES} "
            "(empty ones count), so that every class keeps its index"
        )
    return names


def _image_labels(
    choice: str, classes: list[str] | None, folder: Path, n: int, size: int, channels: int
) -> torch.Tensor:
    """The labels of the first ``n`` images of ``folder``: their class indices (``folder``), or the fixed
    label vector of :data:`~exactps.admunet.CLASS_LABELS` for each."""
    if choice == FOLDER_LABELS:
        return image_labels(folder, n, size, channels, classes or [])
    return CLASS_LABELS[choice](n, IMAGENET_CLASSES, torch.empty(()))


def _model_paths(paths: Sequence[Path], every: bool) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        found = list_checkpoints(path / "checkpoints") if every and path.is_dir() else []
        if every and path.is_dir() and not found:
            raise FileNotFoundError(f"no checkpoint (step-*.json) found in {path / 'checkpoints'}")
        out += [json_path for _, json_path in found] or [path]
    return out


def _heldout_images(spec: str, n: int, size: int, channels: int, seed: int) -> torch.Tensor:
    if spec == "builtin":
        return builtin_crops(n, size, torch.Generator().manual_seed(seed), channels, split="test")
    folder = ImageFolder(spec, size, channels, flip=False)
    return torch.stack([folder[i] for i in range(min(n, len(folder)))])


def run_models(args: argparse.Namespace) -> int:
    """``exactps bench models``."""
    if args.images < 1 or args.samples < 0 or args.nfe < 1 or not args.rho or min(args.rho) <= 0:
        raise ValueError("need --images >= 1, --samples >= 0, --nfe >= 1 and positive --rho values")
    if args.sampler not in SAMPLERS:
        raise ValueError(f"unknown --sampler {args.sampler!r}; choose one of {sorted(SAMPLERS)}")
    if args.out is not None and not args.force and existing_outputs(args.out, (".json",)):
        return 2
    for picture in (args.grid, args.plot):
        if picture is not None and not args.force and existing_outputs(picture, (".png",)):
            return 2
    start = time.perf_counter()
    paths = _model_paths(args.models, args.all_checkpoints)
    first = load_model(paths[0], device=args.device)
    tasks = args.tasks or list(first.tasks or (NO_MEASUREMENT,))
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
        plot_curves(scores, specs, args.rho, args.plot.with_suffix(".png"))
        print(f"wrote {args.plot.with_suffix('.png')}")
    if args.grid is not None:
        sampled = [m for m in models if m.spec.measures or not get_task(specs[0].task).measures]
        rows = comparison_rows(sampled, x0[:8], specs[0], args.sampler, args.nfe)
        print(f"wrote {save_grid(rows, args.grid.with_suffix('.png'), scale=args.grid_scale)} (rows: measurement, "
              f"{', '.join(str(m.source) for m in sampled)}, ground truth)")  # fmt: skip
    print(f"\n({len(x0)} held-out images; {time.perf_counter() - start:.0f} s on {first.device})")
    if args.out is not None:
        rows = [sc.to_dict() for sc in scores]
        out = args.out.with_suffix(".json")
        atomic_write_text(out, json.dumps(rows, indent=1))
        print(f"wrote {out}")
    return 0


def _exactness_config(args: argparse.Namespace) -> ExactBenchConfig:
    names, steps = [], []
    for spec in args.baselines or ExactBenchConfig.baselines:
        name, _, budget = spec.partition(":")
        names.append(name)
        if budget:
            if not budget.isdigit():
                raise ValueError(f"--baselines {spec}: expected NAME or NAME:STEPS with an integer STEPS")
            steps.append((name, int(budget)))
    eps_specs = []
    for spec in args.eps or []:
        parts = spec.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"--eps {spec}: expected INTERPOLANT:SAMPLER:NFE, e.g. ve:dpmpp-2m:20")
        eps_specs.append((parts[0], parts[1], int(parts[2])))
    families = tuple(args.families) if args.families else ExactBenchConfig.families
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"--families: unknown {unknown}; choose from {tuple(FAMILIES)}")
    return ExactBenchConfig(
        tasks=tuple(args.tasks or STANDARD_TASKS),
        baselines=tuple(names),
        families=families,
        measurements=args.measurements,
        runs=args.runs,
        tuning_measurements=args.tuning_measurements,
        n_samples=args.samples,
        n_refs=args.refs,
        sigma_y=args.sigma_y,
        seed=args.seed,
        tune=not args.no_tune,
        tune_with=args.tune_with,
        eps_specs=tuple(eps_specs) or ExactBenchConfig.eps_specs,
        baseline_steps=tuple(steps),
    ).validate()


def _exactness_denoisers(args: argparse.Namespace, img_shape: tuple[int, ...] | None) -> list[Denoisers]:
    """The oracle's, then the learned ones (checked against the prior's image shape before any work)."""
    out = [] if args.no_oracle else [oracle_denoisers()]
    if args.learned_eps is not None and args.learned_prior is None:
        raise ValueError("--learned-eps needs --learned-prior (the baselines' denoiser on the same prior)")
    if args.learned_prior is not None:
        if args.mixture is None:
            raise ValueError("--learned-prior needs --mixture: the mixture the networks were trained on")
        models = [load_model(p, device="cpu") for p in (args.learned_prior, args.learned_eps) if p is not None]
        for m in models:
            size, channels = m.model_config.resolution, m.model_config.channels
            if img_shape is not None and (channels, size, size) != tuple(img_shape):
                raise ValueError(
                    f"{m.source} was trained on {(channels, size, size)} images, the mixture draws {img_shape}"
                )
        out.append(learned_denoisers(*models))
    if not out:
        raise ValueError("--no-oracle needs --learned-prior (nothing would run)")
    return out


def run_exactness(args: argparse.Namespace) -> int:
    """``exactps bench exactness``."""
    if args.out is not None and not args.force and existing_outputs(args.out, (".json", ".md", ".png")):
        return 2
    cfg = _exactness_config(args)
    mixture = load_mixture(args.mixture) if args.mixture is not None else None
    denoisers = _exactness_denoisers(args, None if mixture is None else tuple(mixture.img_shape))
    start = time.perf_counter()
    say = None if args.no_progress else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    save = None if args.out is None else (lambda partial: write_result(partial, args.out))  # rows so far
    name = f"mixture {args.mixture.stem}" if args.mixture is not None else "mixture"
    result = run_exactbench(cfg, denoisers, mixture, name, say, save)
    print(format_summary(result))
    print(format_tuning(result))
    print(f"\n({time.perf_counter() - start:.0f} s on {torch.get_num_threads()} CPU threads, {cpu_name()})")
    if args.out is not None:
        write_result(result, args.out)
        plot_summary(result, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.json')}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")
    return 0


#: The ``bench`` subcommands (``args.bench``) and what runs them.
_SUBCOMMANDS = {"exactness": run_exactness, "models": run_models, "images": run_images}


def run(args: argparse.Namespace) -> int:
    """``exactps bench SUBCOMMAND``."""
    return _SUBCOMMANDS[args.bench](args)
