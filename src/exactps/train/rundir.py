"""The run directory of ``exactps train``: what a run leaves on disk, and how it is resumed.

::

    RUN/config.json                              objective, train and model configs, data (written once)
    RUN/log.jsonl                                one line per logged step: loss, grad norm, lr, img/s
    RUN/checkpoints/step-<k>.{json,safetensors}  weights, EMA, optimizer, RNG states, data position
    RUN/grids/step-<k>.png                       preview grids (measurement, sample, ground truth)

:class:`RunDir` receives values (a step, a log entry, state dicts, a picture's rows), never the
trainer; the trainer calls it on rank 0 only. Checkpoints are written atomically
(:mod:`exactps.checkpoint`); a resumed run drops the log lines written after its checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from exactps.checkpoint import checkpoint_paths, find_checkpoint, list_checkpoints, save_checkpoint
from exactps.files import atomic_write_text
from exactps.images import save_grid

__all__ = ["RunDir"]


class RunDir:
    """The files of one training run under ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    # -- creating and resuming ----------------------------------------------------------------------------
    def check_new(self) -> None:
        """Raise ``FileExistsError`` unless the directory is absent or empty (a run is never overwritten)."""
        out = self.path
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(
                f"output directory {out} already exists and is not empty; pass --resume {out} to continue "
                "that run, or choose another --out"
            )

    def check_resumable(self) -> None:
        """Raise ``FileNotFoundError`` unless the run has a checkpoint."""
        if not list_checkpoints(self.checkpoints):
            raise FileNotFoundError(f"cannot resume: no checkpoint found in {self.checkpoints}")

    def create(self, record: Mapping[str, Any]) -> None:
        """Make ``checkpoints/`` and write ``config.json`` (the run's ``record``)."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.json", json.dumps(dict(record), indent=1))

    def latest_checkpoint(self) -> Path:
        """The JSON record of the newest checkpoint."""
        return find_checkpoint(self.checkpoints)

    # -- the log -------------------------------------------------------------------------------------------
    def append_log(self, entry: Mapping[str, Any]) -> None:
        with self.log.open("a") as f:
            f.write(json.dumps(dict(entry)) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop log lines of steps after ``step`` (written by an interrupted run after its checkpoint)."""
        if not self.log.exists():
            return
        kept = []
        for line in self.log.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        atomic_write_text(self.log, "".join(f"{line}\n" for line in kept))

    # -- checkpoints and grids --------------------------------------------------------------------------------
    def save_checkpoint(
        self,
        step: int,
        model: Mapping[str, Tensor],
        ema: Mapping[str, Tensor],
        optimizer: Mapping[str, Any],
        meta: Mapping[str, Any],
        keep: int,
    ) -> Path:
        """Write the checkpoint of ``step`` (atomically) and keep only the newest ``keep`` (0: all). A
        checkpoint of ``step`` that exists already is the state resumed from: identical, not rewritten."""
        json_path, _ = checkpoint_paths(self.checkpoints, step)
        if json_path.exists():
            return json_path
        path = save_checkpoint(self.checkpoints, step, model, ema, optimizer, meta)
        self.prune(keep)
        return path

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints (``keep = 0``: keep all)."""
        if keep <= 0:
            return
        for _, json_path in list_checkpoints(self.checkpoints)[:-keep]:
            json_path.unlink(missing_ok=True)  # the record first: a checkpoint without it is ignored
            json_path.with_suffix(".safetensors").unlink(missing_ok=True)

    def save_grid(self, step: int, rows: Sequence[Tensor]) -> Path:
        """Write ``grids/step-<k>.png``."""
        return save_grid(rows, self.path / "grids" / f"step-{step:09d}.png")
