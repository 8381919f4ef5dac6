"""Input checks shared by the metrics (each raises ``ValueError`` naming the problem), and the lazy
import of the optional packages of the ``metrics`` extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import Tensor

__all__ = ["check_ensemble", "check_features", "check_finite", "check_pair", "optional_import"]

INSTALL_HINT = 'pip install "exactps[metrics]"'


def optional_import(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` (a package of the ``metrics`` extra), or raise ``ImportError`` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{needed_for} needs the package {module!r}: {INSTALL_HINT}") from err


def check_finite(name: str, t: Tensor) -> None:
    """``ValueError`` if ``t`` holds a NaN or an infinity."""
    if t.is_floating_point() and not bool(t.isfinite().all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_pair(x: Tensor, ref: Tensor, ndim: int = 4) -> None:
    """``x`` and ``ref`` are finite batches of the same shape with ``ndim`` dimensions ``(B, C, H, W)``."""
    if x.shape != ref.shape:
        raise ValueError(f"images and references must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    if x.ndim != ndim:
        raise ValueError(f"expected {ndim}-d batches (B, C, H, W), got shape {tuple(x.shape)}")
    check_finite("images", x)
    check_finite("references", ref)


def check_ensemble(samples: Tensor, truth: Tensor, min_samples: int = 2) -> None:
    """``samples (J, B, ...)`` with ``J >= min_samples`` and ``truth (B, ...)`` of matching shapes, all finite."""
    if samples.ndim != truth.ndim + 1 or samples.shape[1:] != truth.shape:
        raise ValueError(
            f"samples must be (J, *truth.shape): got samples {tuple(samples.shape)} and truth {tuple(truth.shape)}"
        )
    if truth.ndim < 1:
        raise ValueError("truth must have a batch dimension (B, ...)")
    if samples.shape[0] < min_samples:
        raise ValueError(f"need J >= {min_samples} samples per image, got J = {samples.shape[0]}")
    check_finite("samples", samples)
    check_finite("truth", truth)


def check_features(name: str, f: Tensor, min_rows: int = 2) -> None:
    """``f`` is a finite ``(N, D)`` matrix with ``N >= min_rows``."""
    if f.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) feature matrix, got shape {tuple(f.shape)}")
    if f.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {f.shape[0]}")
    check_finite(name, f)
