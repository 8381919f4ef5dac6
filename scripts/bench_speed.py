"""Speed of EPS against the bare network and against DPS, with untrained networks (timing does not
depend on the weights), on this machine's device.

1. EPS per-step overhead: one x0-prediction of EPS (pivot, variance map, network) against one of the
   bare denoiser (the same network, no measurement), at rho = 1, per task; median of interleaved repeats
   (:func:`exactps.imagebench.run.eps_step_overhead`, the measurement ``exactps bench images`` reports).
2. Wall clock per image: EPS at 20 NFE (Heun) against DPS at 250 and 1000 steps, same batch and device.
   DPS's cost is linear in its steps (one forward and one backward pass each), so it is measured over
   ``--dps-probe`` steps and scaled; EPS is measured whole.

    python scripts/bench_speed.py --preset small-64 --size 64 --batch 4 --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from exactps.baselines import dps_sample
from exactps.imagebench import make_problem
from exactps.imagebench.run import eps_step_overhead
from exactps.interpolants import VE, VPLinear
from exactps.loading import LoadedModel
from exactps.models import ModelConfig, build_model
from exactps.posterior import PosteriorPredictor
from exactps.runtime import cpu_name, default_device
from exactps.samplers import initial_noise, sample
from exactps.tasks import PAPER_TASKS, make_task_operator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small-64")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--dps-probe", type=int, default=20, help="DPS steps timed (then scaled to 250 and 1000)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device) if a.device else default_device()
    torch.manual_seed(0)
    config = ModelConfig(a.preset, 3, "map", 0.5, a.size)
    eps = build_model("eps", config).to(device).eval().requires_grad_(False)
    prior = build_model("denoiser", ModelConfig(a.preset, 3, "none", 0.5, a.size)).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(a.batch, 3, a.size, a.size, generator=g) * 2 - 1).to(device)
    where = f"{device} ({cpu_name()}, {torch.get_num_threads()} threads)"
    print(f"{a.preset} at {a.size}x{a.size}, batch {a.batch}, {where}")
    print("\n| task | EPS step (ms) | bare step (ms) | overhead |\n|---|---|---|---|")
    loaded = LoadedModel(eps, "eps", config, Path("untrained"))
    names = [f"random-{i}" for i in range(a.batch)]
    for task in PAPER_TASKS:
        o = eps_step_overhead(loaded, make_problem(task, x0.cpu(), names, 0.05, seed=0).to(device), a.repeats)
        eps_ms, bare_ms = 1e3 * o["eps_seconds"], 1e3 * o["bare_seconds"]
        print(f"| {task} | {eps_ms:.1f} | {bare_ms:.1f} | {100 * o['overhead']:+.1f}% |")

    ve = VE()
    task = "paper-sr4"
    op = make_task_operator(task, x0.shape[1:], torch.Generator().manual_seed(0), batch=a.batch).to(device)
    y = op.measure(x0, 0.05, torch.Generator(device=device).manual_seed(2))
    with torch.no_grad():
        predict = PosteriorPredictor(eps, ve, op, y, 0.05)
        sample(predict, ve, tuple(x0.shape), "heun", 7, device=device)  # warm-up
        eps_s = _seconds(lambda: sample(predict, ve, tuple(x0.shape), "heun", 20, device=device), device)
    vp = VPLinear()
    x_init = initial_noise(vp, tuple(x0.shape), torch.Generator().manual_seed(3)).to(device)
    prior_predict = PosteriorPredictor(prior, vp)
    dps_sample(prior_predict, vp, op, y, 0.05, x_init, steps=2)  # warm-up
    probe = _seconds(lambda: dps_sample(prior_predict, vp, op, y, 0.05, x_init, steps=a.dps_probe), device)
    per_step = probe / a.dps_probe
    print(f"\n{task}, seconds per image (batch {a.batch}):")
    print(f"  EPS, Heun 20 NFE:  {eps_s / a.batch:.3f}")
    for steps in (250, 1000):
        dps = per_step * steps / a.batch
        print(f"  DPS {steps} steps:    {dps:.3f}  ({dps / (eps_s / a.batch):.0f}x EPS's; {a.dps_probe} steps timed)")


if __name__ == "__main__":
    main()
