"""Quality vs training images seen, averaged over tasks, from ``exactps bench models --all-checkpoints
--samples K --out OUT`` (its ``OUT.json``): the PSNR of one posterior sample and of the mean of the K
samples, one line per run. Prints the table and writes the figure.

    python scripts/plot_curves.py OUT.json FIGURE.png [--title TEXT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def curves(rows: list[dict]) -> dict[str, list[tuple[int, float, float]]]:
    """Per run: (images seen, mean sample PSNR, mean PSNR of the sample mean), averaged over tasks."""
    out: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        run = r["model"].split("/")[0]
        s = r["samples"]
        out.setdefault(run, []).append((r["images_seen"], sum(x["psnr"] for x in s) / len(s),
                                        sum(x["mean_psnr"] for x in s) / len(s)))  # fmt: skip
    return {run: sorted(points) for run, points in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path)
    parser.add_argument("figure", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    data = curves(json.loads(args.result.read_text()))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for run, points in data.items():
        seen = [p[0] for p in points]
        axes[0].plot(seen, [p[1] for p in points], marker="o", label=run)
        axes[1].plot(seen, [p[2] for p in points], marker="o", label=run)
        print(f"{run}: " + ", ".join(f"{n}: {a:.2f} / {b:.2f}" for n, a, b in points))
    for ax, what in zip(axes, ("one posterior sample", "mean of the samples"), strict=True):
        ax.set_title(f"PSNR of {what}")
        ax.set_xlabel("training images seen")
        ax.set_ylabel("dB, mean over the five tasks")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.figure, dpi=100)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
