"""Sampling time under CPU contention: torch's default thread count against exactps's default.

Starts ``--busy`` CPU-bound processes (other work on the machine), then times ``exactps sample`` with
the shipped ``models/sr4-tiny-16px`` (4 samples, 35 NFE, one 16x16 image) ``--repeats`` times with
``--threads`` set to every core (torch's own default) and with no ``--threads`` (exactps's default:
``OMP_NUM_THREADS``, else the cores left free). Prints the median seconds of the sampling (the
report's figure) of each and their ratio, measured side by side in one run.

    python scripts/bench_threads.py [--busy 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exactps.runtime import cpu_name, default_threads, usable_cores

ROOT = Path(__file__).resolve().parents[1]


def burn() -> None:
    while True:
        pass


def time_sample(extra: list[str]) -> float:
    """Seconds the sampling took (the report's ``seconds``: model loading and imports excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "exactps.cli", "sample", "--model", str(ROOT / "models" / "sr4-tiny-16px"),
                "--task", "sr4", "--example", "astronaut", "--crop", "--num-samples", "4", "--nfe", "35",
                "--device", "cpu", "--no-progress", "--out", str(Path(tmp) / "out"), *extra]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        subprocess.run(argv, check=True, capture_output=True, env=env)
        return json.loads((Path(tmp) / "out" / "summary.json").read_text())["images"][0]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes started first")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    burners = [mp.Process(target=burn, daemon=True) for _ in range(args.busy)]
    for p in burners:
        p.start()
    try:
        time.sleep(5)  # let the load average see them
        cores = usable_cores()
        chosen = default_threads({})
        times: dict[str, list[float]] = {"all": [], "default": []}
        for _ in range(args.repeats):  # interleaved, so both see the same load
            times["all"].append(time_sample(["--threads", str(cores)]))
            times["default"].append(time_sample([]))
    finally:
        for p in burners:
            p.terminate()
    a, d = statistics.median(times["all"]), statistics.median(times["default"])
    print(f"{cpu_name()}, {cores} usable cores, {args.busy} busy process(es) started, load {os.getloadavg()[0]:.2f}")
    print("| threads | median s (sampling) | runs |")
    print("|---|---|---|")
    print(f"| {cores} (torch's default: every core) | {a:.2f} | {', '.join(f'{t:.2f}' for t in times['all'])} |")
    print(f"| exactps default (chose {chosen}) | {d:.2f} | {', '.join(f'{t:.2f}' for t in times['default'])} |")
    print(f"ratio: {a / d:.1f}x")


if __name__ == "__main__":
    main()
