"""How close a sample set is to the exact posterior of an :class:`ExactProblem`.

* ``sw2/floor``: ``mean_j SW2(X, R_j) / mean_j SW2(R'_j, R_j)`` over the problem's ``n_refs`` pairs of
  exact sets, with the same random directions for every term (1.0 = as close as exact samples of the
  same count);
* for a Gaussian posterior ``N(mu, Sigma)`` (one-component prior), the bias of a Gaussian fitted to
  ``X``: ``KL(N(m_X, C_X) || N(mu, Sigma))`` in nats and ``W2(N(m_X, C_X), N(mu, Sigma))``. Exact
  samples do not score 0 (``C_X`` is estimated from ``n`` samples): their mean over the ``R_j`` is
  reported as ``KL floor`` and ``W2 floor``;
* ``mean PSNR``: the PSNR (data range 2) of the sample mean against the ground truth ``x0``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exactps.exactbench.problems import ExactProblem
from exactps.metrics import frechet_distance, gaussian_fit, gaussian_kl, psnr, sliced_w2
from exactps.seeds import ExactBenchSeed

__all__ = ["Scorer"]


class Scorer:
    """Scores of sample sets against one problem's exact posterior (floors computed once)."""

    def __init__(self, problem: ExactProblem, n_proj: int = 256):
        self.problem, self.n_proj = problem, n_proj
        pairs = zip(problem.others, problem.references, strict=True)
        self.floor = sum(self._sw2(o, r) for o, r in pairs) / problem.references.shape[0]
        self.gaussian = problem.posterior.weights.numel() == 1
        if self.gaussian:
            kl, w2 = zip(*(self._gaussian(r) for r in problem.references), strict=True)
            self.kl_floor, self.w2_floor = sum(kl) / len(kl), sum(w2) / len(w2)

    def _sw2(self, x: Tensor, reference: Tensor) -> float:
        g = self.problem.generator(ExactBenchSeed.PROJECTIONS)  # the same directions for every term
        return sliced_w2(x, reference, self.n_proj, g)

    def sw2_ratio(self, x: Tensor) -> float:
        """``mean_j SW2(x, R_j)`` divided by the floor (inf if ``x`` is not finite)."""
        if not torch.isfinite(x).all():
            return math.inf
        return sum(self._sw2(x, r) for r in self.problem.references) / len(self.problem.references) / self.floor

    def _gaussian(self, x: Tensor) -> tuple[float, float]:
        post = self.problem.posterior
        mean, cov = gaussian_fit(x)
        try:
            kl = gaussian_kl(mean, cov, post.means[0], post.covs[0])
        except ValueError:  # a collapsed sample set: singular covariance
            kl = math.inf
        w2 = math.sqrt(max(frechet_distance(mean, cov, post.means[0], post.covs[0]), 0.0))
        return kl, w2

    def __call__(self, x: Tensor) -> dict[str, float]:
        """Every score of sample set ``x`` ``(n, *img_shape)``."""
        out = {"sw2/floor": self.sw2_ratio(x)}
        if self.gaussian:
            if torch.isfinite(x).all():
                out["KL"], out["W2"] = self._gaussian(x)
            else:
                out["KL"] = out["W2"] = math.inf
            out["KL floor"], out["W2 floor"] = self.kl_floor, self.w2_floor
        mean = x.mean(0, keepdim=True).to(torch.float64)
        out["mean PSNR"] = float(psnr(mean, self.problem.x0.to(mean)))
        return out
