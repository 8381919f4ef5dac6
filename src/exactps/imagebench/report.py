"""What the image benchmark writes: a table per task (mean and standard error over images), CSV and
JSON rows, and a labelled grid figure per task."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from exactps.files import atomic_write_text, write_rows
from exactps.imagebench.run import STD_WHITE, BenchResults, TaskResult
from exactps.imagebench.scoring import METRICS, SET_METRICS
from exactps.images import save_labelled_grid

__all__ = ["format_results", "output_paths", "result_rows", "write_results"]

def _cell(mean: float, se: float, digits: int) -> str:
    if math.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _label(name: str) -> tuple[str, int, str]:
    """Header, digits and the better direction of a metric."""
    if name in METRICS:
        m = METRICS[name]
        return m.label, m.digits, "↑" if m.higher else "↓"
    label, digits = SET_METRICS[name]
    return label, digits, "↓"


def format_task(result: TaskResult, metrics: tuple[str, ...], n_images: int, samples: int) -> str:
    """A markdown table: one row per method, mean ± standard error over the images."""
    cols = [m for m in metrics if m in METRICS or m in SET_METRICS]
    head = "| method | NFE | VJP | s/sample | " + " | ".join(f"{_label(m)[0]} {_label(m)[2]}" for m in cols) + " |"
    lines = [f"### {result.task} ({n_images} images x {samples} samples)", "", head, "|---" * (4 + len(cols)) + "|"]
    for row in result.rows:
        cells = []
        for m in cols:
            if m in row.scores:
                cells.append(_cell(row.scores[m].mean, row.scores[m].se, _label(m)[1]))
            elif m in row.set_scores:
                cells.append(_cell(*row.set_scores[m], _label(m)[1]))
            else:
                cells.append("")
        name = row.method + (f" ({100 * row.nonfinite:.0f}% diverged)" if row.nonfinite else "")
        lines.append(f"| {name} | {row.nfe} | {row.vjp} | {row.sec_per_sample:.3g} | " + " | ".join(cells) + " |")
    if result.tuning:
        lines += ["", "tuned on the validation images (mean PSNR of one sample per image):"]
        for name, tuned in result.tuning.items():
            tried = ", ".join(f"{_point(p)}: {s:.2f}" for p, s in tuned.scores)
            lines.append(f"- {name}: chose {_point(tuned.chosen)} (tried {tried})")
    if result.overhead is not None:
        o = result.overhead
        lines.append(f"\nEPS step vs the bare network step: {o['eps_seconds'] * 1e3:.2f} ms vs "
                     f"{o['bare_seconds'] * 1e3:.2f} ms, overhead {100 * o['overhead']:+.1f}%")  # fmt: skip
    return "\n".join(lines)


def _point(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items()) or "defaults"


def format_results(results: BenchResults) -> str:
    c = results.config
    return "\n\n".join(format_task(t, c.metrics, c.images, c.samples) for t in results.tasks)


def result_rows(results: BenchResults) -> list[dict[str, Any]]:
    """One flat record per task and method (CSV / JSON)."""
    rows = []
    for task in results.tasks:
        for r in task.rows:
            row: dict[str, Any] = {"task": task.task, "method": r.method, "tuned": r.tuned, "nfe": r.nfe, "vjp": r.vjp,
                                   "sec_per_sample": r.sec_per_sample, "images": results.config.images,
                                   "samples": results.config.samples, "sigma_y": results.config.sigma_y,
                                   "nonfinite": r.nonfinite}  # fmt: skip
            for m in results.config.metrics:
                if m in r.scores:
                    row[m], row[f"{m}_se"] = r.scores[m].mean, r.scores[m].se
                elif m in r.set_scores:
                    row[m], row[f"{m}_std"] = r.set_scores[m]
            row["settings"] = json.dumps(r.settings, default=str)
            rows.append(row)
    return rows


def output_paths(out: Path, tasks: tuple[str, ...]) -> list[Path]:
    """The files :func:`write_results` writes for ``out``."""
    return [out.with_suffix(".json"), out.with_suffix(".csv")] + [out.parent / f"{out.name}-{t}.png" for t in tasks]


def write_results(results: BenchResults, out: Path, scale: int = 2) -> list[Path]:
    """``OUT.json`` (configuration, environment, rows, tuning, overheads), ``OUT.csv`` (rows) and
    ``OUT-<task>.png`` (grid: each method's first sample, the EPS standard deviations, the truth)."""
    rows = result_rows(results)
    write_rows(out, rows)
    record = {
        "config": asdict(results.config),
        "environment": results.environment,
        "rows": rows,
        "tuning": {t.task: {k: asdict(v) for k, v in t.tuning.items()} for t in results.tasks},
        "overhead": {t.task: t.overhead for t in results.tasks},
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1, default=str))
    written = [out.with_suffix(".json"), out.with_suffix(".csv")]
    for task in results.tasks:
        labels = [label for label, _ in task.pictures]
        images = [torch.as_tensor(img) for _, img in task.pictures]
        title = (f"{task.task}, s_y = {results.config.sigma_y:g}: one sample per method; "
                 f"std rows: per-pixel std of {results.config.samples} samples, white = {STD_WHITE:g}")  # fmt: skip
        written.append(save_labelled_grid(images, labels, out.parent / f"{out.name}-{task.task}.png", scale, title))
    return written
