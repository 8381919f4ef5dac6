"""The run directory of ``exactps train``: what a run leaves on disk, and how it is resumed.

::

    RUN/config.json                              objective, train and model configs, data (written once)
    RUN/log.jsonl                                one line per logged step: loss, grad norm, lr, img/s
    RUN/checkpoints/step-<k>.{json,safetensors}  weights, EMA, optimizer, RNG states, data position
    RUN/grids/step-<k>.png                       preview grids (measurement, sample, ground truth)

:class:`RunDir` receives values (a step, a log entry, state dicts, a picture's rows), never the
trainer; the trainer calls it on rank 0 only. Checkpoints are written atomically
(:mod:`exactps.checkpoint`); a resumed run drops the log lines written after its checkpoint and
removes the temporary files (``.<name>.XXXXXXXX.tmp``, see :func:`exactps.files.atomic_write`) that
a killed run left behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from exactps.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    find_checkpoint,
    list_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from exactps.files import atomic_write_text, temporary_target
from exactps.images import save_grid

__all__ = ["RunDir"]

#: the final names a run writes, per folder of the run directory (relative to the run)
_OWNED = {
    ".": re.compile(r"^(config\.json|log\.jsonl)$"),
    "checkpoints": re.compile(r"^step-\d+\.(json|safetensors)$"),
    "grids": re.compile(r"^step-\d+\.png$"),
}


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

    def latest_checkpoint(self, verify: bool = False) -> Path:
        """The JSON record of the newest checkpoint. ``verify``: check its record, size and SHA-256
        first; if it is corrupt, the ``CheckpointError`` names the newest intact checkpoint and how to
        resume from it."""
        latest = find_checkpoint(self.checkpoints)
        if not verify:
            return latest
        try:
            verify_checkpoint(latest)
        except (CheckpointError, FileNotFoundError) as err:
            raise CheckpointError(self._corrupt_message(latest, err)) from err
        return latest

    def _corrupt_message(self, latest: Path, err: Exception) -> str:
        older = [p for _, p in list_checkpoints(self.checkpoints) if p != latest]
        intact = None
        for path in reversed(older):
            try:
                verify_checkpoint(path)
            except (CheckpointError, FileNotFoundError):
                continue
            intact = path
            break
        pair = f"{latest.name} and {latest.with_suffix('.safetensors').name}"
        msg = f"cannot resume {self.path}: its latest checkpoint is damaged ({err})."
        if intact is None:
            return f"{msg} No older intact checkpoint is left in {self.checkpoints}; start a new run."
        return (
            f"{msg} The newest intact checkpoint is {intact}; to resume from it, move {pair} out of "
            f"{self.checkpoints} (and any newer damaged checkpoints), then run --resume {self.path} again."
        )

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files an interrupted run left in this run directory (only those of the
        files a run writes: config, log, checkpoints, grids); returns what was removed."""
        removed = []
        for sub, owned in _OWNED.items():
            folder = self.path / sub
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                target = temporary_target(p)
                if target is not None and owned.match(target) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed

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
