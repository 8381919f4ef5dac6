"""``exactps verify``: the exactness report (EPS with oracle denoisers against exact posteriors)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from exactps.cli.options import csv_list
from exactps.data import builtin_crops
from exactps.files import existing_outputs, write_rows
from exactps.tasks import check_simulated
from exactps.verify import FULL_GRID, QUICK_GRID, exactness_table, format_table

__all__ = ["add", "run"]


def add(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--tasks", type=csv_list(), default=None, help=f"comma list (default {','.join(FULL_GRID.tasks)})")
    p.add_argument("--interpolants", type=csv_list(), default=None)
    p.add_argument("--samplers", type=csv_list(), default=None)
    p.add_argument("--nfe", type=csv_list(int), default=None, help="comma list (default 10,20,50,100,200)")
    p.add_argument("--gmm-samples", type=int, default=2000)
    p.add_argument("--no-finite", action="store_true", help="skip the finite-image prior")
    p.add_argument("--atoms", type=int, default=200, help="images in the finite prior")
    p.add_argument("--crop", type=int, default=32, help="crop size of the finite prior's images")
    p.add_argument("--finite-samples", type=int, default=500)
    p.add_argument("--finite-interpolants", type=csv_list(), default=["ve", "flow"])
    p.add_argument("--finite-samplers", type=csv_list(), default=["ddim", "dpmpp-2m"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small problems run fastest on 1)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows to OUT.csv and OUT.json")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    grid = QUICK_GRID if args.quick else FULL_GRID
    tasks = args.tasks or list(grid.tasks)
    interps = args.interpolants or list(grid.interpolants)
    samplers = args.samplers or list(grid.samplers)
    nfes = args.nfe or list(grid.nfes)
    check_simulated(tasks)  # before any output
    if args.out is not None and not args.force and existing_outputs(args.out, (".csv", ".json")):
        return 2
    atoms = None
    if not args.no_finite:
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
        write_rows(args.out, [asdict(r) for r in rows])
    return 0
