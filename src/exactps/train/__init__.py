"""Training EPS denoisers, unconditional denoisers and the conditional baseline.

* :mod:`~exactps.train.config`: :class:`TrainConfig` and its schedules;
* :mod:`~exactps.train.batches`: reproducible per-step batches;
* :mod:`~exactps.train.loop`: :class:`Trainer` (optimizer, EMA, DDP, one step, the loop);
* :mod:`~exactps.train.rundir`: :class:`RunDir` (config, log, checkpoints, grids, resume);
* :mod:`~exactps.train.preview`: the preview grids;
* :mod:`~exactps.train.session`: :func:`run_training` (build, check, initialise, train) and :func:`preflight`.

``exactps train`` (:mod:`exactps.cli.train`) reads its options into these.
"""

from exactps.train.config import TrainConfig
from exactps.train.loop import Trainer
from exactps.train.rundir import RunDir
from exactps.train.session import preflight, run_training

__all__ = ["RunDir", "TrainConfig", "Trainer", "preflight", "run_training"]
