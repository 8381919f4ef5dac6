"""The training loop (METHOD.md, "The EPS denoiser and its training objective").

:class:`Trainer` runs any objective of :data:`exactps.models.OBJECTIVES` on one code path
(:meth:`Trainer.shard_loss`): AdamW with linear warm-up, an EMA of the weights, gradient clipping,
bf16 autocast on CUDA, optional ``torch.compile``, DDP when ``torch.distributed`` is initialised,
and exact resume. The run directory is :class:`~exactps.train.rundir.RunDir`'s job.

Reproducibility
---------------
Every random draw of step ``k`` is a pure function of ``(seed, k)``: the task of the step, and, for
each *shard* (micro-batch) ``j`` of the global batch, its images, masks/kernels, ``rho``, noises and
dropout come from generators seeded by ``(seed, k, j)`` (:class:`exactps.seeds.TrainSeed`). Hence

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

import contextlib
import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from exactps.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from exactps.classes import split_labels, with_class_labels
from exactps.models import get_objective
from exactps.networks import checkpoint_blocks, compile_backbone
from exactps.objectives import sample_sigma_y
from exactps.operators.base import LinearOperator
from exactps.runtime import default_device
from exactps.seeds import TrainSeed, derive_seed, seeded_global_rng
from exactps.tasks import NO_MEASUREMENT, TASKS, Task
from exactps.train.batches import Batch, ShardLayout, first_shard, head, micro_batches
from exactps.train.config import TrainConfig, preview_sigma_y
from exactps.train.distributed import barrier, dist_info
from exactps.train.preview import preview_rows
from exactps.train.rundir import RunDir

__all__ = ["Trainer"]


class Trainer:
    """Train ``model`` with ``config``; write the run into ``out_dir`` (optional).

    ``out_dir`` receives ``config.json``, ``log.jsonl``, ``checkpoints/`` and ``grids/`` (rank 0 only;
    :class:`~exactps.train.rundir.RunDir`). An existing non-empty ``out_dir`` is an error unless
    ``resume``, which loads its latest checkpoint.

    The model is called with its objective's inputs (:attr:`exactps.models.Objective.inputs`):
    ``model(m, noise)`` for ``denoiser``/``eps``, ``model(x_t/a, rho, cond, s_y)`` for ``conditional``;
    with batches of :class:`~exactps.classes.LabelledImages` (a class-conditional network), each image's
    class goes with it: ``model(m, noise, class_labels=)``.
    ``tasks`` is the registry the task names of ``config`` are looked up in (default
    :data:`exactps.tasks.TASKS`; pass another mapping of names to :class:`~exactps.tasks.Task` to
    train on operators of your own).
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
        tasks: Mapping[str, Task] = TASKS,
        show_progress: bool = True,
    ):
        self.config = config.validate()
        self.objective = get_objective(config.objective)
        self.rank, self.world = dist_info()
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
        self.tasks = tasks
        self.show_progress = show_progress
        self.run = RunDir(out_dir) if out_dir is not None else None
        self._ops: dict[tuple, LinearOperator | None] = {}
        self._probs = torch.tensor(config.task_probs or [1.0] * len(config.tasks), dtype=torch.float64)
        self._check_tasks()
        if self.run is not None:
            self._prepare_run(resume)
        elif resume:
            raise ValueError("resume=True needs the run's out_dir")
        if resume:
            self.load(self.run.latest_checkpoint())  # type: ignore[union-attr]
        self.net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if config.grad_checkpoint:
            checkpoint_blocks(self.model)
        if config.compile:
            compile_backbone(self.model)

    @property
    def out_dir(self) -> Path | None:
        return self.run.path if self.run is not None else None

    # -- setup ------------------------------------------------------------------------------------------
    def _check_tasks(self) -> None:
        if not self.objective.measures:
            return
        bad = [t for t in self.config.tasks if t not in self.tasks or self.tasks[t].build is None]
        if bad:
            choices = tuple(n for n, t in self.tasks.items() if t.build is not None)
            raise ValueError(f"unknown task(s) {bad}; choose from {choices}")

    def _prepare_run(self, resume: bool) -> None:
        run = self.run
        assert run is not None
        if resume:
            run.check_resumable()
            if self.rank == 0:
                for path in run.remove_stale_temporaries():
                    print(f"removed {path} (a temporary file of an interrupted run)", flush=True)
        else:
            run.check_new()
        barrier(self.world)
        if self.rank == 0 and not resume:
            run.create(
                {
                    "objective": self.config.objective,
                    "train_config": self.config.to_dict(),
                    "model_config": self.model_config,
                    "run": self.run_info,
                }
            )

    # -- the task of a step ----------------------------------------------------------------------------
    def task_at(self, step: int) -> str:
        """The task of ``step`` (one per step, drawn from ``task_probs`` with a ``(seed, step)`` generator);
        ``none`` for an objective trained without measurements."""
        if not self.objective.measures:
            return NO_MEASUREMENT
        g = torch.Generator().manual_seed(derive_seed(self.config.seed, TrainSeed.TASK, step))
        return self.config.tasks[int(torch.multinomial(self._probs, 1, generator=g))]

    # -- one step -------------------------------------------------------------------------------------------
    def _task(self, name: str) -> Task:
        return self.tasks[name] if self.objective.measures else TASKS[NO_MEASUREMENT]

    def _operator(self, name: str, x0: Tensor, generator: torch.Generator) -> LinearOperator | None:
        """The operator of task ``name`` for the shard ``x0`` (fixed operators are built once)."""
        task = self._task(name)
        key = (name, tuple(x0.shape[1:]), x0.dtype)
        if not task.random and key in self._ops:
            return self._ops[key]
        op = task.build(tuple(x0.shape[1:]), generator, x0.dtype, x0.shape[0])  # type: ignore[misc,arg-type]
        op = op.to(self.device) if op is not None else None
        if not task.random:
            self._ops[key] = op
        return op

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _call(self, net: nn.Module, labels: Tensor | None = None) -> Callable[..., Tensor]:
        """``net`` under autocast, with the class ``labels`` of its images bound (None: no labels)."""

        def call(*args: Any, **kw: Any) -> Tensor:
            with self._autocast():
                return net(*args, **kw)

        return with_class_labels(call, labels)

    def shard_loss(
        self, net: nn.Module, x0: Tensor, task: str, step: int, shard: int, labels: Tensor | None = None
    ) -> Tensor:
        """The loss of shard ``shard`` of step ``step``: every draw seeded by ``(seed, step, shard)``;
        ``labels``: the class of each image of ``x0`` (a class-conditional network)."""
        cfg = self.config
        seed = derive_seed(cfg.seed, TrainSeed.SHARD, step, shard)
        g_cpu = torch.Generator().manual_seed(seed)
        g_dev = g_cpu if self.device.type == "cpu" else torch.Generator(device=self.device).manual_seed(seed)
        with seeded_global_rng(seed, self.device):  # dropout
            op = self._operator(task, x0, g_cpu)
            sy = sample_sigma_y(cfg.sigma_y, x0.shape[0], g_dev, self.device, x0.dtype)
            kw = {"p_mean": cfg.p_mean, "p_std": cfg.p_std, "sigma_data": cfg.sigma_data}
            return self.objective.loss(self._call(net, labels), x0, op, sy, g_dev, **kw)

    def train_step(self, micro_batches: Sequence[Batch]) -> tuple[float, float]:
        """One optimizer step on this rank's micro-batches; returns ``(mean loss over all ranks, grad norm)``."""
        if len(micro_batches) != self.layout.accum:
            raise ValueError(f"expected {self.layout.accum} micro-batches, got {len(micro_batches)}")
        step, task = self.step, self.task_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr_at(step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for i, (shard, batch) in enumerate(zip(self.layout.shards, micro_batches, strict=True)):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()
            with sync:
                x0, labels = self._on_device(batch)
                loss = self.shard_loss(self.net, x0, task, step, shard, labels)
                (loss / self.layout.accum).backward()
            total += loss.detach().float()
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if bool(torch.isfinite(norm)):
            self.optimizer.step()
            self._update_ema(self.config.ema_decay_at(step))
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

    def _on_device(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """The images of ``batch`` on the device in the weights' dtype, and their labels (None without)."""
        x0, labels = split_labels(batch)
        x0 = x0.to(self.device, self._dtype(), non_blocking=True)
        return x0, None if labels is None else labels.to(self.device, non_blocking=True)

    @torch.no_grad()
    def _update_ema(self, decay: float) -> None:
        """``ema <- decay * ema + (1 - decay) * weights``; buffers copied."""
        for pe, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            pe.lerp_(p.detach(), 1 - decay)
        for be, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            be.copy_(b)

    @torch.no_grad()
    def held_out_loss(self, x0: Batch, task: str | None = None, seed: int = 12345, use_ema: bool = False) -> float:
        """The loss of ``x0`` (images, or :class:`~exactps.classes.LabelledImages`) with fixed draws (seed
        ``seed``), the network in eval mode."""
        net = self.ema if use_ema else self.model
        was_training = net.training
        net.eval()
        try:
            task = task or self.task_at(0)
            images, labels = self._on_device(x0)
            return float(self.shard_loss(net, images, task, seed, 0, labels))
        finally:
            net.train(was_training)

    # -- the loop -------------------------------------------------------------------------------------------
    def batches(self, data: Any, stop: int) -> Iterator[list[Batch]]:
        """This rank's micro-batches for steps ``self.step .. stop - 1`` (see
        :func:`~exactps.train.batches.micro_batches`)."""
        pin = self.device.type == "cuda"
        return micro_batches(data, self.layout, self.config.seed, self.step, stop, self.data_workers(), pin)

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
                    preview = head(micro[0], cfg.grid_images)
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
        if self.run is not None and self.step % cfg.ckpt_every != 0:
            self.save()
        return losses

    def preview_images(self, data: Any) -> Batch | None:
        """The images of every preview grid of the run (:func:`~exactps.train.batches.first_shard`)."""
        return first_shard(data, self.layout, self.config.seed, self.config.grid_images)

    def _progress_bar(self, stop: int) -> tqdm | None:
        if self.rank != 0 or not self.show_progress:
            return None
        return tqdm(total=stop, initial=self.step, unit="step", dynamic_ncols=True, desc=self.config.objective)

    def _log(self, loss: float, norm: float, rate: float, bar: tqdm | None) -> None:
        if self.rank != 0:
            return
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        if self.run is not None:
            lr = self.config.lr_at(self.step - 1)
            entry = {"step": self.step, "loss": loss, "grad_norm": norm, "lr": lr, "img_per_s": rate}
            if self.device.type == "cuda":  # peak GPU memory of the run so far
                entry["peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            self.run.append_log(entry)

    # -- previews ---------------------------------------------------------------------------------------------
    def preview(self, x0: Batch, task: str | None = None) -> list[Tensor]:
        """Grid rows from the EMA model (:func:`~exactps.train.preview.preview_rows`) for ``task``
        (default: the first task with a measurement); ``x0``: images, or images with their labels."""
        cfg = self.config
        name = task or next((t for t in cfg.tasks if t in self.tasks and self.tasks[t].measures), NO_MEASUREMENT)
        images, labels = self._on_device(x0)
        sigma_y = preview_sigma_y(cfg.sigma_y)
        call = self._call(self.ema, labels)
        return preview_rows(self.objective, call, images, self._task(name), sigma_y, cfg.seed, cfg.grid_nfe)

    def save_preview(self, x0: Batch | None) -> Path | None:
        """Write ``grids/step-<k>.png`` (rank 0, when there is a run directory)."""
        if self.rank != 0 or self.run is None or x0 is None or split_labels(x0)[0].ndim != 4:
            return None
        return self.run.save_grid(self.step, self.preview(x0))

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
        """Checkpoint the current step into the run directory (rank 0; atomic; old ones pruned)."""
        path = None
        if self.rank == 0 and self.run is not None:
            states = (self.model.state_dict(), self.ema.state_dict(), self.optimizer.state_dict())
            path = self.run.save_checkpoint(self.step, *states, self.state_meta(), self.config.keep_checkpoints)
        barrier(self.world)
        return path

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
        if self.rank == 0 and self.run is not None:
            self.run.truncate_log(self.step)

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


def _jsonish(v: Any) -> Any:
    return json.loads(json.dumps(v))
