"""Running the exactness benchmark: tuning on held-out measurements, then every method on the reported
ones, several runs each, aggregated with standard errors.

Per prior (a family of :data:`~exactps.exactbench.problems.FAMILIES` or a given mixture), per task, per
set of denoisers: ``measurements`` report measurements x ``runs`` runs per method (run ``r`` uses the
same seed for every method); each baseline appears with its published settings and, if ``tune``, with
the settings chosen on ``tuning_measurements`` other measurements (:mod:`exactps.exactbench.tuning`).
A score's mean is over all ``measurements x runs`` values; its standard error is that of the mean of
the per-measurement averages (measurements are the independent units).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from exactps.baselines import BASELINES
from exactps.exactbench.methods import (
    DEFAULT_EPS_SPECS,
    Denoisers,
    Method,
    baseline_method,
    eps_method,
    exact_method,
    oracle_denoisers,
    prior_method,
)
from exactps.exactbench.problems import ExactProblem, draw_problem, family_prior
from exactps.exactbench.scoring import Scorer
from exactps.exactbench.tuning import EXACTNESS_GRIDS, TuningResult, tune_baseline
from exactps.imagebench.scoring import Aggregate, aggregate
from exactps.interpolants import get_interpolant
from exactps.priors import GaussianMixture
from exactps.samplers import SAMPLERS, check_nfe
from exactps.seeds import ExactBenchSeed
from exactps.tasks import STANDARD_TASKS, check_simulated

__all__ = ["DEFAULT_BASELINES", "ExactBenchConfig", "ExactBenchResult", "Record", "run_exactbench"]

#: Baselines of the default run.
DEFAULT_BASELINES: tuple[str, ...] = ("dps", "pigdm", "ddrm", "diffpir", "ddnm", "daps", "mpgd")


@dataclass(frozen=True)
class ExactBenchConfig:
    """What to run. ``families``: random priors of :data:`FAMILIES` (ignored when a mixture is given to
    :func:`run_exactbench`). Each baseline is tuned per prior, task and denoisers on that prior's own
    tuning measurements."""

    tasks: tuple[str, ...] = STANDARD_TASKS
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    eps_specs: tuple[tuple[str, str, int], ...] = DEFAULT_EPS_SPECS
    families: tuple[str, ...] = ("gmm", "gaussian")
    measurements: int = 5
    runs: int = 2
    tuning_measurements: int = 2
    n_samples: int = 400
    n_refs: int = 8
    sigma_y: float = 0.05
    seed: int = 0
    tune: bool = True
    #: ``each``: every set of denoisers is tuned with itself; ``first``: the settings chosen with the first
    #: (the oracle's, when it runs) serve every set (cheaper with learned networks).
    tune_with: str = "each"
    #: (baseline, steps) pairs replacing a baseline's published step count (a cheaper budget), e.g.
    #: ``(("dps", 250),)``; the rows are labelled with it.
    baseline_steps: tuple[tuple[str, int], ...] = ()

    def validate(self) -> ExactBenchConfig:
        check_simulated(list(self.tasks))
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {tuple(BASELINES)}")
        if self.measurements < 1 or self.runs < 1 or self.n_refs < 1:
            raise ValueError("measurements, runs and n_refs must be >= 1")
        for name, steps in self.baseline_steps:
            if name not in self.baselines or steps < 1:
                raise ValueError(f"a step budget needs a selected baseline and steps >= 1, got {name}:{steps}")
        for interp, sampler, nfe in self.eps_specs:
            get_interpolant(interp)
            if sampler not in SAMPLERS:
                raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
            if (why := check_nfe(sampler, nfe)) is not None:
                raise ValueError(why)
        if self.tune_with not in ("each", "first"):
            raise ValueError(f"tune_with must be 'each' or 'first', got {self.tune_with!r}")
        if self.tune and self.tuning_measurements < 1:
            raise ValueError("tuning needs tuning_measurements >= 1 (or tune=False)")
        return self


@dataclass
class Record:
    """One run of one method on one measurement."""

    prior: str
    denoisers: str
    task: str
    method: str
    tuned: bool
    measurement: int
    run: int
    nfe: int
    vjp: int
    seconds: float
    scores: dict[str, float]


@dataclass
class ExactBenchResult:
    config: ExactBenchConfig
    records: list[Record] = field(default_factory=list)
    #: (prior, denoisers, task) -> baseline -> tuning result
    tuning: dict[tuple[str, str, str], dict[str, TuningResult]] = field(default_factory=dict)
    settings: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=dict
    )  # prior/denoisers/task -> row -> settings

    def summary(self) -> list[dict[str, Any]]:
        """One row per (prior, denoisers, task, method): every score's mean, SE, n, and costs."""
        rows = []
        keys = dict.fromkeys((r.prior, r.denoisers, r.task, r.method) for r in self.records)
        for key in keys:
            recs = [r for r in self.records if (r.prior, r.denoisers, r.task, r.method) == key]
            row: dict[str, Any] = dict(zip(("prior", "denoisers", "task", "method"), key, strict=True))
            row.update(
                tuned=recs[0].tuned,
                nfe=recs[0].nfe,
                vjp=recs[0].vjp,
                ms_per_sample=1000 * sum(r.seconds for r in recs) / len(recs) / self.config.n_samples,
            )
            for metric in recs[0].scores:
                agg = _measurement_aggregate(recs, metric)
                row[metric] = {"mean": agg.mean, "se": agg.se, "measurements": agg.n, "n": len(recs)}
            rows.append(row)
        return rows


