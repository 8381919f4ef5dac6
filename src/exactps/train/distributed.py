"""DDP helpers: rank and world size, barriers, and the process group under ``torchrun``."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["barrier", "dist_info", "init_distributed"]


def dist_info() -> tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier(world: int) -> None:
    """Wait for every process (a no-op for a single one)."""
    if world > 1:
        dist.barrier()


def init_distributed() -> bool:
    """Initialise the process group under torchrun (``WORLD_SIZE > 1``): nccl on CUDA, gloo on the CPU.
    Returns whether it was initialised here (then the caller destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True
