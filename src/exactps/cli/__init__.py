"""Command-line interface: ``exactps verify``, ``bench``, ``train``, ``export`` and ``sample``.

Each command lives in its own module with ``add(subparsers)`` (its options) and ``run(args)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from exactps.cli import bench, export, sample, train, verify
from exactps.runtime import default_threads

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  exactps verify --quick                        exactness report with oracle denoisers (about a minute)
  exactps train --data builtin --preset tiny --size 16 --steps 200 --out runs/tiny
                                                (LR warm-up: min(1000, steps // 10) = 20 steps here)
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
    for command in (verify, bench, train, export, sample):
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "threads"):
        threads = default_threads() if args.threads is None else args.threads
        if threads < 1:
            print(f"exactps: error: --threads must be >= 1, got {threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(threads)
    try:
        return int(args.func(args))
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    ) as err:
        print(f"exactps: error: {err}", file=sys.stderr)
        return 2
