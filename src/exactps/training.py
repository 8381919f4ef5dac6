"""Training EPS denoisers (METHOD.md, "The EPS denoiser and its training objective").

The objectives (``TrainConfig.objective``), all on one code path (:meth:`Trainer.shard_loss`):

* ``"denoiser"``: ``A = 0`` (``m = x_t/a``, ``S_t = rho^2 I``), the unconditional EDM denoiser,
  e.g. for pretraining;
* ``"eps"``: the EPS loss over a task distribution (:func:`exactps.objectives.eps_loss`), from
  scratch or fine-tuned from an unconditional checkpoint (:func:`load_pretrained`);
* ``"conditional"``: the training-based baseline (:mod:`exactps.conditional`), same backbone, loss
  and draws, the measurement fed as ``A^T y`` by channel concatenation.

A task named ``"none"`` in the task list draws ``A = 0``.

Reproducibility
---------------
Every random draw of step ``k`` is a pure function of ``(seed, k)``: the task of the step, and, for
each *shard* (micro-batch) ``j`` of the global batch, its images, masks/kernels, ``rho``, noises and
dropout come from generators seeded by ``(seed, k, j)``. Hence

* resuming from a checkpoint (weights, EMA, optimizer, step) gives bitwise the same subsequent
  losses on the CPU as an uninterrupted run;
* the trajectory depends on ``batch_size`` and ``micro_batch`` but not on the number of processes:
  ``N`` DDP ranks each run ``batch_size / (N micro_batch)`` shards, and one process with gradient
  accumulation runs them all, with the same result up to floating-point summation order.

Multi-GPU: launch with ``torchrun --nproc_per_node N -m exactps.cli train ...``; each rank runs
its own shards (so its own data and seeds), gradients are averaged by DDP, and only rank 0 writes
checkpoints, grids and logs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from exactps.checkpoint import (
    atomic_write_text,
    capture_rng_state,
    checkpoint_paths,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_dict_file,
    restore_rng_state,
    save_checkpoint,
)
from exactps.conditional import ConditionalDenoiser, ConditionalPredictor, ConditionalUNet, conditional_loss
from exactps.covariance import IsotropicNoise
from exactps.data import (
    ShardLayout,
    StepBatches,
    StepKeys,
    derive_seed,
    is_indexable,
    is_sampler,
    open_data,
    seeded_global_rng,
)
from exactps.images import measurement_image, save_grid
from exactps.interpolants import get_interpolant
from exactps.objectives import eps_loss, sample_sigma_y, sigma_y_range
from exactps.operators.base import LinearOperator
from exactps.posterior import PosteriorPredictor
from exactps.samplers import sample
from exactps.tasks import TASKS, make_task_operator

__all__ = [
    "OBJECTIVES",
    "ModelConfig",
    "PretrainedReport",
    "TrainConfig",
    "Trainer",
    "add_train_arguments",
    "build_model",
    "default_device",
    "load_pretrained",
    "run_training",
    "train_main",
]

OBJECTIVES = ("denoiser", "eps", "conditional")
DEFAULT_TASKS = ("sr4", "inpaint-box", "inpaint-random", "deblur-gauss", "deblur-motion")
#: Tasks whose operator has no random part (built once and cached).
_FIXED_TASKS = frozenset({"sr4", "sr2-avg", "deblur-gauss", "colorize"})
# purposes of derived seeds (exactps.data uses 3, 4 and 5)
_TASK, _SHARD, _PREVIEW = 1, 2, 6

TaskFactory = Callable[..., LinearOperator]


# -- configuration ------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that defines a training run except the model and the data.

    ``batch_size`` is the global number of images per optimizer step; ``micro_batch`` the number
    per forward/backward pass (a *shard*; default ``batch_size / world size``). ``sigma_y`` is a
    fixed value or a ``(lo, hi)`` range drawn per sample (log-uniform if ``lo > 0``, else uniform).
    ``task_probs`` (default uniform) weights ``tasks``; each step draws one task, and every sample
    gets its own mask/kernel. ``bf16`` autocast is used on CUDA only. ``compile`` applies
    ``torch.compile`` to the U-Net (:func:`exactps.networks.compile_backbone`): the first step compiles
    for minutes, then one graph serves every task of a mixture.
    """

    objective: str = "eps"
    tasks: tuple[str, ...] = DEFAULT_TASKS
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
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not self.tasks:
            raise ValueError("tasks must not be empty")
        if self.task_probs is not None:
            if len(self.task_probs) != len(self.tasks):
                raise ValueError(f"task_probs has {len(self.task_probs)} values for {len(self.tasks)} tasks")
            if any(p < 0 for p in self.task_probs) or sum(self.task_probs) <= 0:
                raise ValueError(f"task_probs must be non-negative and not all zero, got {self.task_probs}")
        lo, hi = sigma_y_range(self.sigma_y)
        if not (0 <= lo <= hi < math.inf):
            raise ValueError(f"sigma_y must be a finite value >= 0 or a range lo <= hi, got {self.sigma_y}")
        positive = ("batch_size", "steps", "log_every", "ckpt_every", "grid_every", "grid_nfe")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batch is not None and (self.micro_batch < 1 or self.batch_size % self.micro_batch):
            raise ValueError(f"micro_batch ({self.micro_batch}) must divide batch_size ({self.batch_size})")
        if not (self.lr > 0 and 0 <= self.ema_decay < 1 and self.warmup_steps >= 0 and self.p_std > 0):
            raise ValueError("need lr > 0, 0 <= ema_decay < 1, warmup_steps >= 0, p_std > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.keep_checkpoints < 0 or self.grid_images < 1:
            raise ValueError("need weight_decay >= 0, keep_checkpoints >= 0 and grid_images >= 1")
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


@dataclass
class ModelConfig:
    """The network: a backbone preset of :mod:`exactps.networks` and its conditioning.

    ``conditioning`` is the EPS denoiser's (``none``/``scalar``/``map``; ignored by the conditional
    baseline, which always sees ``s_y``); ``resolution`` is the training image size (default: the
    preset's).
    """

    preset: str = "small-64"
    channels: int = 3
    conditioning: str = "map"
    sigma_data: float = 0.5
    resolution: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


def build_model(objective: str, config: ModelConfig) -> nn.Module:
    """The network of ``objective``: :class:`~exactps.networks.EPSDenoiser` for ``denoiser``/``eps``,
    :class:`ConditionalDenoiser` over :class:`ConditionalUNet` (same preset) for ``conditional``."""
    from exactps.networks import EPSDenoiser

    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "conditional":
        backbone = ConditionalUNet(config.preset, config.channels, config.sigma_data)
        return ConditionalDenoiser(backbone, config.channels, config.sigma_data)
    return EPSDenoiser(config.preset, config.channels, config.conditioning, config.sigma_data)


def _preview_sigma_y(spec: float | Sequence[float]) -> float:
    lo, hi = sigma_y_range(spec)
    return math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)


