"""How far a learned denoiser is from the exact one of the Gaussian mixture it was trained on.

    python scripts/denoiser_gap.py --mixture patch-gmm.safetensors --model runs/patch-prior [--images 2000]
    python scripts/denoiser_gap.py --mixture patch-gmm.safetensors --model runs/patch-eps --task sr4

For fresh draws ``x0`` of the mixture and ``x_t = x0 + sigma n`` (VE), prints per ``sigma`` the mean
squared error of the learned x0-prediction and of the exact ``E[x0 | x_t]`` (or, with ``--task``, of the
EPS model's ``E[x0 | x_t, y]`` against the exact one, ``y = A x0 + s_y n'``), and their ratio (1 = exact).
"""

from __future__ import annotations

import argparse

import torch

from exactps.interpolants import VE
from exactps.loading import load_model
from exactps.mixture_fit import load_mixture
from exactps.posterior import PosteriorPredictor
from exactps.tasks import make_task_operator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mixture", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--sigmas", default="0.02,0.05,0.1,0.2,0.5,1,2")
    p.add_argument("--task", default=None, help="score an EPS model on this task (default: A = 0)")
    p.add_argument("--sigma-y", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    mixture, model = load_mixture(args.mixture), load_model(args.model, device="cpu")
    g = torch.Generator().manual_seed(args.seed)
    x0 = mixture.sample(args.images, g)
    op = y = None
    if args.task is not None:
        op = make_task_operator(args.task, tuple(mixture.img_shape), g, torch.float64)
        y = op.measure(x0, args.sigma_y, g)
    interp = VE()
    exact = PosteriorPredictor(mixture.denoise, interp, op, y, args.sigma_y if op is not None else None)
    if op is None:
        learned = PosteriorPredictor(model.model, interp)
    else:
        op32 = op.to_dtype(torch.float32)
        learned = model.spec.predictor(model.model, interp, op32, y.float(), args.sigma_y)
    print(f"task: {args.task or 'none (A = 0)'}\n\n| sigma | MSE learned | MSE exact | ratio |\n|---|---|---|---|")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        x_t = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        t = torch.tensor(sigma, dtype=torch.float64)
        with torch.no_grad():
            x_exact = exact(x_t, t)
            x_learned = learned(x_t.float(), t.float()).double()
        mse_l, mse_e = ((x_learned - x0) ** 2).mean().item(), ((x_exact - x0) ** 2).mean().item()
        print(f"| {sigma:g} | {mse_l:.5f} | {mse_e:.5f} | {mse_l / mse_e:.3f} |")

if __name__ == "__main__":
    main()
