"""Golden figures of the public commands, recorded before the redesign and asserted after it.

Only the CLI is used (its flags did not change), so the same script measures any version:

    python tests/golden/record.py --out tests/golden/figures.json [--full]

It prints and writes: the rows of a small ``exactps verify`` grid (``--full``: ``verify --quick``),
the per-step losses of tiny ``exactps train`` runs (EPS, conditional, denoiser; bicubic and average-pooling
SR, inpainting, Gaussian and motion blur, colorization, ``A = 0``), and the PSNRs of ``exactps sample`` with the
shipped ``models/sr4-tiny-16px`` on a scikit-image photograph, with the file names it writes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from exactps.cli import main as exactps

ROOT = Path(__file__).resolve().parents[2]
SMALL_VERIFY = [
    "--tasks", "inpaint-box", "--interpolants", "ve", "--samplers", "ddim,dpmpp-2m", "--nfe", "10",
    "--gmm-samples", "200", "--atoms", "20", "--crop", "8", "--finite-samples", "50",
]  # fmt: skip
TRAIN = [
    "--objective", "eps", "--preset", "tiny", "--size", "16", "--data", "builtin", "--task", "sr4,inpaint-box",
    "--sigma-y", "0.01,0.2", "--steps", "4", "--batch", "4", "--warmup", "2", "--log-every", "1",
    "--ckpt-every", "2", "--grid-every", "4", "--seed", "0", "--no-progress",
]  # fmt: skip
#: More objectives and operators (3 steps each): name -> options replacing those of TRAIN.
TRAIN_VARIANTS = {
    "conditional": ["--objective", "conditional", "--task", "deblur-motion,sr2-avg"],
    "denoiser": ["--objective", "denoiser", "--task", "none", "--conditioning", "none"],
    "eps-colorize-none": ["--task", "colorize,deblur-gauss,inpaint-random,none", "--conditioning", "map"],
    "eps-scalar": ["--task", "deblur-motion", "--conditioning", "scalar"],
}


def _with(base: list[str], changes: list[str]) -> list[str]:
    """``base`` with the options in ``changes`` replaced (or added)."""
    out = list(base)
    for opt, value in zip(changes[::2], changes[1::2], strict=True):
        if opt in out:
            out[out.index(opt) + 1] = value
        else:
            out += [opt, value]
    return out


def verify_rows(tmp: Path, full: bool) -> list[dict]:
    out = tmp / ("verify-full" if full else "verify")
    args = ["verify", "--quick"] if full else ["verify", *SMALL_VERIFY]
    assert exactps([*args, "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())
    return [{k: r[k] for k in ("prior", "task", "interpolant", "sampler", "nfe", "value")} for r in rows]


def train_losses(tmp: Path, options: list[str] = TRAIN, name: str = "run") -> list[float]:
    run = tmp / name
    assert exactps(["train", *options, "--out", str(run)]) == 0
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def variant_losses(tmp: Path) -> dict[str, list[float]]:
    """The losses of 3 steps of each of :data:`TRAIN_VARIANTS`."""
    out = {}
    for name, changes in TRAIN_VARIANTS.items():
        out[name] = train_losses(tmp, _with(TRAIN, [*changes, "--steps", "3"]), name)
    return out


def photo(path: Path) -> Path:
    from skimage import data

    Image.fromarray(np.asarray(data.astronaut())).save(path)
    return path


def sample_figures(tmp: Path) -> dict:
    out = tmp / "sample"
    model = ROOT / "models" / "sr4-tiny-16px"
    args = ["sample", "--model", str(model), "--task", "sr4", "--image", str(photo(tmp / "astronaut.png")), "--crop",
            "--num-samples", "2", "--nfe", "10", "--seed", "0", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert exactps(args) == 0
    image = json.loads((out / "summary.json").read_text())["images"][0]
    average = {k: image[k] for k in ("psnr_measurement", "psnr_mean", "coverage90", "mean_std")}
    average["psnr_samples"] = sum(image["psnr_samples"]) / len(image["psnr_samples"])
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return {"average": average, "files": files}


def record(full: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return {
            "verify": verify_rows(tmp, full),
            "train_losses": train_losses(tmp),
            "variant_losses": variant_losses(tmp),
            "sample": sample_figures(tmp),
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--full", action="store_true", help="verify --quick instead of the small grid")
    a = parser.parse_args()
    figures = record(a.full)
    a.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