# -- fine-tuning from a pretrained checkpoint ---------------------------------------------------------


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` did: ``loaded`` tensors, allowed ``missing`` (zero-initialised
    conditioning) keys and ``unexpected`` keys (always empty: they raise)."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        miss = f"; kept at their zero initialisation: {', '.join(self.missing)}" if self.missing else ""
        return f"loaded {self.loaded} pretrained tensors from {self.path}{miss}"


def load_pretrained(model: nn.Module, path: str | Path, prefer_ema: bool = True) -> PretrainedReport:
    """Initialise ``model`` from a checkpoint (EMA weights by default) or a state-dict file.

    Every pretrained tensor must load; the only keys allowed to be missing are the model's
    zero-initialised conditioning weights (``model.conditioning_keys()``). Any other missing or
    unexpected key, or a shape mismatch, raises ``ValueError`` naming the file.
    """
    state = load_state_dict_file(path, prefer_ema)
    try:
        if hasattr(model, "load_backbone"):
            missing = _own_keys(model, model.load_backbone(state))
            return PretrainedReport(str(path), len(state), missing)
        result = model.load_state_dict(state, strict=False)
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path} does not fit the model: {err}") from err
    allowed = set(getattr(model, "conditioning_keys", list)())
    bad = [k for k in result.missing_keys if k not in allowed]
    if bad or result.unexpected_keys:
        raise ValueError(f"{path} does not fit the model: missing {bad}, unexpected {result.unexpected_keys}")
    return PretrainedReport(str(path), len(state), list(result.missing_keys))


def _own_keys(model: nn.Module, keys: Iterable[str]) -> list[str]:
    """``keys`` (possibly relative to a submodule, e.g. the backbone) as keys of ``model.state_dict()``."""
    own = list(model.state_dict())
    out = []
    for k in keys:
        matches = [o for o in own if o == k or o.endswith(f".{k}")]
        out.append(matches[0] if len(matches) == 1 else k)
    return out


# -- distributed helpers ------------------------------------------------------------------------------


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (0 outside torchrun) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# -- the trainer ----------------------------------------------------------------------------------------


class Trainer:
    """AdamW with linear warm-up, an EMA of the weights, gradient clipping, bf16 autocast on CUDA,
    optional ``torch.compile``, DDP when ``torch.distributed`` is initialised, and exact resume.

    ``out_dir`` (optional) receives ``config.json``, ``log.jsonl``, ``checkpoints/step-*.{json,safetensors}``
    and ``grids/step-*.png`` (rank 0 only). An existing non-empty ``out_dir`` is an error unless
    ``resume``, which loads its latest checkpoint.

    The model is called as ``model(m, noise)`` (objectives ``denoiser``/``eps``) or
    ``model(x_t/a, rho, cond, s_y)`` (``conditional``). ``task_factory(task, img_shape, generator,
    dtype, batch=B)`` builds the operators (default :func:`exactps.tasks.make_task_operator`).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        resume: bool = False,
        model_config: Mapping[str, Any] | None = None,
        run_info: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        task_factory: TaskFactory = make_task_operator,
        show_progress: bool = True,
    ):
        self.config = config.validate()
        self.rank, self.world = _dist_info()
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        micro = config.micro_batch or config.batch_size // self.world
        if micro < 1 or config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} must be a multiple of the world size {self.world}")
        # recorded, so that the run's shards (hence its draws) stay the same on any number of processes
        self.config = config = replace(config, micro_batch=micro)
        self.layout = ShardLayout(config.batch_size, micro, self.world, self.rank)
        self.model = model.to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay
        )
        self.step = 0
        self.history: list[float] = []
        self.model_config = dict(model_config or {})
        self.run_info = dict(run_info or {})
        self.task_factory = task_factory
        self.show_progress = show_progress
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._ops: dict[tuple, LinearOperator] = {}
        self._probs = torch.tensor(config.task_probs or [1.0] * len(config.tasks), dtype=torch.float64)
        self._check_tasks()
        if self.out_dir is not None:
            self._prepare_out_dir(resume)
        elif resume:
            raise ValueError("resume=True needs the run's out_dir")
        if resume:
            self.load(find_checkpoint(self.out_dir / "checkpoints"))
        self.net: nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            from exactps.networks import compile_backbone

            compile_backbone(self.model)

    # -- setup ------------------------------------------------------------------------------------------
    def _check_tasks(self) -> None:
        if self.config.objective == "denoiser":
            return
        if self.task_factory is make_task_operator:
            bad = [t for t in self.config.tasks if t != "none" and t not in TASKS]
            if bad:
                raise ValueError(f"unknown task(s) {bad}; choose from {(*TASKS, 'none')}")

    def _prepare_out_dir(self, resume: bool) -> None:
        out = self.out_dir
        assert out is not None
        if resume:
            if not list_checkpoints(out / "checkpoints"):
                raise FileNotFoundError(f"cannot resume: no checkpoint found in {out / 'checkpoints'}")
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(
                f"output directory {out} already exists and is not empty; pass --resume {out} to continue "
                "that run, or choose another --out"
            )
        _barrier(self.world)
        if self.rank == 0 and not resume:
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            record = {
                "objective": self.config.objective,
                "train_config": self.config.to_dict(),
                "model_config": self.model_config,
                "run": self.run_info,
            }
            atomic_write_text(out / "config.json", json.dumps(record, indent=1))

    # -- schedule -----------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up: ``lr * min(1, (step + 1) / warmup_steps)``."""
        w = self.config.warmup_steps
        return self.config.lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)

    def ema_decay_at(self, step: int) -> float:
        """``min(decay, (1 + step) / (10 + step))``: the EMA forgets the random init quickly."""
        return min(self.config.ema_decay, (1 + step) / (10 + step))

    def task_at(self, step: int) -> str:
        """The task of ``step`` (one per step, drawn from ``task_probs`` with a ``(seed, step)`` generator)."""
        if self.config.objective == "denoiser":
            return "none"
        g = torch.Generator().manual_seed(derive_seed(self.config.seed, _TASK, step))
        return self.config.tasks[int(torch.multinomial(self._probs, 1, generator=g))]

    # -- one step -------------------------------------------------------------------------------------------
    def _operator(self, task: str, x0: Tensor, generator: torch.Generator) -> LinearOperator | None:
        if task == "none" or self.config.objective == "denoiser":
            return None
        img_shape, batch = tuple(x0.shape[1:]), x0.shape[0]
        key = (task, img_shape, x0.dtype)
        if task in _FIXED_TASKS and self.task_factory is make_task_operator and key in self._ops:
            return self._ops[key]
        op = self.task_factory(task, img_shape, generator, x0.dtype, batch=batch).to(self.device)
        if task in _FIXED_TASKS and self.task_factory is make_task_operator:
            self._ops[key] = op
        return op

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _call(self, net: nn.Module) -> Callable[..., Tensor]:
        def call(*args: Any) -> Tensor:
            with self._autocast():
                return net(*args)

        return call

    def shard_loss(self, net: nn.Module, x0: Tensor, task: str, step: int, shard: int) -> Tensor:
        """The loss of shard ``shard`` of step ``step``: every draw seeded by ``(seed, step, shard)``."""
        cfg = self.config
        seed = derive_seed(cfg.seed, _SHARD, step, shard)
        g_cpu = torch.Generator().manual_seed(seed)
        g_dev = g_cpu if self.device.type == "cpu" else torch.Generator(device=self.device).manual_seed(seed)
        with seeded_global_rng(seed, self.device):  # dropout
            op = self._operator(task, x0, g_cpu)
            sy = sample_sigma_y(cfg.sigma_y, x0.shape[0], g_dev, self.device, x0.dtype)
            loss_fn = conditional_loss if cfg.objective == "conditional" else eps_loss
            kw = {"p_mean": cfg.p_mean, "p_std": cfg.p_std, "sigma_data": cfg.sigma_data}
            return loss_fn(self._call(net), x0, op, sy, g_dev, **kw)

    def train_step(self, micro_batches: Sequence[Tensor]) -> tuple[float, float]:
        """One optimizer step on this rank's micro-batches; returns ``(mean loss over all ranks, grad norm)``."""
        if len(micro_batches) != self.layout.accum:
            raise ValueError(f"expected {self.layout.accum} micro-batches, got {len(micro_batches)}")
        step, task = self.step, self.task_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for i, (shard, x0) in enumerate(zip(self.layout.shards, micro_batches, strict=True)):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()
            with sync:
                x0 = x0.to(self.device, self._dtype(), non_blocking=True)
                loss = self.shard_loss(self.net, x0, task, step, shard)
                (loss / self.layout.accum).backward()
            total += loss.detach().float()
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if bool(torch.isfinite(norm)):
            self.optimizer.step()
            self._update_ema(self.ema_decay_at(step))
        else:
            warnings.warn(f"step {step}: non-finite gradient norm, update skipped", RuntimeWarning, stacklevel=2)
        total /= self.layout.accum
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        self.step += 1
        return float(total), float(norm)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def _update_ema(self, decay: float) -> None:
        """``ema <- decay * ema + (1 - decay) * weights``; buffers copied."""
        for pe, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            pe.lerp_(p.detach(), 1 - decay)
        for be, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            be.copy_(b)

    @torch.no_grad()
    def held_out_loss(self, x0: Tensor, task: str | None = None, seed: int = 12345, use_ema: bool = False) -> float:
        """The loss of ``x0`` with fixed draws (seed ``seed``), the network in eval mode."""
        net = self.ema if use_ema else self.model
        was_training = net.training
        net.eval()
        try:
            task = task or self.task_at(0)
            x0 = x0.to(self.device, self._dtype())
            return float(self.shard_loss(net, x0, task, seed, 0))
        finally:
            net.train(was_training)

    # -- the loop -------------------------------------------------------------------------------------------
    def batches(self, data: Any, stop: int) -> Iterator[list[Tensor]]:
        """This rank's micro-batches for steps ``self.step .. stop - 1`` (lists of ``accum`` tensors)."""
        lay = self.layout
        if is_sampler(data) or is_indexable(data):
            source = StepBatches(data, lay.micro_batch, lay.n_shards, self.config.seed)
            loader = DataLoader(
                source,
                batch_size=None,
                sampler=StepKeys(self.step, stop, lay.shards),
                num_workers=self.data_workers(),
                pin_memory=self.device.type == "cuda",
            )
            it = iter(loader)
            for _ in range(self.step, stop):
                yield [next(it) for _ in range(lay.accum)]
            return
        if self.step > 0:
            warnings.warn(
                "resuming with a plain iterable of batches: the data position is not restored "
                "(use a dataset or a sampler for exact resume)",
                RuntimeWarning,
                stacklevel=2,
            )
        for batch in data:
            if batch.shape[0] != lay.micro_batch * lay.accum:
                raise ValueError(f"expected batches of {lay.micro_batch * lay.accum} images, got {batch.shape[0]}")
            yield list(batch.split(lay.micro_batch))

    def data_workers(self) -> int:
        """``config.num_workers``, or by default (None) 0 on the CPU and up to 4 loader processes on CUDA,
        so that decoding and cropping overlap the GPU's work (the batches are the same either way)."""
        if self.config.num_workers is not None:
            return self.config.num_workers
        return 0 if self.device.type == "cpu" else min(4, max(1, (os.cpu_count() or 2) // 2))

    def fit(self, data: Any, steps: int | None = None) -> list[float]:
        """Train until ``self.step == steps`` (default ``config.steps``; an absolute step count, so the
        same call resumes a run). Returns the losses of the steps run here.

        ``data``: a map-style dataset or tensor of images ``(N, C, H, W)``, an object with
        ``sample(n, generator)`` (exactly resumable), or an iterable of per-rank batches.
        """
        cfg = self.config
        stop = cfg.steps if steps is None else int(steps)
        if self.step >= stop:
            return []
        losses: list[float] = []
        bar = self._progress_bar(stop)
        window: list[float] = []
        tick, preview = time.perf_counter(), self.preview_images(data)
        try:
            for micro in self.batches(data, stop):
                if preview is None:
                    preview = micro[0][: cfg.grid_images].clone()
                loss, norm = self.train_step(micro)
                losses.append(loss)
                window.append(loss)
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == stop:
                    now = time.perf_counter()
                    rate = len(window) * cfg.batch_size / max(now - tick, 1e-9)
                    self._log(float(np.mean(window)), norm, rate, bar)
                    window, tick = [], now
                if self.step % cfg.grid_every == 0:
                    self.save_preview(preview)
                if self.step % cfg.ckpt_every == 0:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self.history.extend(losses)
        if self.out_dir is not None and self.step % cfg.ckpt_every != 0:
            self.save()
        return losses

    def preview_images(self, data: Any) -> Tensor | None:
        """The images of every preview grid of the run: the start of step 0's first shard (the same
        after a resume), or None for a plain iterable (then the session's first batch is used)."""
        if not (is_sampler(data) or is_indexable(data)):
            return None
        lay = self.layout
        return StepBatches(data, lay.micro_batch, lay.n_shards, self.config.seed)[(0, 0)][: self.config.grid_images]

    def _progress_bar(self, stop: int):
        if self.rank != 0 or not self.show_progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=stop, initial=self.step, unit="step", dynamic_ncols=True, desc=self.config.objective)

    def _log(self, loss: float, norm: float, rate: float, bar) -> None:
        if self.rank != 0:
            return
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        if self.out_dir is None:
            return
        entry = {"step": self.step, "loss": loss, "grad_norm": norm, "lr": self.lr_at(self.step - 1), "img_per_s": rate}
        with (self.out_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")

    # -- previews ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self, x0: Tensor, task: str | None = None) -> list[Tensor]:
        """Grid rows from the EMA model: ``[measurement, posterior sample, ground truth]`` (EPS and
        conditional), or ``[noisy (rho = 0.5), denoised, unconditional sample, ground truth]``."""
        cfg, net = self.config, self.ema
        x0 = x0.to(self.device, self._dtype())
        g = torch.Generator(device=self.device).manual_seed(derive_seed(cfg.seed, _PREVIEW))
        interp = get_interpolant("ve")
        call = self._call(net)
        task = task or next((t for t in cfg.tasks if t != "none"), "none")
        if cfg.objective == "denoiser" or task == "none":
            noisy = x0 + 0.5 * torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
            rho = torch.full((x0.shape[0],), 0.5, device=x0.device, dtype=x0.dtype)
            if cfg.objective == "conditional":
                inf = torch.full_like(rho, math.inf)
                den = call(noisy, rho, torch.zeros_like(x0), inf)
                predict = ConditionalPredictor(call, interp)
            else:
                den = call(noisy, IsotropicNoise(rho))
                predict = PosteriorPredictor(call, interp)
            out = sample(predict, interp, tuple(x0.shape), "heun", cfg.grid_nfe, generator=g, device=x0.device)
            return [noisy, den.to(x0.dtype), out.x, x0]
        sy = _preview_sigma_y(cfg.sigma_y)
        g_cpu = torch.Generator().manual_seed(derive_seed(cfg.seed, _PREVIEW))
        op = self.task_factory(task, tuple(x0.shape[1:]), g_cpu, x0.dtype, batch=x0.shape[0]).to(self.device)
        y = op.measure(x0, sy, g)
        cls = ConditionalPredictor if cfg.objective == "conditional" else PosteriorPredictor
        predict = cls(call, interp, op, y, sy)
        out = sample(predict, interp, tuple(x0.shape), "heun", cfg.grid_nfe, generator=g, device=x0.device)
        return [measurement_image(op, y, sy), out.x, x0]

    def save_preview(self, x0: Tensor | None) -> Path | None:
        """Write ``grids/step-<k>.png`` (rank 0, when there is an ``out_dir``)."""
        if self.rank != 0 or self.out_dir is None or x0 is None or x0.ndim != 4:
            return None
        rows = self.preview(x0)
        return save_grid(rows, self.out_dir / "grids" / f"step-{self.step:09d}.png")

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state_meta(self) -> dict[str, Any]:
        """The JSON record of a checkpoint (besides the tensors)."""
        lay = self.layout
        return {
            "objective": self.config.objective,
            "model_config": self.model_config,
            "train_config": self.config.to_dict(),
            "run": self.run_info,
            "rng": capture_rng_state(),
            "data_position": {
                "next_step": self.step,
                "images_seen": self.step * self.config.batch_size,
                "micro_batch": lay.micro_batch,
                "n_shards": lay.n_shards,
            },
            "world_size": self.world,
            "torch_version": torch.__version__,
            "last_losses": self.history[-10:],
        }

    def save(self) -> Path | None:
        """Checkpoint the current step into ``out_dir/checkpoints`` (rank 0; atomic; old ones pruned)."""
        path = None
        if self.rank == 0 and self.out_dir is not None:
            directory = self.out_dir / "checkpoints"
            json_path, _ = checkpoint_paths(directory, self.step)
            if json_path.exists():  # resumed from exactly this state: identical by construction
                path = json_path
            else:
                path = save_checkpoint(
                    directory,
                    self.step,
                    self.model.state_dict(),
                    self.ema.state_dict(),
                    self.optimizer.state_dict(),
                    self.state_meta(),
                )
                self._prune(directory)
        _barrier(self.world)
        return path

    def _prune(self, directory: Path) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        for _, json_path in list_checkpoints(directory)[:-keep]:
            json_path.unlink(missing_ok=True)  # the record first: a checkpoint without it is ignored
            json_path.with_suffix(".safetensors").unlink(missing_ok=True)

    def load(self, path: str | Path) -> None:
        """Restore weights, EMA, optimizer, step and global RNG states from a checkpoint."""
        ckpt = load_checkpoint(path)
        try:
            self.model.load_state_dict(ckpt.model)
            self.ema.load_state_dict(ckpt.ema if ckpt.ema is not None else ckpt.model)
            if ckpt.optimizer is not None:
                self.optimizer.load_state_dict(ckpt.optimizer)
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {ckpt.path} does not fit this model/optimizer: {err}") from err
        self.step = ckpt.step
        self._warn_config_change(ckpt.meta)
        if "rng" in ckpt.meta:
            restore_rng_state(ckpt.meta["rng"])
        if self.rank == 0 and self.out_dir is not None:
            self._truncate_log(self.step)

    def _warn_config_change(self, meta: Mapping[str, Any]) -> None:
        stored = meta.get("train_config", {})
        exact = ("objective", "tasks", "task_probs", "sigma_y", "batch_size", "seed", "p_mean", "p_std", "lr")
        now = self.config.to_dict()
        changed = [k for k in exact if k in stored and _jsonish(stored[k]) != _jsonish(now[k])]
        micro = meta.get("data_position", {}).get("micro_batch")
        if micro is not None and micro != self.layout.micro_batch:
            changed.append("micro_batch")
        if changed:
            warnings.warn(
                f"resuming with changed {changed}: the run will not continue exactly", RuntimeWarning, stacklevel=3
            )

    def _truncate_log(self, step: int) -> None:
        """Drop log lines of steps after ``step`` (written by the interrupted run after its checkpoint)."""
        assert self.out_dir is not None
        log = self.out_dir / "log.jsonl"
        if not log.exists():
            return
        kept = []
        for line in log.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        atomic_write_text(log, "".join(f"{line}\n" for line in kept))


def _jsonish(v: Any) -> Any:
    return json.loads(json.dumps(v))


# -- entry points ---------------------------------------------------------------------------------------


@torch.no_grad()
def preflight(model: nn.Module, config: TrainConfig, model_config: ModelConfig) -> None:
    """Build every task's operator for the run's image shape and call the model once on a zero image
    per task, so that a bad combination (``sr4`` with a size not divisible by 4, ``colorize`` on grey
    images, a size the U-Net cannot halve) fails before the run directory is created."""
    from exactps.networks import PRESETS

    res = model_config.resolution or PRESETS[model_config.preset].img_resolution
    shape = (model_config.channels, res, res)
    x0 = torch.zeros(1, *shape)
    tasks = ("none",) if config.objective == "denoiser" else config.tasks
    was_training = model.training
    model.eval()
    try:
        for task in tasks:
            op = None if task == "none" else make_task_operator(task, shape, torch.Generator().manual_seed(0))
            loss_fn = conditional_loss if config.objective == "conditional" else eps_loss
            loss_fn(model, x0, op, sigma_y_range(config.sigma_y)[1], torch.Generator().manual_seed(0))
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"task {task!r} on {shape} images does not work with this model: {err}") from err
    finally:
        model.train(was_training)


def run_training(
    config: TrainConfig,
    model_config: ModelConfig,
    data: Any,
    out: str | Path,
    *,
    resume: bool = False,
    init: str | Path | None = None,
    device: torch.device | str | None = None,
    run_info: Mapping[str, Any] | None = None,
    show_progress: bool = True,
) -> Trainer:
    """Build the model (seeded by ``config.seed``), optionally initialise it from ``init``, train on
    ``data`` into ``out`` (or resume it) and return the trainer."""
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
        torch.manual_seed(config.seed)
        model = build_model(config.objective, model_config)
    rank, _ = _dist_info()
    if not resume:
        preflight(model, config, model_config)
    if init is not None and not resume:
        report = load_pretrained(model, init)
        if rank == 0:
            print(report.summary(), flush=True)
    trainer = Trainer(
        model,
        config,
        out,
        resume=resume,
        model_config=asdict(model_config),
        run_info=run_info,
        device=device,
        show_progress=show_progress,
    )
    if rank == 0:
        from exactps.networks import count_parameters

        print(
            f"{config.objective}: {count_parameters(model) / 1e6:.2f}M parameters, step {trainer.step} -> "
            f"{config.steps}, batch {config.batch_size} = {trainer.layout.n_shards} x {trainer.layout.micro_batch} "
            f"on {trainer.world} process(es), {trainer.device}",
            flush=True,
        )
    trainer.fit(data)
    return trainer


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``exactps train`` (defaults None: filled from :class:`TrainConfig` / :class:`ModelConfig`)."""
    d = TrainConfig()
    p = parser
    p.add_argument("--objective", choices=OBJECTIVES, default=None, help="default eps")
    p.add_argument(
        "--task",
        default=None,
        help=f"comma list of tasks ({', '.join((*TASKS, 'none'))}); default {','.join(DEFAULT_TASKS)}",
    )
    p.add_argument("--task-probs", type=_floats, default=None, help="comma list of task weights (default uniform)")
    p.add_argument("--sigma-y", type=_floats, default=None, help="s_y, or lo,hi drawn per sample (default 0.05)")
    p.add_argument("--data", default=None, help="image folder, or 'builtin' (scikit-image photographs)")
    p.add_argument("--size", type=int, default=None, help="training image size (default: the preset's)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3), help="default 3")
    p.add_argument("--preset", default=None, help="backbone preset: tiny, small-32, small-64 (default), base-64")
    p.add_argument("--conditioning", choices=("none", "scalar", "map"), default=None, help="EPS conditioning")
    p.add_argument("--init", type=Path, default=None, help="initialise from this (unconditional) checkpoint")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this directory")
    p.add_argument("--out", type=Path, default=None, help="new run directory (must not exist or be empty)")
    p.add_argument("--steps", type=int, default=None, help=f"total optimizer steps (default {d.steps})")
    p.add_argument("--batch", type=int, default=None, help=f"global batch size (default {d.batch_size})")
    p.add_argument("--micro-batch", type=int, default=None, help="images per forward pass (default batch/world)")
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    p.add_argument("--betas", type=_floats, default=None, help="AdamW betas b1,b2 (default 0.9,0.999)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None, help=f"linear LR warm-up steps (default {d.warmup_steps})")
    p.add_argument("--ema", type=float, default=None, help=f"EMA decay per step (default {d.ema_decay})")
    p.add_argument("--grad-clip", type=float, default=None, help="max gradient norm, 0 = off (default 1)")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--ckpt-every", type=int, default=None)
    p.add_argument("--grid-every", type=int, default=None)
    p.add_argument("--keep", type=int, default=None, help="checkpoints kept (0 = all; default 3)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default: 0 on CPU, 4 on CUDA)")
    p.add_argument("--device", default=None, help="default cuda:LOCAL_RANK if available, else cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); use 1 when several processes share a CPU",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


#: CLI option -> TrainConfig field; the options that may change when resuming are in _RESUMABLE.
_TRAIN_OPTIONS = {
    "objective": "objective",
    "task": "tasks",
    "task_probs": "task_probs",
    "sigma_y": "sigma_y",
    "steps": "steps",
    "batch": "batch_size",
    "micro_batch": "micro_batch",
    "lr": "lr",
    "betas": "betas",
    "weight_decay": "weight_decay",
    "warmup": "warmup_steps",
    "ema": "ema_decay",
    "grad_clip": "grad_clip",
    "log_every": "log_every",
    "ckpt_every": "ckpt_every",
    "grid_every": "grid_every",
    "keep": "keep_checkpoints",
    "seed": "seed",
    "workers": "num_workers",
}
_RESUMABLE = {"steps", "log_every", "ckpt_every", "grid_every", "keep", "workers"}
_MODEL_OPTIONS = ("preset", "conditioning", "channels", "size", "init", "data")


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt, name in _TRAIN_OPTIONS.items():
        v = getattr(args, opt, None)
        if v is None:
            continue
        if opt == "task":
            v = tuple(t for t in v.split(",") if t)
        elif opt == "sigma_y":
            v = v[0] if len(v) == 1 else tuple(v)
        elif opt == "grad_clip":
            v = None if v <= 0 else v
        out[name] = v
    if getattr(args, "no_bf16", False):
        out["bf16"] = False
    if getattr(args, "compile", False):
        out["compile"] = True
    return out


def _configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig, dict[str, Any]]:
    from exactps.networks import PRESETS

    if args.out is None:
        raise ValueError("--out DIR is required for a new run (or --resume DIR to continue one)")
    if args.data is None:
        raise ValueError("--data DIR|builtin is required for a new run")
    cfg = TrainConfig(**_train_overrides(args)).validate()
    preset = args.preset or "small-64"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    conditioning = args.conditioning or ("none" if cfg.objective == "denoiser" else "map")
    size = args.size or PRESETS[preset].img_resolution
    channels = args.channels or 3
    mcfg = ModelConfig(preset, channels, conditioning, cfg.sigma_data, size)
    data = "builtin" if args.data == "builtin" else str(Path(args.data).resolve())  # resumable from anywhere
    return cfg, mcfg, {"data": data, "size": size, "channels": channels}


def _configs_from_run(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig, dict[str, Any]]:
    given = _train_overrides(args)
    fixed = {opt for opt, name in _TRAIN_OPTIONS.items() if name in given and opt not in _RESUMABLE}
    fixed |= {opt for opt in _MODEL_OPTIONS if getattr(args, opt, None) is not None}
    fixed |= {"no_bf16"} if args.no_bf16 else set()
    if fixed:
        raise ValueError(
            f"--{', --'.join(sorted(o.replace('_', '-') for o in fixed))} cannot change when resuming "
            f"{args.resume} (the run's stored configuration is used; only --steps and the intervals can change)"
        )
    record = json.loads(find_checkpoint(Path(args.resume) / "checkpoints").read_text())
    stored = dict(record["train_config"])
    stored.update({k: v for k, v in given.items()})
    return TrainConfig.from_dict(stored).validate(), ModelConfig.from_dict(record["model_config"]), record["run"]


def _init_distributed() -> bool:
    """Initialise the process group under torchrun (``WORLD_SIZE > 1``): nccl on CUDA, gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def train_main(args: argparse.Namespace) -> int:
    """``exactps train``: a new run (``--out``) or a resumed one (``--resume``), on one process or
    under ``torchrun --nproc_per_node N -m exactps.cli train ...`` (DDP)."""
    started = _init_distributed()
    try:
        if args.resume is not None:
            if args.out is not None and Path(args.out) != Path(args.resume):
                raise ValueError(f"--out {args.out} and --resume {args.resume} name different runs")
            cfg, mcfg, run = _configs_from_run(args)
            out = Path(args.resume)
        else:
            cfg, mcfg, run = _configs_from_args(args)
            out = Path(args.out)
        data = open_data(run["data"], int(run["size"]), int(run["channels"]))
        run_training(
            cfg,
            mcfg,
            data,
            out,
            resume=args.resume is not None,
            init=None if args.resume is not None else args.init,
            device=args.device,
            run_info=run,
            show_progress=not args.no_progress,
        )
    finally:
        if started:
            dist.destroy_process_group()
    return 0
