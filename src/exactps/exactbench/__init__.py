"""The exactness benchmark (``exactps bench exactness``): EPS against the training-free baselines where the
posterior is known exactly.

* :mod:`~exactps.exactbench.problems`: priors with closed-form posteriors (random Gaussian mixtures, a
  Gaussian, or a mixture fitted to photograph patches), measurements, exact reference sets;
* :mod:`~exactps.exactbench.scoring`: SW2 / Monte-Carlo floor, and the KL and W2 of a fitted Gaussian;
* :mod:`~exactps.exactbench.methods`: the rows (exact samples, the prior sampler, EPS, the baselines)
  on oracle or learned denoisers;
* :mod:`~exactps.exactbench.tuning`: the baselines' grids, searched on held-out measurements;
* :mod:`~exactps.exactbench.run`: tuning, then every method on the reported measurements, aggregated;
* :mod:`~exactps.exactbench.report`: tables with standard errors, figure, JSON.
"""

from exactps.exactbench.methods import DEFAULT_EPS_SPECS, Denoisers, learned_denoisers, oracle_denoisers
from exactps.exactbench.problems import FAMILIES, ExactProblem, draw_problem, family_prior
from exactps.exactbench.report import format_summary, format_tuning, plot_summary, write_result
from exactps.exactbench.run import DEFAULT_BASELINES, ExactBenchConfig, ExactBenchResult, run_exactbench
from exactps.exactbench.scoring import Scorer
from exactps.exactbench.tuning import EXACTNESS_GRIDS, TuningResult, tune_baseline

__all__ = [
    "DEFAULT_BASELINES",
    "DEFAULT_EPS_SPECS",
    "EXACTNESS_GRIDS",
    "FAMILIES",
    "Denoisers",
    "ExactBenchConfig",
    "ExactBenchResult",
    "ExactProblem",
    "Scorer",
    "TuningResult",
    "draw_problem",
    "family_prior",
    "format_summary",
    "format_tuning",
    "learned_denoisers",
    "oracle_denoisers",
    "plot_summary",
    "run_exactbench",
    "tune_baseline",
    "write_result",
]
