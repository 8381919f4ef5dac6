"""The image benchmark (``exactps bench images``): EPS, conditional models and the training-free
baselines on real photographs, with the EPS paper's protocol (BENCHMARK.md).

* :mod:`~exactps.imagebench.problems`: the fixed test (and validation) measurements of each task;
* :mod:`~exactps.imagebench.methods`: how each row draws samples (EPS at 100/20/1 NFE, conditional
  models, each baseline on the unconditional prior at its budget, the no-model reference);
* :mod:`~exactps.imagebench.tuning`: the baselines' grids, searched on validation images only;
* :mod:`~exactps.imagebench.scoring`: the metrics (PSNR, SSIM, LPIPS, CRPS, MMD, coverage, FID, KID);
* :mod:`~exactps.imagebench.run`: the loop, timed side by side, and the EPS step overhead;
* :mod:`~exactps.imagebench.report`: tables, CSV / JSON and labelled grids.
"""

from exactps.imagebench.methods import BASELINE_BUDGETS
from exactps.imagebench.problems import Problem, load_images, make_problem
from exactps.imagebench.report import format_results, output_paths, write_results
from exactps.imagebench.run import BenchConfig, BenchResults, run_image_benchmark
from exactps.imagebench.scoring import METRICS, SET_METRICS, Scorer
from exactps.imagebench.tuning import TUNING_GRIDS

__all__ = [
    "BASELINE_BUDGETS",
    "METRICS",
    "SET_METRICS",
    "TUNING_GRIDS",
    "BenchConfig",
    "BenchResults",
    "Problem",
    "Scorer",
    "format_results",
    "load_images",
    "make_problem",
    "output_paths",
    "run_image_benchmark",
    "write_results",
]
