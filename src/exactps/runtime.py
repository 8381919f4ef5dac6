"""Where code runs: the default device, and a description of the CPU for benchmark reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["available_memory", "cpu_name", "default_device", "default_threads", "device_memory", "usable_cores"]


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (0 outside torchrun) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity set, capped by a cgroup CPU quota (``cpu.max``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads(environ: dict[str, str] | None = None, load: float | None = None) -> int:
    """Torch CPU threads that do not oversubscribe the machine: ``OMP_NUM_THREADS`` when it is set
    (a positive integer), otherwise the cores left free by other work, ``usable_cores()`` minus the
    1-minute load average (rounded), at least 1. (Torch's own default, every core, made sampling 100x
    slower beside one busy process on a 2-core machine.) ``environ``/``load``: for tests."""
    env = os.environ if environ is None else environ
    value = env.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    cores = usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, cores - round(load)))


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_memory(device: torch.device) -> int | None:
    """The memory a run may use at most: free memory of a CUDA device (``torch.cuda.mem_get_info``), the
    physical memory on the CPU (``os.sysconf``); None when unknown. For upper-bound estimates (training)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, RuntimeError, AttributeError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: torch.device | str) -> int | None:
    """Bytes that can still be allocated on ``device`` (``None`` if unknown): free GPU memory, or on the CPU
    the smaller of the system's available memory and what is left under a cgroup memory limit."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is None:  # cgroup v1
        limit, used = (
            _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        )
    if limit is not None and used is not None and limit < 1 << 60:
        found.append(max(0, limit - used))
    return min(found) if found else None
