"""Sampling with trained models: load a run, a checkpoint or an exported model; export; sample.

For ``y = A x0 + s_y n`` an ``"eps"`` model samples ``p(x0 | y)`` by running the backbone's sampler
on ``E[x0 | x_t, y] = D_theta(m; S_t)``, ``m = S_t ((a/s^2) x_t + A^T y / s_y^2)``
(:class:`~exactps.posterior.PosteriorPredictor`); a ``"conditional"`` model on
``D_theta(x_t/a, s/a, A^T y, s_y)`` (:class:`~exactps.conditional.ConditionalPredictor`); with no
operator every model, ``"denoiser"`` included, samples the prior ``p(x0)``.

* :func:`load_model`: a run directory (its latest checkpoint), a checkpoint ``step-*.json`` or an
  exported model, as a :class:`LoadedModel` in eval mode (EMA weights by default).
* :func:`export_model`: ``<out>.safetensors`` (EMA weights, float16 by default) and ``<out>.json``
  (what the network is and what it was trained on), the form in which small models are shared.
* :func:`posterior_samples`: ``(num_samples, B, C, H, W)`` samples for a batch of measurements.
* :func:`read_image`, :func:`read_mask`, :func:`read_kernel`, :func:`build_operator` and
  :func:`measurement_from_image`: measurements and operators from files (``exactps sample``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from exactps.checkpoint import (
    FORMAT,
    MODEL_FORMAT,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_model_file,
    model_file_paths,
    record_format,
    save_model_file,
)
from exactps.conditional import ConditionalPredictor
from exactps.data import load_image
from exactps.interpolants import Interpolant, get_interpolant
from exactps.operators import Blur, Inpaint, LinearOperator
from exactps.posterior import PosteriorPredictor, X0Predictor, check_sigma_y
from exactps.samplers import SAMPLERS, sample
from exactps.tasks import TASKS, make_task_operator
from exactps.training import OBJECTIVES, ModelConfig, build_model, default_device

__all__ = [
    "MEASUREMENT_TASKS",
    "LoadedModel",
    "build_operator",
    "check_operator_for",
    "check_task_inputs",
    "export_model",
    "load_model",
    "measurement_from_image",
    "posterior_samples",
    "read_image",
    "read_kernel",
    "read_mask",
]

#: Tasks :func:`build_operator` knows: the benchmark set plus ``inpaint`` (needs a mask) and
#: ``deblur`` (needs a kernel).
MEASUREMENT_TASKS: tuple[str, ...] = (*TASKS, "inpaint", "deblur")
_INPAINT = ("inpaint-box", "inpaint-random", "inpaint")
_DEBLUR = ("deblur-gauss", "deblur-motion", "deblur")


# -- loading -------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A trained network ready to sample: ``model`` (eval mode, no gradients), its ``objective``
    (``"denoiser"``, ``"eps"`` or ``"conditional"``), ``model_config``, the ``source`` file it was
    read from (a checkpoint's or an exported model's JSON record) and, when recorded, the training
    progress (``images_seen``, ``step``) and training distribution (``tasks``, ``sigma_y``)."""

    model: nn.Module
    objective: str
    model_config: ModelConfig
    source: Path
    images_seen: int | None = None
    step: int | None = None
    tasks: tuple[str, ...] | None = None
    sigma_y: float | tuple[float, ...] | None = None
    train_data: str | None = None  # "builtin" or the training image folder's name

    @property
    def resolution(self) -> int:
        """The training image size (``model_config.resolution``, else the preset's)."""
        from exactps.networks import PRESETS

        cfg = self.model_config
        return int(cfg.resolution or PRESETS[cfg.preset].img_resolution)

    @property
    def img_shape(self) -> tuple[int, int, int]:
        return (int(self.model_config.channels), self.resolution, self.resolution)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> str:
        """One line: objective, network, progress and training distribution."""
        c, h, w = self.img_shape
        text = f"{self.objective} model ({self.model_config.preset}, {c}x{h}x{w}"
        if self.objective != "conditional":
            text += f", {self.model_config.conditioning} conditioning"
        text += ")"
        if self.step is not None:
            text += f", step {self.step}"
        if self.images_seen is not None:
            text += f" ({self.images_seen} images seen)"
        if self.tasks and self.objective != "denoiser":
            text += f", trained on {','.join(self.tasks)} with s_y {_format_sigma_y(self.sigma_y)}"
        return text


def _format_sigma_y(sigma_y: Any) -> str:
    if isinstance(sigma_y, list | tuple):
        return "-".join(f"{float(v):g}" for v in sigma_y)
    return "?" if sigma_y is None else f"{float(sigma_y):g}"


