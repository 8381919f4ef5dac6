"""The baselines' settings: published (per task, from the official configs) and tuning grids.

* :func:`published_settings`: the official per-task keyword arguments of a baseline for a task of
  :data:`exactps.tasks.TASKS` (through its ``published`` key); the sampler's defaults apply elsewhere;
* :data:`BASELINE_DEFAULTS`: every sampler's keyword defaults (its published settings);
* :class:`Grid` and :func:`candidates`: a search space over keyword arguments, with the published point
  always the first candidate. Each benchmark has its own table of grids (the image benchmark's
  :data:`exactps.imagebench.tuning.TUNING_GRIDS`, the exactness benchmark's
  :data:`exactps.exactbench.tuning.EXACTNESS_GRIDS`).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exactps.baselines.daps import DAPS_LR
from exactps.baselines.diffpir import DIFFPIR_STEPS, DIFFPIR_ZETA
from exactps.baselines.dps import DPS_ZETA
from exactps.baselines.mpgd import MPGD_SCALE
from exactps.baselines.registry import BASELINES

__all__ = [
    "BASELINE_DEFAULTS",
    "PUBLISHED_PER_TASK",
    "Grid",
    "candidates",
    "flatten_point",
    "published_point",
    "published_settings",
]

#: The per-task settings of the official configs: method -> keyword -> (task key -> value). The task
#: key is the ``published`` field of :data:`exactps.tasks.TASKS` (``sr``, ``inpainting``,
#: ``inpainting_random``, ``gaussian_deblur``, ``motion_deblur``).
PUBLISHED_PER_TASK: dict[str, dict[str, dict[str, float]]] = {
    "dps": {"zeta": DPS_ZETA},
    "diffpir": {"zeta": DIFFPIR_ZETA, "steps": DIFFPIR_STEPS},
    "daps": {"lr": DAPS_LR},
    "mpgd": {"scale": MPGD_SCALE},
}


def published_settings(method: str, task: str) -> dict[str, Any]:
    """The official per-task keyword arguments of ``method`` for ``task`` (a name of
    :data:`exactps.tasks.TASKS`); empty where the official configs have none."""
    from exactps.tasks import get_task  # lazy: tasks build operators

    key = get_task(task).published
    tables = PUBLISHED_PER_TASK.get(method, {})
    return {param: table[key] for param, table in tables.items() if key in table}


def _signature_defaults() -> dict[str, dict[str, Any]]:
    out = {}
    for name, fn in BASELINES.items():
        params = inspect.signature(fn).parameters.values()
        out[name] = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return out


#: The keyword defaults of every baseline (their published settings, see :mod:`exactps.baselines`).
BASELINE_DEFAULTS: dict[str, dict[str, Any]] = _signature_defaults()


@dataclass(frozen=True)
class Grid:
    """The values of one keyword argument: absolute, or factors of the published value (``relative``).

    A value may also be a mapping of several keyword arguments set together (e.g. DDNM's time travel,
    ``{"travel_length": 5, "travel_repeat": 3}``); the grid's key is then only a label.
    """

    values: tuple[Any, ...]
    relative: bool = False


def _published_value(name: str, param: str, grid: Grid, published: Mapping[str, Any]) -> Any:
    if grid.values and isinstance(grid.values[0], Mapping):
        return {k: published[k] for k in grid.values[0]}
    return published[param]


def published_point(name: str, task: str, grids: Mapping[str, Grid]) -> dict[str, Any]:
    """The published values of the parameters ``grids`` searches, for baseline ``name`` on ``task``."""
    published = {**BASELINE_DEFAULTS[name], **published_settings(name, task)}
    return {param: _published_value(name, param, g, published) for param, g in grids.items()}


def flatten_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of a point (joint values merged in)."""
    out: dict[str, Any] = {}
    for param, value in point.items():
        out.update(value if isinstance(value, Mapping) else {param: value})
    return out


def candidates(name: str, task: str, grids: Mapping[str, Grid]) -> list[dict[str, Any]]:
    """The published point, then every other point of ``grids`` (keyword arguments of ``name``; a
    relative grid scales the published value)."""
    published = published_point(name, task, grids)
    axes = [[(param, published[param] * v if g.relative else v) for v in g.values] for param, g in grids.items()]
    points = [dict(p) for p in itertools.product(*axes)]
    return [published, *(p for p in points if p != published)]
