"""How far a learned denoiser is from the exact one of the Gaussian mixture it was trained on.

    python scripts/denoiser_gap.py --mixture patch-gmm.safetensors --model runs/patch-prior [--images 2000]

For fresh draws ``x0`` of the mixture and ``x = x0 + sigma n``, prints per ``sigma`` the mean squared
error of the learned ``D(x; sigma)`` and of the exact ``E[x0 | x]``, and their ratio (1 = exact). An EPS
model is scored at ``A = 0`` (its prior part).
"""

from __future__ import annotations

import argparse

import torch

from exactps.covariance import IsotropicNoise
from exactps.loading import load_model
from exactps.mixture_fit import load_mixture


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mixture", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--sigmas", default="0.02,0.05,0.1,0.2,0.5,1,2")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    mixture, model = load_mixture(args.mixture), load_model(args.model, device="cpu")
    g = torch.Generator().manual_seed(args.seed)
    x0 = mixture.sample(args.images, g)
    print("| sigma | MSE learned | MSE exact | ratio |\n|---|---|---|---|")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        x = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        exact = mixture.denoise(x, IsotropicNoise(torch.tensor([sigma], dtype=torch.float64)))
        with torch.no_grad():
            learned = model.model.denoise(x.float(), sigma).double()
        mse_l, mse_e = ((learned - x0) ** 2).mean().item(), ((exact - x0) ** 2).mean().item()
        print(f"| {sigma:g} | {mse_l:.5f} | {mse_e:.5f} | {mse_l / mse_e:.3f} |")


if __name__ == "__main__":
    main()
