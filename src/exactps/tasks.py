"""THE task registry: every measurement task by name, and how to build its operator.

A *task* is a distribution of operators ``A`` for images of a given shape. :data:`TASKS` maps each
name to a :class:`Task`; nothing else in exactps lists task names or compares them, so adding a
task is one entry here (plus its test in ``tests/test_tasks.py``).

The standard set (METHOD.md, "Claims"; :data:`STANDARD_TASKS`): 4x super-resolution (bicubic), box
inpainting (a box of half the side), random inpainting (70% of pixels missing here; DPS uses 92%
at 256x256), Gaussian deblurring and motion deblurring (circular boundary). Also 2x average-pooling
SR, colorization, ``none`` (``A = 0``: no measurement, the unconditional denoiser) and two tasks for
real measurements only: ``inpaint`` (the user's mask) and ``deblur`` (the user's kernel). Masks and
motion kernels are drawn per batch element.

The paper's set (:data:`PAPER_TASKS`, the image benchmark's; BENCHMARK.md section 2): the DPS/DAPS
settings defined at 256x256, carried to 64x64 and scaled with the image size ``H``:

======================  ==========================================================================
``paper-inpaint-random``  70% of pixels missing, one mask for all channels, per image
``paper-inpaint-box``     one box, sides uniform in ``[H/4, H/2]``, ``H/16`` from every border
``paper-sr4``             4x4 average pooling
``paper-deblur-gauss``    Gaussian, std ``0.75 H/64``, support the odd size nearest ``11 H/64``
``paper-deblur-motion``   line kernels, length uniform in ``{round(7H/64) .. round(15H/64)}``,
                          angle uniform in ``[0, 180)``
======================  ==========================================================================

All blurs use a circular boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.operators import (
    AvgPoolSR,
    Blur,
    Colorize,
    Inpaint,
    LinearOperator,
    SeparableSR,
    box_masks,
    gaussian_kernel,
    line_kernels,
    motion_kernels,
    random_box_masks,
    random_masks,
)

__all__ = [
    "NO_MEASUREMENT",
    "PAPER_TASKS",
    "STANDARD_TASKS",
    "TASKS",
    "Task",
    "build_operator",
    "check_simulated",
    "check_task_inputs",
    "get_task",
    "make_task_operator",
    "simulated_tasks",
    "training_tasks",
]

#: ``build(img_shape, generator, dtype, batch)``: the operator for ``batch`` images (random parts drawn
#: ``batch`` times from ``generator``), or None for ``A = 0``.
Builder = Callable[[tuple[int, int, int], torch.Generator | None, torch.dtype, int], LinearOperator | None]


@dataclass(frozen=True)
class Task:
    """One entry of :data:`TASKS`.

    ``family``: what kind of operator (``none``, ``sr-<filter>-x<factor>``, ``inpaint``, ``deblur``,
    ``colorize``): a model trained on one task of a family is expected to handle the others;
    ``build``: the operator for a batch (None: only from a user's ``accepts`` input);
    ``random``: whether ``build`` draws per batch element (else it is the same for every call and may
    be cached); ``accepts``: the user input that replaces the drawn part (``mask`` or ``kernel``);
    ``measurement``: what a stored measurement of an ``H x W`` image holds (``exactps sample --help``);
    ``published``: the key of the baselines' official per-task settings (:mod:`exactps.baselines`).
    """

    family: str
    build: Builder | None
    random: bool = False
    accepts: str | None = None
    measurement: str = ""
    published: str | None = None

    @property
    def measures(self) -> bool:
        """False for ``none`` (``A = 0``: no measurement)."""
        return self.family != "none"

    @property
    def scale_factor(self) -> int:
        """How many times larger than the measurement the image is (``sr-<filter>-x<factor>``: the
        factor; 1 otherwise): image sides must be multiples of it."""
        if self.family.startswith("sr-") and "-x" in self.family:
            return int(self.family.rsplit("-x", 1)[1])
        return 1

    def needs_input(self, random_ok: bool) -> bool:
        """Whether a measurement of this task needs the user's ``accepts`` input: always without ``build``,
        and for random tasks when the draw is not allowed (a real measurement was taken with one mask/kernel)."""
        return self.accepts is not None and (self.build is None or (self.random and not random_ok))


def _kernel_size(h: int, w: int, cap: int = 61) -> int:
    return min(cap, min(h, w) // 2 * 2 - 1)


def _none(shape, generator, dtype, batch) -> None:
    return None


def _sr4(shape, generator, dtype, batch) -> LinearOperator:
    return SeparableSR(shape, 4, dtype=dtype)


def _sr2_avg(shape, generator, dtype, batch) -> LinearOperator:
    return AvgPoolSR(shape, 2, dtype=dtype)


def _inpaint_box(shape, generator, dtype, batch) -> LinearOperator:
    _, h, w = shape
    return Inpaint(box_masks(shape, batch, (h // 2, w // 2), generator).to(dtype), shape)


def _inpaint_random(shape, generator, dtype, batch) -> LinearOperator:
    return Inpaint(random_masks(shape, batch, 0.7, generator).to(dtype), shape)


def _deblur_gauss(shape, generator, dtype, batch) -> LinearOperator:
    _, h, w = shape  # DPS: sigma 3.0 px at 256x256; scaled with the image, at least half a pixel
    return Blur(gaussian_kernel(max(0.5, 3.0 * h / 256), size=_kernel_size(h, w)).to(dtype), shape)


def _deblur_motion(shape, generator, dtype, batch) -> LinearOperator:
    _, h, w = shape
    return Blur(motion_kernels(batch, _kernel_size(h, w), generator).to(dtype), shape)


# -- the paper's task set (../BENCHMARK.md section 2): DPS/DAPS's 256 px settings carried to H = 64 and
# scaled with H at other sizes (H = 32 on the CPU)


def _odd(v: float, least: int = 3) -> int:
    """The odd integer nearest to ``v`` (at least ``least``)."""
    return max(least, 2 * round((v - 1) / 2) + 1)


def _paper_inpaint_random(shape, generator, dtype, batch) -> LinearOperator:
    """70% of the pixels missing, one mask for all channels, drawn per image."""
    return Inpaint(random_masks(shape, batch, 0.7, generator).to(dtype), shape)


def _paper_inpaint_box(shape, generator, dtype, batch) -> LinearOperator:
    """One box per image, sides drawn in ``[H/4, H/2]``, at least ``H/16`` from every border."""
    _, h, w = shape
    side = min(h, w)
    return Inpaint(
        random_box_masks(shape, batch, (side // 4, side // 2), generator, margin=side // 16).to(dtype), shape
    )


def _paper_sr4(shape, generator, dtype, batch) -> LinearOperator:
    """4x4 average pooling (its SVD is exact; the bicubic x4 stays as ``sr4``)."""
    return AvgPoolSR(shape, 4, dtype=dtype)


def _paper_deblur_gauss(shape, generator, dtype, batch) -> LinearOperator:
    """11x11 Gaussian of std 0.75 at H = 64 (DPS: 61x61, std 3.0 at 256), scaled with H; circular."""
    h = shape[1]
    return Blur(gaussian_kernel(0.75 * h / 64, size=_odd(11 * h / 64)).to(dtype), shape)


def _paper_deblur_motion(shape, generator, dtype, batch) -> LinearOperator:
    """Line kernels of length in {7..15} px at H = 64 (scaled with H), angle uniform in [0, 180); circular."""
    h = shape[1]
    lengths = range(max(1, round(7 * h / 64)), max(1, round(15 * h / 64)) + 1)
    return Blur(line_kernels(batch, _odd(max(lengths)), lengths, generator).to(dtype), shape)


def _colorize(shape, generator, dtype, batch) -> LinearOperator:
    if shape[0] != 3:
        raise ValueError("colorize needs 3-channel images")
    return Colorize(shape, dtype=dtype)


_SR4 = (
    "the low-resolution image, H/4 x W/4, made by exactps's operator (deepinv's bicubic Downsampling, circular "
    "boundary); other resizers sample other pixel positions, so simulate with --image, or measure with exactps.tasks"
)
_SR2 = "the low-resolution image, H/2 x W/2 (2x2 average pooling)"
_HOLES = "the image with holes, H x W (the holes' values are ignored)"
_BLURRED = "the blurred image, H x W"
_GAUSS = "the blurred image, H x W (the training Gaussian blur, or --kernel)"
_GREY = "the grayscale image, H x W (Rec. 601 luma)"
_SR4_AVG = "the low-resolution image, H/4 x W/4 (4x4 average pooling)"
_PAPER_GAUSS = "the blurred image, H x W (Gaussian, std 0.75 H/64, or --kernel)"

TASKS: dict[str, Task] = {
    "sr4": Task("sr-bicubic-x4", _sr4, measurement=_SR4, published="sr"),
    "sr2-avg": Task("sr-avgpool-x2", _sr2_avg, measurement=_SR2),
    "inpaint-box": Task("inpaint", _inpaint_box, True, "mask", _HOLES, "inpainting"),
    "inpaint-random": Task("inpaint", _inpaint_random, True, "mask", _HOLES, "inpainting_random"),
    "inpaint": Task("inpaint", None, accepts="mask", measurement=_HOLES),
    "deblur-gauss": Task("deblur", _deblur_gauss, False, "kernel", _GAUSS, "gaussian_deblur"),
    "deblur-motion": Task("deblur", _deblur_motion, True, "kernel", _BLURRED, "motion_deblur"),
    "deblur": Task("deblur", None, accepts="kernel", measurement=_BLURRED),
    "colorize": Task("colorize", _colorize, measurement=_GREY),
    "paper-inpaint-random": Task("inpaint", _paper_inpaint_random, True, "mask", _HOLES, "inpainting_random"),
    "paper-inpaint-box": Task("inpaint", _paper_inpaint_box, True, "mask", _HOLES, "inpainting"),
    "paper-sr4": Task("sr-avgpool-x4", _paper_sr4, measurement=_SR4_AVG, published="sr"),
    "paper-deblur-gauss": Task("deblur", _paper_deblur_gauss, False, "kernel", _PAPER_GAUSS, "gaussian_deblur"),
    "paper-deblur-motion": Task("deblur", _paper_deblur_motion, True, "kernel", _BLURRED, "motion_deblur"),
    "none": Task("none", _none, measurement="nothing: prior samples"),
}

#: What a user's input is: input -> (the tasks that take it, its name in messages, the option that gives it).
_INPUTS: dict[str, tuple[str, str, str]] = {
    "mask": ("inpainting", "mask", "--mask M.png: white = observed"),
    "kernel": ("deblurring", "blur kernel", "--kernel K.npy or K.png"),
}

#: The name of the task without measurement (``A = 0``).
NO_MEASUREMENT = "none"
#: The exactness benchmark's task set, and the default training mixture.
STANDARD_TASKS: tuple[str, ...] = ("sr4", "inpaint-box", "inpaint-random", "deblur-gauss", "deblur-motion")
#: The image benchmark's task set (the EPS paper's five tasks; ../BENCHMARK.md section 2).
PAPER_TASKS: tuple[str, ...] = (
    "paper-inpaint-random",
    "paper-inpaint-box",
    "paper-sr4",
    "paper-deblur-gauss",
    "paper-deblur-motion",
)


def training_tasks() -> tuple[str, ...]:
    """The tasks whose operator can be drawn (usable in training and simulation): all but ``inpaint``, ``deblur``."""
    return tuple(name for name, task in TASKS.items() if task.build is not None)


def simulated_tasks() -> tuple[str, ...]:
    """The tasks whose operator can be drawn and that measure something: what a simulation needs
    (``exactps verify``, the benchmarks)."""
    return tuple(name for name, task in TASKS.items() if task.build is not None and task.measures)


def check_simulated(names: Sequence[str]) -> None:
    """``ValueError`` unless every task in ``names`` can be simulated (:func:`simulated_tasks`)."""
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; choose one of {simulated_tasks()}")
        if name not in simulated_tasks():
            raise ValueError(f"task {name!r} cannot be simulated here (no drawn operator, or no measurement); "
                             f"choose one of {simulated_tasks()}")  # fmt: skip


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; ``ValueError`` listing the choices otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; choose one of {tuple(TASKS)}") from None


def make_task_operator(
    task: str,
    img_shape: Sequence[int],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    batch: int = 1,
) -> LinearOperator | None:
    """The operator of ``task`` for images of ``img_shape``; random parts drawn ``batch`` times.
    None for ``none`` (``A = 0``)."""
    entry = get_task(task)
    if entry.build is None:
        raise ValueError(f"task {task!r} has no operator of its own: it needs the measurement's {entry.accepts}")
    shape = tuple(int(n) for n in img_shape)
    return entry.build(shape, generator, dtype, batch)  # type: ignore[arg-type]


def check_task_inputs(task: str, has_mask: bool, has_kernel: bool, random_ok: bool = True) -> None:
    """Raise ``ValueError`` unless ``task`` takes a mask / kernel exactly as given (see :func:`build_operator`)."""
    entry = get_task(task)
    given = {"mask": has_mask, "kernel": has_kernel}
    for name, present in given.items():
        if present and entry.accepts != name:
            takers = ", ".join(n for n, t in TASKS.items() if t.accepts == name)
            raise ValueError(f"a {name} only applies to the {_INPUTS[name][0]} tasks ({takers}), not {task!r}")
    if entry.needs_input(random_ok) and not given[entry.accepts]:  # type: ignore[index]
        _, what, how = _INPUTS[entry.accepts]  # type: ignore[index]
        raise ValueError(f"task {task!r} needs the {what} of the measurement ({how})")


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
) -> LinearOperator | None:
    """The operator of ``task`` for images of ``img_shape``, from a user's input or drawn.

    A ``mask`` (inpainting tasks) or ``kernel`` (deblurring tasks) replaces the task's own (random
    or Gaussian) one; without them the operator is drawn as in training (:func:`make_task_operator`,
    ``batch`` masks/kernels from ``generator``). ``inpaint`` needs a mask and ``deblur`` a kernel, and
    so do ``inpaint-box``, ``inpaint-random`` and ``deblur-motion`` if not ``random_ok`` (a real
    measurement was taken with one particular mask/kernel).
    """
    check_task_inputs(task, mask is not None, kernel is not None, random_ok)
    shape = tuple(int(n) for n in img_shape)
    if mask is not None:
        return Inpaint(mask.to(dtype), shape)
    if kernel is not None:
        return Blur(kernel.to(dtype), shape)
    return make_task_operator(task, shape, generator, dtype, batch=batch)