@dataclass
class _Weights:
    """What a model file holds: the state dict and its description (internal)."""

    state: dict[str, Tensor]
    objective: str
    model_config: ModelConfig
    source: Path
    ema: bool
    images_seen: int | None
    step: int | None
    train: dict[str, Any]


def _resolve(path: str | Path) -> tuple[str, Path]:
    """``("checkpoint" | "export", JSON record)`` for a run directory, checkpoint or exported model."""
    p = Path(path)
    if p.is_dir():
        return "checkpoint", find_checkpoint(p)
    if p.suffix == ".safetensors":
        json_path = p.with_suffix(".json")
        if p.exists() and not json_path.exists():
            raise ValueError(
                f"{p} has no record {json_path.name} beside it: a bare state dict does not say which network "
                "it holds (pass a run directory, a checkpoint step-*.json or an exported model)"
            )
    elif p.suffix == ".json":
        json_path = p
    else:
        json_path = model_file_paths(p)[0]  # an exported model named without its suffix
    if not json_path.exists():
        raise FileNotFoundError(
            f"model {p} does not exist (expected a run directory, a checkpoint step-*.json or an exported model)"
        )
    fmt = record_format(json_path)
    if fmt == MODEL_FORMAT:
        return "export", json_path
    if fmt is None or fmt == FORMAT:  # unreadable records get load_checkpoint's error
        return "checkpoint", json_path
    raise CheckpointError(
        f"{json_path} is neither an exactps checkpoint nor an exported model (format {fmt!r}, "
        f"expected {FORMAT!r} or {MODEL_FORMAT!r})"
    )


def _model_record(record: dict[str, Any], json_path: Path) -> tuple[str, ModelConfig]:
    """The objective and model configuration a record (or its run's ``config.json``) describes."""
    objective, mcfg = record.get("objective"), record.get("model_config") or {}
    run_config = json_path.parent.parent / "config.json"
    if (not mcfg or objective is None) and run_config.exists():
        try:
            stored = json.loads(run_config.read_text())
        except (OSError, ValueError):
            stored = {}
        objective = objective or stored.get("objective")
        mcfg = mcfg or stored.get("model_config") or {}
    if objective not in OBJECTIVES or not isinstance(mcfg, dict) or "preset" not in mcfg:
        raise ValueError(
            f"{json_path} does not record which network it holds (objective {objective!r}, model_config "
            f"{mcfg!r}); load it with exactps.checkpoint.load_checkpoint and build the network yourself"
        )
    return objective, ModelConfig.from_dict(mcfg)


def _train_summary(objective: str, train_config: dict[str, Any], data: str | None = None) -> dict[str, Any]:
    """What a shared model records of its training (a ``denoiser`` only ever saw ``A = 0``: task ``none``);
    the data as ``builtin`` or the image folder's name (never a full path)."""
    keys = ("tasks", "task_probs", "sigma_y", "steps", "batch_size", "seed")
    summary = {k: train_config[k] for k in keys if k in train_config}
    if data is not None:
        summary["data"] = data if data == "builtin" else Path(data).name
    if objective == "denoiser":
        summary.update(tasks=["none"], task_probs=None)
    return summary


def _read_weights(path: str | Path, prefer_ema: bool = True) -> _Weights:
    kind, json_path = _resolve(path)
    if kind == "export":
        record, state = load_model_file(json_path)
        objective, mcfg = _model_record(record, json_path)
        return _Weights(
            state,
            objective,
            mcfg,
            json_path,
            bool(record.get("ema", True)),
            record.get("images_seen"),
            record.get("step"),
            dict(record.get("train") or {}),
        )
    ckpt = load_checkpoint(json_path)
    objective, mcfg = _model_record(ckpt.meta, ckpt.path)
    use_ema = bool(prefer_ema and ckpt.ema)
    position = ckpt.meta.get("data_position") or {}
    return _Weights(
        ckpt.ema if use_ema else ckpt.model,  # type: ignore[arg-type]
        objective,
        mcfg,
        ckpt.path,
        use_ema,
        position.get("images_seen"),
        ckpt.step,
        _train_summary(objective, ckpt.meta.get("train_config") or {}, (ckpt.meta.get("run") or {}).get("data")),
    )


