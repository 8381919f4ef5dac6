"""Command-line interface: ``exactps verify``, ``exactps bench exactness``."""

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
            print(f"error: {out.with_suffix(suffix)} exists (use --force to overwrite)", file=sys.stderr)
            return True
    return False


def _write_rows(out: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``out.csv`` and ``out.json`` atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out.with_suffix(".csv"))
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(out.with_suffix(".json"))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.json')}")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from exactps.training import add_train_arguments, train_main

    p = sub.add_parser(
        "train",
        help="train a denoiser, an EPS denoiser or the conditional baseline (torchrun for several GPUs)",
    )
    add_train_arguments(p)
    p.set_defaults(func=train_main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exactps", description="Exact posterior sampling for linear inverse problems in imaging."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_verify(sub)
    _add_bench(sub)
    _add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
