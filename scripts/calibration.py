"""Calibration of a model's uncertainty maps on held-out images, through ``exactps sample`` itself.

For each task, restores the first ``--images`` test images (resized to the model's training size)
with ``--samples`` posterior samples each and reads the ``coverage90`` of every image's report: the
fraction of pixels whose true value lies in the per-pixel 90% prediction interval
``mean ± t_{J-1} s sqrt(1 + 1/J)``. A calibrated sampler covers about 90%; less means overconfident
(too little spread), more underconfident. Prints a Markdown table (mean ± standard error over images)
and writes it, with the rows, to ``OUT.md`` and ``OUT.json``.

    python scripts/calibration.py --model models/faces-32-eps --test FACES_TEST_FOLDER --out OUT \
        [--images 64] [--samples 16] [--nfe 35] [--tasks paper-inpaint-random,...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from exactps.cli import main as exactps
from exactps.imagebench.scoring import aggregate
from exactps.loading import load_model
from exactps.tasks import PAPER_TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--test", required=True, help="folder of held-out ground-truth images")
    parser.add_argument("--out", required=True, type=Path, help="writes OUT.md and OUT.json")
    parser.add_argument("--tasks", default=",".join(PAPER_TASKS))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--nfe", type=int, default=35)
    parser.add_argument("--sigma-y", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    for path in (args.out.with_suffix(".md"), args.out.with_suffix(".json")):
        if path.exists():
            raise SystemExit(f"{path} exists; remove it first")
    size = load_model(args.model, device="cpu").model_config.image_size
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            out = Path(tmp) / task
            argv = ["sample", "--model", str(args.model), "--task", task, "--image", args.test, "--max-images",
                    str(args.images), "--resize", str(size), "--num-samples", str(args.samples), "--nfe",
                    str(args.nfe), "--sigma-y", str(args.sigma_y), "--device", "cpu", "--no-progress", "--out",
                    str(out)]  # fmt: skip
            if args.threads:
                argv += ["--threads", str(args.threads)]
            if exactps(argv) != 0:
                raise SystemExit(f"exactps sample failed on {task}")
            images = json.loads((out / "summary.json").read_text())["images"]
            row = {"task": task, "images": len(images)}
            for key in ("coverage90", "psnr_mean", "psnr_measurement", "mean_std"):
                agg = aggregate(torch.tensor([r[key] for r in images], dtype=torch.float64))
                row[key], row[f"{key}_se"] = agg.mean, agg.se
            rows.append(row)
    seconds = time.perf_counter() - start
    lines = [
        f"Calibration of `{args.model}`: {args.images} test images per task ({args.test}, resized to {size}), "
        f"{args.samples} samples each, Heun {args.nfe} NFE, s_y {args.sigma_y}; mean ± standard error over images.",
        "",
        "| task | coverage of the 90% interval | PSNR of the mean (dB) | PSNR of A+ y (dB) | mean std (0-1 pixels) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['coverage90']:.3f} ± {r['coverage90_se']:.3f} | {r['psnr_mean']:.2f} ± "
            f"{r['psnr_mean_se']:.2f} | {r['psnr_measurement']:.2f} ± {r['psnr_measurement_se']:.2f} | "
            f"{r['mean_std']:.4f} |"
        )
    lines += ["", f"({seconds:.0f} s on {torch.get_num_threads()} CPU thread(s))"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    config = {k: str(v) for k, v in vars(args).items()}
    args.out.with_suffix(".json").write_text(json.dumps({"config": config, "rows": rows, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
