"""Sampling with trained models: posterior (or prior) samples for a batch of measurements.

For ``y = A x0 + s_y n`` an ``"eps"`` model samples ``p(x0 | y)`` by running the backbone's sampler
on ``E[x0 | x_t, y] = D_theta(m; S_t)``, ``m = S_t ((a/s^2) x_t + A^T y / s_y^2)``
(:class:`~exactps.posterior.PosteriorPredictor`); a ``"conditional"`` model on
``D_theta(x_t/a, s/a, observation, s_y)`` (:class:`~exactps.conditional.ConditionalPredictor`); with no
operator every model, ``"denoiser"`` included, samples the prior ``p(x0)``. Each objective's
predictor is in its registry entry (:data:`exactps.models.OBJECTIVES`).

Models are loaded with :func:`exactps.loading.load_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from exactps.batch import check_sigma_y
from exactps.classes import FOLDER_LABELS, ClassLabelsError, fit_class_labels, with_class_labels
from exactps.interpolants import Interpolant, X0Predictor, get_interpolant
from exactps.loading import LoadedModel
from exactps.networks import PRESETS
from exactps.operators import LinearOperator
from exactps.runtime import available_memory
from exactps.samplers import SAMPLERS, sample

__all__ = [
    "SampleMemoryError",
    "check_class_labels_for",
    "check_measures",
    "check_operator_for",
    "check_sample_memory",
    "fitting_call_size",
    "posterior_samples",
    "sampler_call_size",
]


class SampleMemoryError(ValueError):
    """A sampling request that cannot fit in the memory of its device (raised before any allocation)."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def _memory_terms(
    loaded: LoadedModel, img_shape: tuple[int, ...], num_images: int, meas_numel: int, element_size: int
) -> tuple[int, int]:
    """Bytes kept for the whole request, and bytes per image of one sampler call (see :func:`check_sample_memory`)."""
    c, h, w = img_shape
    image = c * h * w * element_size
    preset = PRESETS.get(loaded.model_config.preset)
    width = preset.model_channels if preset is not None else c
    per_call_image = 4 * image + 2 * width * h * w * element_size
    kept = num_images * (2 * image + meas_numel * element_size)
    return kept, per_call_image


