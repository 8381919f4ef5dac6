"""A compact reading of an ``exactps bench images`` result: per task, the EPS models, the conditional
models and the best training-free baseline per metric (tuned and published rows alike), and whether an
EPS row beats every baseline on PSNR, LPIPS and CRPS (each a mean over images; the standard errors are
in the full tables).

    python scripts/summarize_bench.py OUT.json [--eps NAME] > summary.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: metric -> (label, larger is better, digits)
METRICS = {
    "psnr": ("PSNR", True, 2),
    "psnr_mean": ("PSNR of mean", True, 2),
    "lpips": ("LPIPS", False, 3),
    "crps_pix": ("CRPS", False, 2),
    "coverage": ("cover90", True, 2),
}
WIN_METRICS = ("psnr", "lpips", "crps_pix")
BASELINES = ("dps", "pigdm", "ddrm", "diffpir", "ddnm", "daps", "mpgd")


def is_baseline(method: str) -> bool:
    return method.split(" ")[0] in BASELINES


def cell(row: dict, metric: str) -> str:
    digits = METRICS[metric][2]
    return f"{row[metric]:.{digits}f} ± {row[metric + '_se']:.{digits}f}"


def best(rows: list[dict], metric: str) -> dict:
    larger = METRICS[metric][1]
    return (max if larger else min)(rows, key=lambda r: r[metric])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path)
    parser.add_argument("--eps", help="the EPS row whose wins are counted (default: the first EPS model at 20 NFE)")
    args = parser.parse_args()
    data = json.loads(args.result.read_text())
    rows = data["rows"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    kinds = ("eps", "conditional")
    models = [r["method"] for r in rows if r["task"] == tasks[0] and r["method"].split(" ")[0] in kinds]
    focus = args.eps or next(m for m in models if m.startswith("eps") and m.endswith("[20]"))
    lines = ["| task | method | NFE | s/sample | " + " | ".join(METRICS[m][0] for m in METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(METRICS)]  # fmt: skip
    wins = {m: 0 for m in WIN_METRICS}
    for task in tasks:
        here = [r for r in rows if r["task"] == task]
        baselines = [r for r in here if is_baseline(r["method"])]
        shown = [r for r in here if r["method"] in models and not r["method"].endswith("[1]")]
        for r in shown:
            lines.append(f"| {task} | {r['method']} | {r['nfe']} | {r['sec_per_sample']:.3g} | "
                         + " | ".join(cell(r, m) for m in METRICS) + " |")  # fmt: skip
        best_cells = []
        for m in METRICS:
            if m == "coverage":  # no "best": an exact sampler's value depends on J (about 0.56 at J = 4)
                best_cells.append("")
                continue
            b = best(baselines, m)
            best_cells.append(f"{cell(b, m)} ({b['method'].replace(' published', ' pub.')})")
        lines.append(f"| {task} | best baseline per metric | | | " + " | ".join(best_cells) + " |")
        ours = next(r for r in here if r["method"] == focus)
        for m in WIN_METRICS:
            b = best(baselines, m)
            larger = METRICS[m][1]
            wins[m] += int(ours[m] > b[m] if larger else ours[m] < b[m])
    print("\n".join(lines))
    n = len(tasks)
    print(f"\n`{focus}` beats every baseline row (tuned and published) on: "
          + ", ".join(f"{METRICS[m][0]} {wins[m]}/{n} tasks" for m in WIN_METRICS))  # fmt: skip


if __name__ == "__main__":
    main()
