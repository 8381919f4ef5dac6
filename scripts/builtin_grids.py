"""Labelled grids of every method on scikit-image's photographs (never on the datasets, whose pictures
stay out of the repository): writes 32x32 test pictures to a temporary folder (8 crops around the face
in ``astronaut`` for a faces model, 8 crops of the photographs' test split for a natural-image model) and
runs ``exactps bench images`` on them with the published baseline settings, keeping its grid per task.

    python scripts/builtin_grids.py --kind faces --prior P --eps E [E ...] --conditional C --out PREFIX
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from exactps.cli import main as exactps
from exactps.data import builtin_crops, builtin_face_crops
from exactps.images import save_image
from exactps.tasks import PAPER_TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("faces", "natural"), required=True)
    parser.add_argument("--prior", required=True)
    parser.add_argument("--eps", nargs="+", required=True)
    parser.add_argument("--conditional", nargs="*", default=[])
    parser.add_argument("--out", required=True, type=Path, help="writes OUT-<task>.png")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    pictures = builtin_face_crops(args.size) if args.kind == "faces" else builtin_crops(
        8, args.size, torch.Generator().manual_seed(0), split="test")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "test"
        folder.mkdir()
        for i, x in enumerate(pictures):
            save_image(x, folder / f"{args.kind}-{i:02d}.png")
        bench = Path(tmp) / "bench"
        argv = ["bench", "images", "--test", str(folder), "--prior", args.prior, "--eps", *args.eps,
                "--tasks", ",".join(PAPER_TASKS), "--images", str(args.images), "--samples", "2", "--eps-nfe", "20",
                "--conditional-nfe", "20", "--baselines", "dps:250,pigdm,ddnm,daps", "--no-tune", "--metrics", "psnr",
                "--grid-scale", "3", "--no-progress", "--out", str(bench)]  # fmt: skip
        if args.conditional:
            argv[argv.index("--tasks"):argv.index("--tasks")] = ["--conditional", *args.conditional]
        if exactps(argv) != 0:
            raise SystemExit("exactps bench images failed")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for task in PAPER_TASKS:
            shutil.copy(Path(tmp) / f"bench-{task}.png", args.out.parent / f"{args.out.name}-{task}.png")
            print(f"wrote {args.out.parent / f'{args.out.name}-{task}.png'}")


if __name__ == "__main__":
    main()