def _measurement_aggregate(recs: Sequence[Record], metric: str) -> Aggregate:
    """Mean over every run, SE of the per-measurement means."""
    by_m: dict[int, list[float]] = {}
    for r in recs:
        by_m.setdefault(r.measurement, []).append(r.scores[metric])
    means = torch.tensor([sum(v) / len(v) for v in by_m.values()], dtype=torch.float64)
    agg = aggregate(means)
    return Aggregate(float(sum(r.scores[metric] for r in recs) / len(recs)), agg.se, agg.n)


def _budget(cfg: ExactBenchConfig, name: str) -> dict[str, int]:
    steps = dict(cfg.baseline_steps)
    return {"steps": steps[name]} if name in steps else {}


def _problems(prior: GaussianMixture, task: str, split: str, count: int, cfg: ExactBenchConfig) -> list[ExactProblem]:
    return [draw_problem(prior, task, i, split, cfg.sigma_y, cfg.n_samples, cfg.n_refs, cfg.seed) for i in range(count)]


def _methods(cfg: ExactBenchConfig, denoisers: Denoisers, task: str, tuned: dict[str, TuningResult]) -> list[Method]:
    rows = [exact_method(), prior_method(denoisers)]
    if denoisers.posterior is not None:
        rows += [eps_method(denoisers, *spec) for spec in cfg.eps_specs]
    steps = dict(cfg.baseline_steps)
    for name in cfg.baselines:
        budget = {"steps": steps[name]} if name in steps else {}
        label = f"{name} [{steps[name]} steps]" if name in steps else name
        rows.append(baseline_method(denoisers, name, task, budget=budget, label=f"{label} published"))
        if name in tuned:
            rows.append(baseline_method(denoisers, name, task, tuned[name].chosen, budget, f"{label} tuned"))
    return rows


def run_exactbench(
    config: ExactBenchConfig,
    denoisers: Sequence[Denoisers] | None = None,
    prior: GaussianMixture | None = None,
    prior_name: str = "mixture",
    progress: Callable[[str], None] | None = None,
    on_task: Callable[[ExactBenchResult], None] | None = None,
) -> ExactBenchResult:
    """Run ``config`` with each of ``denoisers`` (default: the oracle's) on the families' random priors, or on
    ``prior`` (named ``prior_name``). ``on_task(result)`` is called after each task (e.g. to save the rows
    so far)."""
    cfg = config.validate()
    denoisers = list(denoisers or [oracle_denoisers()])
    priors = {prior_name: prior} if prior is not None else {f: family_prior(f, cfg.seed) for f in cfg.families}
    result = ExactBenchResult(cfg)
    say = progress or (lambda _msg: None)
    for task in cfg.tasks:
        for pname, pr in priors.items():
            held_out = (
                [(p, Scorer(p)) for p in _problems(pr, task, "tuning", cfg.tuning_measurements, cfg)]
                if cfg.tune
                else []
            )
            problems = [(p, Scorer(p)) for p in _problems(pr, task, "report", cfg.measurements, cfg)]
            for k, dn in enumerate(denoisers):
                if cfg.tune and (k == 0 or cfg.tune_with == "each"):
                    tuning = [(p.with_dtype(dn.dtype), scorer) for p, scorer in held_out]
                    result.tuning[(pname, dn.label, task)] = {
                        name: tune_baseline(dn, name, tuning, _budget(cfg, name), EXACTNESS_GRIDS, say)
                        for name in cfg.baselines
                    }
                elif cfg.tune:  # the first denoisers' choice
                    result.tuning[(pname, dn.label, task)] = result.tuning[(pname, denoisers[0].label, task)]
                _run_rows(result, pname, dn, task, problems, say)
        if on_task is not None:
            on_task(result)
    return result


def _run_rows(
    result: ExactBenchResult,
    prior_name: str,
    dn: Denoisers,
    task: str,
    problems: Sequence[tuple[ExactProblem, Scorer]],
    say: Callable[[str], None],
) -> None:
    cfg = result.config
    views = [problem.with_dtype(dn.dtype) for problem, _ in problems]  # the denoisers' dtype, once per problem
    for method in _methods(cfg, dn, task, result.tuning.get((prior_name, dn.label, task), {})):
        result.settings.setdefault(f"{prior_name}/{dn.label}/{task}", {})[method.name] = method.settings
        for i, ((problem, scorer), view) in enumerate(zip(problems, views, strict=True)):
            for run in range(cfg.runs):
                start = time.perf_counter()
                x, nfe, vjp = method.draw(view, problem.generator(ExactBenchSeed.SAMPLER, run))
                seconds = time.perf_counter() - start
                rec = Record(
                    prior_name, dn.label, task, method.name, method.tuned, i, run, nfe, vjp, seconds, scorer(x)
                )
                result.records.append(rec)
        last = result.records[-1]
        say(f"{prior_name} {dn.label} {task} {method.name}: sw2/floor {last.scores['sw2/floor']:.3f} (last run)")