def _build(weights: _Weights, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The network of ``weights``, strictly loaded, in eval mode without gradients."""
    src = weights.source
    bad = [k for k, v in weights.state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"the weights in {src} hold NaN or infinite values ({', '.join(bad[:3])}, ...)")
    try:
        with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
            model = build_model(weights.objective, weights.model_config)
    except ValueError as err:
        raise ValueError(f"cannot build the network {src} describes: {err}") from err
    try:
        model.load_state_dict(weights.state, strict=True)
    except RuntimeError as err:
        cfg = weights.model_config
        raise ValueError(
            f"the weights in {src} do not fit a {weights.objective} model with preset {cfg.preset!r}, "
            f"{cfg.channels} channels and {cfg.conditioning!r} conditioning: {err}"
        ) from err
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_model(
    path: str | Path,
    device: torch.device | str | None = None,
    prefer_ema: bool = True,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a trained network for sampling.

    ``path``: a run directory of ``exactps train`` (its latest checkpoint), a checkpoint's
    ``step-*.json`` (or ``.safetensors``), or an exported model (``NAME.json``, ``NAME.safetensors``
    or ``NAME``). Checkpoints give their EMA weights if ``prefer_ema`` (and they have them); exported
    weights are cast to ``dtype`` (float32 by default). ``device`` defaults to CUDA when available.

    Raises ``FileNotFoundError`` for a missing path or file and ``ValueError`` (``CheckpointError``
    for corrupt or truncated files) when the files cannot be used, each naming the file.
    """
    weights = _read_weights(path, prefer_ema)
    dev = torch.device(device) if device is not None else default_device()
    model = _build(weights, dev, dtype)
    train = weights.train
    tasks = tuple(train["tasks"]) if train.get("tasks") else None
    sigma_y = train.get("sigma_y")
    sigma_y = tuple(sigma_y) if isinstance(sigma_y, list) else sigma_y
    w = weights
    return LoadedModel(
        model, w.objective, w.model_config, w.source, w.images_seen, w.step, tasks, sigma_y, train.get("data")
    )


# -- export --------------------------------------------------------------------------------------------


def export_model(
    source: str | Path,
    out: str | Path,
    dtype: torch.dtype = torch.float16,
    force: bool = False,
    prefer_ema: bool = True,
) -> Path:
    """Write ``<out>.safetensors`` (the EMA weights of ``source`` cast to ``dtype``) and ``<out>.json``
    (format tag, objective, model configuration, training tasks and ``s_y``, images seen, SHA-256 and
    size of the weights), atomically; ``out`` may carry either suffix. Returns the JSON path.

    ``source`` is anything :func:`load_model` reads. Existing files are an error unless ``force``.
    The weights are checked to load into the network before anything is written.
    """
    json_path, tensor_path = model_file_paths(out)
    if not force:
        for p in (json_path, tensor_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists (use --force to overwrite it)")
    weights = _read_weights(source, prefer_ema)
    _build(weights, torch.device("cpu"), torch.float32)  # fits the network: fail before writing
    state = {}
    for key, value in weights.state.items():
        if value.is_floating_point():
            if dtype.is_floating_point and value.abs().max() > torch.finfo(dtype).max:
                raise ValueError(f"weight {key} of {weights.source} does not fit in {dtype}; export in float32")
            value = value.to(dtype)
        state[key] = value
    meta = {
        "objective": weights.objective,
        "model_config": asdict(weights.model_config),
        "train": weights.train,
        "images_seen": weights.images_seen,
        "step": weights.step,
        "ema": weights.ema,
        "dtype": str(dtype).removeprefix("torch."),
        "exported_from": weights.source.name,
        "torch_version": torch.__version__,
    }
    return save_model_file(json_path, state, meta, overwrite=force)


# -- sampling ------------------------------------------------------------------------------------------


def _generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))


def _predictor(
    loaded: LoadedModel, interp: Interpolant, operator: LinearOperator | None, y: Tensor | None, sigma_y: Tensor | float
) -> X0Predictor:
    cls = ConditionalPredictor if loaded.objective == "conditional" else PosteriorPredictor
    return cls(loaded.model, interp, operator, y, sigma_y)


def _chunks(n: int, size: int | None) -> list[tuple[int, int]]:
    step = n if size is None else size
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def check_operator_for(loaded: LoadedModel, operator: LinearOperator | None) -> None:
    """Raise ``ValueError`` if ``loaded`` cannot sample with ``operator`` (an unconditional model
    with a measurement, or images of another number of channels)."""
    if operator is None:
        return
    if loaded.objective == "denoiser":
        raise ValueError(
            f"{loaded.source} is an unconditional model (objective 'denoiser'): it was not trained for "
            "measurements and samples only the prior (use no operator / --task none)"
        )
    if operator.img_shape[0] != loaded.model_config.channels:
        raise ValueError(
            f"the operator acts on {operator.img_shape[0]}-channel images but {loaded.source} is a "
            f"{loaded.model_config.channels}-channel model"
        )


