"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

__all__ = ["THREADS_HELP", "csv_list", "device"]


def csv_list(kind: type = str) -> Callable[[str], tuple]:
    """A comma-separated tuple of ``kind`` (empty items dropped)."""

    def parse(text: str) -> tuple:
        return tuple(kind(v) for v in text.split(",") if v)

    return parse


def device(text: str) -> str:
    """A torch device name that exists here (``cuda`` only where CUDA is available)."""
    try:
        dev = torch.device(text)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"invalid device {text!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available")
    return text


#: ``--threads`` help of the commands whose default is :func:`exactps.runtime.default_threads`.
THREADS_HELP = "torch CPU threads (default: OMP_NUM_THREADS, else the cores not busy with other work)"
