"""Tables, figure and files of the exactness benchmark."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from exactps.exactbench.run import ExactBenchResult
from exactps.files import atomic_write_text

__all__ = [
    "format_paired",
    "format_rows",
    "format_summary",
    "format_tuning",
    "plot_rows",
    "plot_summary",
    "result_json",
    "write_result",
]


def _cell(stat: dict[str, float] | None) -> str:
    if stat is None:
        return ""
    mean, se = stat["mean"], stat["se"]
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.2f} ± {se:.2f}" if math.isfinite(se) else f"{mean:.2f}"


def _block(rows: list[dict[str, Any]], metric: str, title: str) -> list[str]:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out = [f"\n{title}", f"| method | NFE | VJP | ms/sample | {' | '.join(tasks)} |", "|" + "---|" * (4 + len(tasks))]
    for method in dict.fromkeys(r["method"] for r in rows):
        by_task = {r["task"]: r for r in rows if r["method"] == method}
        nfe = "/".join(str(n) for n in sorted({r["nfe"] for r in by_task.values()}))
        vjp = "/".join(str(n) for n in sorted({r["vjp"] for r in by_task.values()}))
        ms = sum(r["ms_per_sample"] for r in by_task.values()) / len(by_task)
        cells = " | ".join(_cell(by_task[t].get(metric)) if t in by_task else "" for t in tasks)
        out.append(f"| {method} | {nfe} | {vjp} | {ms:.2f} | {cells} |")
    return out


def format_summary(result: ExactBenchResult) -> str:
    """Per (prior, denoisers): SW2 / floor per task (mean ± standard error), and for a Gaussian prior the
    KL and W2 of the fitted Gaussian, with the sample counts."""
    cfg = result.config
    header = (
        f"n = {cfg.measurements} measurements x {cfg.runs} runs per cell, {cfg.n_samples} samples per run; "
        f"floor: mean over {cfg.n_refs} pairs of exact sets; ± is the standard error over measurements; "
        f"s_y = {cfg.sigma_y}"
    )
    return format_rows(result.summary(), header)


def format_rows(rows: list[dict[str, Any]], header: str = "") -> str:
    """The tables of :func:`format_summary` from summary rows (:meth:`ExactBenchResult.summary`, or the
    ``summary`` of several ``OUT.json`` files put together: one column per task)."""
    out = [header] if header else []
    for prior, dn in dict.fromkeys((r["prior"], r["denoisers"]) for r in rows):
        block = [r for r in rows if (r["prior"], r["denoisers"]) == (prior, dn)]
        out += _block(block, "sw2/floor", f"{prior} prior, {dn} denoisers: SW2 / Monte-Carlo floor (1.0 = exact)")
        if "KL" in block[0]:
            out += _block(
                block,
                "KL",
                f"{prior} prior, {dn} denoisers: KL(fitted Gaussian || exact posterior), nats "
                f"(exact samples: the 'exact posterior' row)",
            )
            out += _block(block, "W2", f"{prior} prior, {dn} denoisers: W2(fitted Gaussian, exact posterior)")
    return "\n".join(out)


def format_paired(rows: list[dict[str, Any]], metric: str = "sw2/floor") -> str:
    """One table of ``metric``: a row per method, a column per (task, denoisers), e.g. the same method on the
    oracle and on learned denoisers side by side (rows of one prior)."""
    cols = list(dict.fromkeys((r["task"], r["denoisers"]) for r in rows))
    head = " | ".join(f"{t} {d}" for t, d in cols)
    out = [f"| method | NFE | VJP | {head} |", "|" + "---|" * (3 + len(cols))]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = {(r["task"], r["denoisers"]): r for r in rows if r["method"] == method}
        first = next(iter(cells.values()))
        vals = " | ".join(_cell(cells[c].get(metric)) if c in cells else "" for c in cols)
        out.append(f"| {method} | {first['nfe']} | {first['vjp']} | {vals} |")
    return "\n".join(out)


def _point(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


def format_tuning(result: ExactBenchResult) -> str:
    """The chosen settings per prior, denoisers, task and baseline, and the published point's score ("" if
    nothing was tuned)."""
    if not result.tuning:
        return ""
    lines = [
        f"\nsettings chosen on {result.config.tuning_measurements} tuning measurements per task "
        "(mean SW2 / floor; the published point is always a candidate):"
    ]
    if result.config.tune_with == "first":
        lines.append("(every set of denoisers uses the settings chosen with the first, listed below)")
    seen: set[int] = set()
    for (prior, dn, task), per in result.tuning.items():
        if id(per) in seen:  # shared with the first denoisers
            continue
        seen.add(id(per))
        for name, tuned in per.items():
            published = tuned.scores[0]
            best = min(s for _, s in tuned.scores)
            lines.append(
                f"- {prior}/{dn} {task} {name}: chose {_point(tuned.chosen)} ({best:.2f}); "
                f"published {_point(published[0])} ({published[1]:.2f}); {len(tuned.scores)} points"
            )
    return "\n".join(lines)


def result_json(result: ExactBenchResult) -> dict[str, Any]:
    """Everything: configuration, environment, summary rows, tuning (every candidate), every record."""
    return {
        "config": asdict(result.config),
        "environment": {
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "summary": result.summary(),
        "tuning": {"/".join(k): {n: asdict(r) for n, r in per.items()} for k, per in result.tuning.items()},
        "settings": result.settings,
        "records": [asdict(r) for r in result.records],
    }


def write_result(result: ExactBenchResult, out: Path) -> None:
    """``OUT.json`` (:func:`result_json`) and ``OUT.md`` (the tables)."""
    atomic_write_text(out.with_suffix(".json"), json.dumps(result_json(result), indent=1, default=str))
    atomic_write_text(out.with_suffix(".md"), format_summary(result) + "\n" + format_tuning(result) + "\n")


def plot_summary(result: ExactBenchResult, path: Path) -> None:
    """SW2 / floor against cost (NFE + backward passes), one panel per (prior, denoisers) x task."""
    plot_rows(result.summary(), path)


def plot_rows(summary: list[dict[str, Any]], path: Path) -> None:
    """:func:`plot_summary` from summary rows (e.g. of several ``OUT.json`` files put together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r["nfe"] > 0]
    groups = list(dict.fromkeys((r["prior"], r["denoisers"]) for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(len(groups), len(tasks), figsize=(3.4 * len(tasks), 3.0 * len(groups)), squeeze=False)
    for i, group in enumerate(groups):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            for r in (r for r in rows if (r["prior"], r["denoisers"]) == group and r["task"] == task):
                stat = r["sw2/floor"]
                if not math.isfinite(stat["mean"]):
                    continue
                eps = r["method"].startswith("EPS")
                colour = "tab:blue" if eps else ("tab:green" if r["tuned"] else "tab:red")
                se = stat["se"] if math.isfinite(stat["se"]) else 0.0
                ax.errorbar(r["nfe"] + r["vjp"], stat["mean"], yerr=se, fmt="o" if eps else "s", c=colour, ms=3)
                ax.annotate(r["method"].replace("EPS ", ""), (r["nfe"] + r["vjp"], stat["mean"]), fontsize=4)
            ax.set(xscale="log", yscale="log", title=f"{group[0]} / {group[1]}: {task}")
            ax.title.set_fontsize(7)
            ax.set_xlabel("NFE + backward passes", fontsize=6)
            ax.set_ylabel("SW2 / floor", fontsize=6)
            ax.axhline(1.0, c="grey", lw=0.5, ls="--")
            ax.tick_params(labelsize=5)
    fig.suptitle("exactness vs cost\nblue: EPS; red: baselines, published; green: tuned", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