@torch.no_grad()
def posterior_samples(
    loaded: LoadedModel,
    operator: LinearOperator | None,
    y: Tensor | None,
    sigma_y: float | Tensor = 0.0,
    num_samples: int = 1,
    sampler: str = "heun",
    nfe: int = 35,
    interpolant: str = "ve",
    generator: torch.Generator | int | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """``num_samples`` samples of ``p(x0 | y)`` for each of the ``B`` measurements ``y``: ``(num_samples, B, C, H, W)``.

    ``operator`` is ``A`` (shared, or one per batch element, e.g. masks); ``y`` its measurements
    ``(B, *operator.meas_shape)``; ``sigma_y`` a scalar or one value per measurement (``0``: noiseless).
    ``operator=None`` (and ``y=None``) draws prior samples, ``(num_samples, 1, C, H, W)`` at the model's
    resolution. ``generator`` is a generator on the model's device or an integer seed. ``batch_size``
    caps the images per sampler call (default: all at once); the samples depend on it, as the
    generator's draws are consumed call by call. The operator and ``y`` are moved to the model's device.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    interp = get_interpolant(interpolant)
    counts = {"num_samples": num_samples, "nfe": nfe, "batch_size": 1 if batch_size is None else batch_size}
    for name, v in counts.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    device = loaded.device
    gen = _generator(generator, device)

    def draw(predictor_for: Callable[[slice], X0Predictor], n: int, shape: tuple[int, ...], dtype: torch.dtype):
        """``n`` samples in calls of at most ``batch_size`` images; ``predictor_for(images of the call)``."""
        out = []
        for i, j in _chunks(n, batch_size):
            predict, size = predictor_for(slice(i, j)), (j - i, *shape)
            out.append(sample(predict, interp, size, sampler, nfe, generator=gen, dtype=dtype, device=device).x)
        return torch.cat(out)

    if operator is None:
        if y is not None:
            raise ValueError("y was given without an operator")
        prior = _predictor(loaded, interp, None, None, 0.0)
        dtype = next(loaded.model.parameters()).dtype
        return draw(lambda _: prior, num_samples, loaded.img_shape, dtype).unsqueeze(1)
    check_operator_for(loaded, operator)
    if y is None:
        raise ValueError("an operator was given without the measurement y")
    if not isinstance(y, Tensor) or not y.is_floating_point():
        raise TypeError(f"y must be a floating-point tensor, got {type(y).__name__}")
    operator = operator.to(device)
    y = y.to(device)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or infinite values")
    operator.check_measurement(y, "y")  # shape, dtype and batch (one operator, or one per measurement)
    sy = check_sigma_y(sigma_y, y)
    batch, shape = y.shape[0], operator.img_shape
    if operator.batch == 1:  # one flat batch: sample k of measurement b is image k * B + b
        ys = y.repeat(num_samples, *([1] * (y.ndim - 1)))
        sys = sy.repeat(num_samples) if sy.numel() > 1 else sy

        def flat(sl: slice) -> X0Predictor:
            return _predictor(loaded, interp, operator, ys[sl], sys[sl] if sys.numel() > 1 else sys)

        return draw(flat, num_samples * batch, shape, y.dtype).reshape(num_samples, batch, *shape)
    per_element = []  # one operator per measurement (masks, kernels): each measurement's samples together
    for b in range(batch):
        predict = _predictor(loaded, interp, operator.select(b), y[b : b + 1], sy[b] if sy.numel() > 1 else sy)
        per_element.append(draw(lambda _, p=predict: p, num_samples, shape, y.dtype))
    return torch.stack(per_element, dim=1)


# -- measurements and operators from files ----------------------------------------------------------------


def read_image(path: str | Path, size: int | None = None, channels: int = 3) -> Tensor:
    """An image file as ``(1, C, H, W)`` in ``[-1, 1]`` (``x = 2 u - 1``), read as
    :class:`exactps.data.ImageFolder` reads training images: centre-cropped to a square and resized
    to ``size`` (bicubic), or exactly as stored if ``size`` is None."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {p} does not exist")
    try:
        return load_image(p, size, channels)[None]
    except OSError as err:
        raise ValueError(str(err)) from err


def _check_size(what: str, path: str | Path, got: Sequence[int], want: Sequence[int], why: str) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{what} {path} is {got[0]}x{got[1]} but {why} {want[0]}x{want[1]}")


