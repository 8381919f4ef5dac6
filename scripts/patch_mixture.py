"""Fit a Gaussian mixture to 8x8 colour patches of photographs: a prior with image-like structure and an
exact posterior (the learned-network exactness study, scripts/learned_exactness.sh).

    python scripts/patch_mixture.py --out patch-gmm.safetensors [--data builtin|FOLDER] [--components 32]

Patches come from the training split of scikit-image's photographs (``builtin``) or from random crops
of the images of a folder. Prints the mean log-likelihood per patch on the fitted patches and on held-out
patches (the built-in test split, or other crops of the folder).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from exactps.data import ImageFolder, builtin_crops
from exactps.mixture_fit import fit_gaussian_mixture, mixture_log_likelihood, save_mixture


def folder_patches(folder: str, n: int, size: int, generator: torch.Generator, image_size: int) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops of the images of ``folder`` (resized to ``image_size``, in [-1, 1])."""
    images = ImageFolder(folder, image_size, flip=False)
    picks = torch.randint(len(images), (n,), generator=generator).tolist()
    out = []
    for i in picks:
        img = images[i]
        top = int(torch.randint(img.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(img.shape[2] - size + 1, (1,), generator=generator))
        out.append(img[:, top : top + size, left : left + size])
    return torch.stack(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", default="builtin")
    p.add_argument("--size", type=int, default=8, help="patch side")
    p.add_argument("--image-size", type=int, default=64, help="folder images are resized to this first")
    p.add_argument("--patches", type=int, default=30000)
    p.add_argument("--components", type=int, default=32)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--reg", type=float, default=2e-4, help="ridge added to every covariance ([-1, 1] units)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true")
    args = p.parse_args()
    if args.out.exists() and not args.force:
        raise SystemExit(f"{args.out} exists; pass --force to overwrite it")
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    if args.data == "builtin":
        train = builtin_crops(args.patches, args.size, g, split="train")
        held_out = builtin_crops(5000, args.size, g, split="test")
    else:
        train = folder_patches(args.data, args.patches, args.size, g, args.image_size)
        held_out = folder_patches(args.data, 5000, args.size, g, args.image_size)
    start = time.perf_counter()
    fit = fit_gaussian_mixture(
        train,
        args.components,
        args.iters,
        args.reg,
        generator=g,
        progress=lambda i, ll: print(
            f"iteration {i}: {ll:.2f} nats/patch ({time.perf_counter() - start:.0f} s)", flush=True
        ),
    )
    save_mixture(fit.mixture, args.out)
    held_out_ll = mixture_log_likelihood(fit.mixture, held_out)
    print(f"fitted: {fit.log_likelihood[-1]:.2f} nats/patch; held-out: {held_out_ll:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
