"""The configuration of a training run and its schedules (learning rate, EMA decay).

``TrainConfig`` holds everything that defines a run except the model (:class:`exactps.models.ModelConfig`)
and the data; it is stored in the run directory and in every checkpoint, and validated before any
work starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from exactps.models import get_objective
from exactps.objectives import sigma_y_range
from exactps.tasks import STANDARD_TASKS

__all__ = ["TrainConfig", "preview_sigma_y"]


@dataclass
class TrainConfig:
    """Everything that defines a training run except the model and the data.

    ``objective`` is a name of :data:`exactps.models.OBJECTIVES`; ``tasks`` names of
    :data:`exactps.tasks.TASKS` (``none``: ``A = 0``). ``batch_size`` is the global number of images
    per optimizer step; ``micro_batch`` the number per forward/backward pass (a *shard*; default
    ``batch_size / world size``). ``sigma_y`` is a fixed value or a ``(lo, hi)`` range drawn per sample
    (log-uniform if ``lo > 0``, else uniform). ``task_probs`` (default uniform) weights ``tasks``; each
    step draws one task, and every sample gets its own mask/kernel. ``bf16`` autocast is used on CUDA
    only. ``compile`` applies ``torch.compile`` to the U-Net (:func:`exactps.networks.compile_backbone`):
    the first step compiles for minutes, then one graph serves every task of a mixture.
    ``grad_checkpoint`` recomputes each U-Net block's activations in the backward pass
    (:func:`exactps.networks.checkpoint_blocks`): less memory for about a third more compute.
    """

    objective: str = "eps"
    tasks: tuple[str, ...] = STANDARD_TASKS
    task_probs: tuple[float, ...] | None = None
    sigma_y: float | tuple[float, float] = 0.05
    batch_size: int = 64
    micro_batch: int | None = None
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    steps: int = 100_000
    bf16: bool = True
    compile: bool = False
    grad_checkpoint: bool = False
    log_every: int = 50
    ckpt_every: int = 5000
    grid_every: int = 5000
    keep_checkpoints: int = 3
    seed: int = 0
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    num_workers: int | None = None
    grid_images: int = 8
    grid_nfe: int = 35

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first bad field; returns ``self``."""
        get_objective(self.objective)
        if not self.tasks:
            raise ValueError("tasks must not be empty")
        if self.task_probs is not None:
            if len(self.task_probs) != len(self.tasks):
                raise ValueError(f"task_probs has {len(self.task_probs)} values for {len(self.tasks)} tasks")
            if any(p < 0 for p in self.task_probs):
                raise ValueError(f"task_probs must be non-negative, got {self.task_probs}")
            if sum(self.task_probs) <= 0:
                raise ValueError(f"task_probs must not be all zero, got {self.task_probs}")
        lo, hi = sigma_y_range(self.sigma_y)
        if not (0 <= lo <= hi < math.inf):
            raise ValueError(f"sigma_y must be a finite value >= 0 or a range lo <= hi, got {self.sigma_y}")
        positive = ("batch_size", "steps", "log_every", "ckpt_every", "grid_every", "grid_nfe")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {self.micro_batch}")
        if self.micro_batch is not None and self.batch_size % self.micro_batch:
            raise ValueError(f"micro_batch ({self.micro_batch}) must divide batch_size ({self.batch_size})")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.warmup_steps >= 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.p_std > 0:
            raise ValueError(f"p_std must be > 0, got {self.p_std}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints must be >= 0, got {self.keep_checkpoints}")
        if self.grid_images < 1:
            raise ValueError(f"grid_images must be >= 1, got {self.grid_images}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (lists back to tuples); unknown keys raise."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)

    # -- schedules ----------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up: ``lr * min(1, (step + 1) / warmup_steps)``."""
        w = self.warmup_steps
        return self.lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)

    def ema_decay_at(self, step: int) -> float:
        """``min(decay, (1 + step) / (10 + step))``: the EMA forgets the random init quickly."""
        return min(self.ema_decay, (1 + step) / (10 + step))


def preview_sigma_y(spec: float | Sequence[float]) -> float:
    """The ``s_y`` of the preview grids: the value, or the geometric (arithmetic if ``lo = 0``) middle of a range."""
    lo, hi = sigma_y_range(spec)
    return math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)
