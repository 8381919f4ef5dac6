"""Per-image fidelity to a reference: PSNR (of each image, or of an ensemble's mean) and SSIM.

Images are ``(B, C, H, W)`` in ``[-1, 1]``; PSNR with ``data_range = 2`` on ``[-1, 1]`` equals PSNR with
peak 1 on ``[0, 1]`` (deepinv's ``PSNR(max_pixel=1)``), and SSIM maps the images to ``[0, 1]`` first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from exactps.metrics._checks import check_ensemble, check_pair

__all__ = ["psnr", "psnr_of_mean", "ssim"]

SSIM_SIGMA = 1.5
# scikit-image's Gaussian (scipy.ndimage.gaussian_filter, truncate 3.5): radius int(3.5 * 1.5 + 0.5) = 5, 11 taps
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR in dB for images in a range of width ``data_range`` (2 for [-1, 1])."""
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def psnr_of_mean(samples: Tensor, truth: Tensor, data_range: float = 2.0) -> Tensor:
    """PSNR of the ensemble mean, ``psnr(mean_j x^(j), x)``, for ``samples (J, B, ...)`` and ``truth (B, ...)``.

    The mean estimates the MMSE restoration ``E[x | y]``, so this is usually higher than the mean
    per-sample PSNR ``mean_j psnr(x^(j), x)``."""
    check_ensemble(samples, truth, min_samples=1)
    return psnr(samples.mean(0), truth, data_range)


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1-d Gaussian of scikit-image's SSIM: sigma 1.5, 11 taps."""
    t = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    return w / w.sum()


def _local_mean(x: Tensor, w: Tensor) -> Tensor:
    """Gaussian-weighted local means of each channel of ``x (B, C, H, W)``, only where the window fits (valid)."""
    c = x.shape[1]
    x = F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)


def _ssim_map(u: Tensor, v: Tensor) -> Tensor:
    """The SSIM index at each pixel where the window fits, for images ``u, v`` in ``[0, 1]``."""
    w = _gaussian_window(u.dtype, u.device)
    mu_u, mu_v = _local_mean(u, w), _local_mean(v, w)
    var_u = _local_mean(u * u, w) - mu_u**2
    var_v = _local_mean(v * v, w) - mu_v**2
    cov = _local_mean(u * v, w) - mu_u * mu_v
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2 * mu_u * mu_v + c1) * (2 * cov + c2)) / ((mu_u**2 + mu_v**2 + c1) * (var_u + var_v + c2))


def ssim(x: Tensor, ref: Tensor) -> Tensor:
    """Per-image SSIM ``(B,)`` of images ``x``, ``ref`` ``(B, C, H, W)`` in ``[-1, 1]``, mapped to ``u = (x + 1) / 2``.

    With Gaussian-weighted local means ``mu``, variances ``s²`` and covariance ``s_xr`` (sigma 1.5, 11x11,
    population moments), ``C1 = 0.01²``, ``C2 = 0.03²`` (data range 1), the index at a pixel is
    ``(2 mu_x mu_r + C1)(2 s_xr + C2) / ((mu_x² + mu_r² + C1)(s_x² + s_r² + C2))``, averaged over the channels
    and the pixels at least 5 from the border. This is scikit-image's ``structural_similarity(u, u_ref,
    data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0)``: it filters
    the whole image and then drops a border of 5, which leaves exactly the pixels where the window fits.
    Computed in float64, returned in the dtype of ``x``; needs ``H, W >= 11``."""
    check_pair(x, ref)
    size = 2 * SSIM_RADIUS + 1
    if min(x.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {tuple(x.shape[-2:])}")
    u, v = ((t.to(torch.float64) + 1) / 2 for t in (x, ref))
    out = _ssim_map(u, v).flatten(1).mean(1)
    return out.to(x.dtype) if x.is_floating_point() else out