def read_mask(path: str | Path, img_shape: Sequence[int]) -> Tensor:
    """An inpainting mask file as ``(1, 1, H, W)`` zeros and ones: white (> 50% grey) = observed.
    Its size must be the images' ``H x W`` (it is never resized)."""
    m = read_image(path, None, channels=1)
    _check_size("mask", path, m.shape[-2:], img_shape[-2:], "must have the images' size,")
    return (m > 0).to(torch.float32)


def read_kernel(path: str | Path) -> Tensor:
    """A blur kernel as ``(1, 1, h, w)`` summing to 1: a ``.npy`` 2-D array or a grayscale image."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"kernel {p} does not exist")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"could not read kernel {p}: {err}") from err
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"kernel {p} must hold a 2-D numeric array, got shape {arr.shape} ({arr.dtype})")
        k = torch.from_numpy(arr.astype(np.float64))
    else:
        k = (read_image(p, None, channels=1)[0, 0].double() + 1) / 2
    total = float(k.sum())
    if not bool(torch.isfinite(k).all()) or not total > 0:
        raise ValueError(f"kernel {p} must be finite with a positive sum, got sum {total}")
    return (k / total).float().reshape(1, 1, *k.shape)


def build_operator(
    task: str,
    img_shape: Sequence[int],
    *,
    mask: Tensor | None = None,
    kernel: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    random_ok: bool = True,
) -> LinearOperator:
    """The operator of ``task`` for images of ``img_shape``.

    A ``mask`` (inpainting tasks) or ``kernel`` (deblurring tasks) replaces the task's own (random
    or Gaussian) one; without them the benchmark operator is drawn as in training
    (:func:`exactps.tasks.make_task_operator`, ``batch`` masks/kernels from ``generator``).
    ``inpaint`` needs a mask and ``deblur`` a kernel, and so do ``inpaint-box``, ``inpaint-random`` and
    ``deblur-motion`` if not ``random_ok`` (a real measurement was taken with one particular mask/kernel).
    """
    check_task_inputs(task, mask is not None, kernel is not None, random_ok)
    shape = tuple(int(n) for n in img_shape)
    if mask is not None:
        return Inpaint(mask.to(dtype), shape)
    if kernel is not None:
        return Blur(kernel.to(dtype), shape)
    return make_task_operator(task, shape, generator, dtype, batch=batch)  # type: ignore[arg-type]


def check_task_inputs(task: str, has_mask: bool, has_kernel: bool, random_ok: bool = True) -> None:
    """Raise ``ValueError`` unless ``task`` takes a mask / kernel exactly as given (see :func:`build_operator`)."""
    if task not in MEASUREMENT_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {MEASUREMENT_TASKS}")
    if has_mask and task not in _INPAINT:
        raise ValueError(f"a mask only applies to the inpainting tasks ({', '.join(_INPAINT)}), not {task!r}")
    if has_kernel and task not in _DEBLUR:
        raise ValueError(f"a kernel only applies to the deblurring tasks ({', '.join(_DEBLUR)}), not {task!r}")
    if not has_mask and (task == "inpaint" or (task in _INPAINT and not random_ok)):
        raise ValueError(f"task {task!r} needs the mask of the measurement (--mask M.png: white = observed)")
    if not has_kernel and (task == "deblur" or (task == "deblur-motion" and not random_ok)):
        raise ValueError(f"task {task!r} needs the blur kernel of the measurement (--kernel K.npy or K.png)")


def measurement_from_image(operator: LinearOperator, path: str | Path, task: str = "") -> Tensor:
    """The measurement ``y`` ``(1, *operator.meas_shape)`` stored in an image file.

    The file holds ``y`` as a picture of ``operator.meas_shape``: the low-resolution image (super-
    resolution), the blurred image (deblurring), the grayscale image (colorization) or the image with
    holes (inpainting: ``y = mask * image``, the values in the holes are ignored). It is never resized:
    a file of another size is an error naming both sizes.
    """
    c, h, w = operator.meas_shape
    if c not in (1, 3):
        raise ValueError(f"measurements of shape {operator.meas_shape} cannot be read from an image")
    y = read_image(path, None, channels=c)
    _, ih, iw = operator.img_shape
    why = f"{task or type(operator).__name__} with the model's {ih}x{iw} images needs"
    _check_size("measurement", path, y.shape[-2:], (h, w), why)
    y = y.to(operator._dtype())
    return operator.A(y) if isinstance(operator, Inpaint) else y