def check_sample_memory(
    loaded: LoadedModel,
    num_images: int,
    call_images: int | None,
    meas_numel: int = 0,
    element_size: int = 4,
    available: int | None = None,
    img_shape: tuple[int, ...] | None = None,
) -> None:
    """Raise :class:`SampleMemoryError` if ``num_images`` samples drawn in sampler calls of ``call_images``
    images (``None``: all at once) cannot fit, before anything is allocated.

    The estimate is a lower bound, so a request that fits is never refused: the samples are kept (twice,
    while the calls' outputs are concatenated), with the repeated measurements (``meas_numel`` values
    per image), and each call holds, per image, the sampler's state (4 images) and the network's
    first-level feature maps (2 maps of ``model_channels`` channels at full resolution).
    ``available``: bytes that can be allocated (default :func:`available_memory` of the model's device);
    ``img_shape``: the images' ``(C, H, W)`` (default the model's training size).
    """
    available = available_memory(loaded.device) if available is None else available
    if available is None:
        return
    shape = tuple(img_shape or loaded.img_shape)
    kept, per_call_image = _memory_terms(loaded, shape, num_images, meas_numel, element_size)
    call = min(num_images, call_images or num_images)
    need = kept + call * per_call_image
    if need <= available:
        return
    image = math.prod(shape) * element_size
    fix = []
    if call * per_call_image > available / 2:
        fit = max(1, int((available - kept) // per_call_image)) if kept < available else None
        fix.append(f"sample fewer images per call (--batch / batch_size{f', e.g. {fit}' if fit else ''})")
    if kept > available / 2:
        most = max(0, int(available // (2 * (2 * image + meas_numel * element_size))))
        fix.append(f"draw fewer samples (--num-samples; all are kept in memory: about {most} images fit)")
    c, h, w = shape
    raise SampleMemoryError(
        f"{num_images} sampled images of {c}x{h}x{w} ({loaded.model_config.preset} model) need at least "
        f"{_gib(need)} on {loaded.device} (the samples {_gib(kept)}, each sampler call of {call} image(s) "
        f"{_gib(call * per_call_image)}) but only {_gib(available)} can be allocated: "
        + " or ".join(fix or ["free memory or use a smaller image"])
    )


def fitting_call_size(
    loaded: LoadedModel,
    num_images: int,
    img_shape: tuple[int, ...],
    meas_numel: int = 0,
    element_size: int = 4,
    available: int | None = None,
) -> int:
    """The most images one sampler call may hold so that ``num_images`` samples of ``img_shape`` fit
    (all of them when they fit at once); :class:`SampleMemoryError` when not even one image per call fits."""
    available = available_memory(loaded.device) if available is None else available
    if available is None:
        return num_images
    kept, per_call_image = _memory_terms(loaded, tuple(img_shape), num_images, meas_numel, element_size)
    call = min(num_images, int((available - kept) // per_call_image)) if kept < available else 0
    if call < 1:
        check_sample_memory(loaded, num_images, 1, meas_numel, element_size, available, img_shape)
    return max(call, 1)


def sampler_call_size(
    loaded: LoadedModel,
    num_images: int,
    img_shape: tuple[int, ...],
    batch_size: int | None = None,
    meas_numel: int = 0,
    dtype: torch.dtype = torch.float32,
) -> int:
    """Images per sampler call for ``num_images`` samples of ``img_shape``: ``batch_size`` when given
    (checked by :func:`check_sample_memory`), else the most that fit (:func:`fitting_call_size`). Either
    way a request that cannot fit is a :class:`SampleMemoryError` before anything is allocated."""
    size = _element_size(dtype)
    if batch_size is None:
        return fitting_call_size(loaded, num_images, img_shape, meas_numel, size)
    check_sample_memory(loaded, num_images, batch_size, meas_numel, size, img_shape=img_shape)
    return batch_size


def _generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))


def _predictor(
    loaded: LoadedModel,
    interp: Interpolant,
    operator: LinearOperator | None,
    y: Tensor | None,
    sigma_y: Tensor | float,
    labels: Tensor | None = None,
) -> X0Predictor:
    return loaded.spec.predictor(with_class_labels(loaded.model, labels), interp, operator, y, sigma_y)


def check_class_labels_for(loaded: LoadedModel, class_labels: Tensor | None) -> None:
    """Raise :class:`~exactps.classes.ClassLabelsError` (before any work) for a network that takes the class
    of each image (``class_labels == "folder"``) without labels, or for labels given to a network that
    takes none."""
    choice = loaded.model_config.class_labels
    if choice == FOLDER_LABELS and class_labels is None:
        raise ClassLabelsError(
            f"class-conditional prior used without labels: {loaded.source} takes the class of each image "
            "(class_labels=: indices (B,) or label vectors (B, K))"
        )
    if choice is None and class_labels is not None:
        raise ClassLabelsError(f"{loaded.source} is not class-conditional: it takes no class labels")


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _chunks(n: int, size: int | None) -> list[tuple[int, int]]:
    step = n if size is None else size
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def check_operator_for(loaded: LoadedModel, operator: LinearOperator | None) -> None:
    """Raise ``ValueError`` if ``loaded`` cannot sample with ``operator`` (an unconditional model
    with a measurement, or images of another number of channels)."""
    if operator is None:
        return
    check_measures(loaded)
    if operator.img_shape[0] != loaded.model_config.channels:
        raise ValueError(
            f"the operator acts on {operator.img_shape[0]}-channel images but {loaded.source} is a "
            f"{loaded.model_config.channels}-channel model"
        )


def check_measures(loaded: LoadedModel) -> None:
    """Raise ``ValueError`` if ``loaded`` is an unconditional model (it cannot restore measurements)."""
    if not loaded.spec.measures:
        raise ValueError(
            f"{loaded.source} is an unconditional model (objective {loaded.objective!r}): it was not trained for "
            "measurements and samples only the prior (use no operator / --task none)"
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
    class_labels: Tensor | None = None,
) -> Tensor:
    """``num_samples`` samples of ``p(x0 | y)`` for each of the ``B`` measurements ``y``: ``(num_samples, B, C, H, W)``.

    ``operator`` is ``A`` (shared, or one per batch element, e.g. masks); ``y`` its measurements
    ``(B, *operator.meas_shape)``; ``sigma_y`` a scalar or one value per measurement (``0``: noiseless).
    ``operator=None`` (and ``y=None``) draws prior samples, ``(num_samples, 1, C, H, W)`` at the model's
    resolution. ``generator`` is a generator on the model's device or an integer seed. ``batch_size``
    caps the images per sampler call (default: as many as fit in memory, all at once when they do,
    :func:`fitting_call_size`); the samples depend on it, as the generator's draws are consumed call by
    call. The operator and ``y`` are moved to the model's device. Images of any size ``H x W`` work (the
    networks pad them, :meth:`~exactps.networks.EPSDenoiser.run_unet`); a request that cannot fit is a
    :class:`SampleMemoryError` before anything is allocated. ``class_labels`` is the class of each
    measurement (indices ``(B,)`` or label vectors ``(B, K)``; one for all, or ``(num_samples,)`` prior
    samples) for a class-conditional network, which needs them (:func:`check_class_labels_for`).
    """
    check_class_labels_for(loaded, class_labels)
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
        labels = None if class_labels is None else fit_class_labels(class_labels.to(device), num_samples)
        dtype = next(loaded.model.parameters()).dtype
        batch_size = sampler_call_size(loaded, num_samples, loaded.img_shape, batch_size, 0, dtype)

        def prior(sl: slice) -> X0Predictor:
            return _predictor(loaded, interp, None, None, 0.0, None if labels is None else labels[sl])

        return draw(prior, num_samples, loaded.img_shape, dtype).unsqueeze(1)
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
    labels = None if class_labels is None else fit_class_labels(class_labels.to(device), batch)
    meas = math.prod(operator.meas_shape) if operator.batch == 1 else 0
    per_call = num_samples * batch if operator.batch == 1 else num_samples  # images of one sampler call, uncapped
    cap = None if batch_size is None else min(per_call, batch_size)
    call = sampler_call_size(loaded, num_samples * batch, shape, cap, meas, y.dtype)
    batch_size = None if call >= per_call else call
    if operator.batch == 1:  # one flat batch: sample k of measurement b is image k * B + b
        ys = y.repeat(num_samples, *([1] * (y.ndim - 1)))
        sys = sy.repeat(num_samples) if sy.numel() > 1 else sy
        ls = None if labels is None else labels.repeat(num_samples, *([1] * (labels.ndim - 1)))

        def flat(sl: slice) -> X0Predictor:
            return _predictor(loaded, interp, operator, ys[sl], sys[sl] if sys.numel() > 1 else sys,
                              None if ls is None else ls[sl])  # fmt: skip

        return draw(flat, num_samples * batch, shape, y.dtype).reshape(num_samples, batch, *shape)
    per_element = []  # one operator per measurement (masks, kernels): each measurement's samples together
    for b in range(batch):
        label = None if labels is None else labels[b : b + 1]
        predict = _predictor(loaded, interp, operator.select(b), y[b : b + 1], sy[b] if sy.numel() > 1 else sy, label)
        per_element.append(draw(lambda _, p=predict: p, num_samples, shape, y.dtype))
    return torch.stack(per_element, dim=1)
