"""MPGD: manifold preserving guided diffusion, without projection (He et al. 2024, ICLR).

Defaults and their sources: :mod:`exactps.baselines`. Checked against the official code
(KellyYutongHe/mpgd_pytorch, ``linear_inv/``: ``guided_diffusion/condition_methods.py``
``WoProjSampling``, ``guided_diffusion/guided_gaussian_diffusion.py`` ``DDIMx0.p_sample_loop``,
``configs/mgpd_diffusion_config.yaml``, ``scripts/wo_proj_ffhq_super_resolution.sh``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from exactps.baselines.common import (
    BaselineOutput,
    CountedNetwork,
    check_fraction,
    prepare,
)
from exactps.batch import per_batch
from exactps.interpolants import Interpolant, X0Predictor
from exactps.operators.base import LinearOperator
from exactps.samplers import alpha_sigma, ddim_step

__all__ = ["MPGD_SCALE", "mpgd_sample"]

#: MPGD (w/o projection) step sizes at 100 DDIM steps (FFHQ 256, ``s_y = 0.05``). ``sr``: the official
#: script ``linear_inv/scripts/wo_proj_ffhq_super_resolution.sh`` (``--timestep=100 --scale=4``; 50 steps
#: use 7.5, 20 steps 17.5). ``gaussian_deblur``: ``configs/gaussian_deblur_config.yaml`` (``scale: 10``,
#: marked "will be changed in another script", which is not in the repository; also the argparse
#: default) -- low confidence. No inpainting or motion-deblur setting was released.
MPGD_SCALE: dict[str, float] = {"sr": 4.0, "gaussian_deblur": 10.0}


def mpgd_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 100,
    eta: float = 0.5,
    scale: float = 4.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """MPGD without projection (He et al. 2024, Alg. 1 in pixel space): a gradient step on ``x0``, then DDIM.

    ``x0_y = x0 - (scale / a') grad_{x0} ||y - A x0|| = x0 + (scale / a') A^T r / ||r||`` (the norm, not its
    square, and ``1 / sqrt(abar_{t-1})``, as in the official ``WoProjSampling``; the norm is taken per
    sample, the official code runs batch size 1), then the DDIM(``eta``) step with the network's ``e``
    (from the unguided ``x0``, as the official ``DDIMx0``): ``x' = a' x0_y + sqrt(s'^2 - c^2) e + c z``.
    The gradient is taken at ``x0``, not through the network: one network evaluation per step, no VJP;
    only ``A`` and ``A^T`` are needed. ``s_y`` is only validated. The official code clips ``x0`` to
    ``[-1, 1]`` (``clip_denoised: True``); pass ``clip=1.0`` for that.
    """
    y, _, ts = prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    check_fraction("eta", eta)
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    f = CountedNetwork(predict, clip)
    x = x_init
    with torch.no_grad():
        for i in range(len(ts) - 1):
            (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
            x0 = f(x, ts[i])
            r = y - operator.A(x0)
            norm = r.flatten(1).norm(dim=1).clamp_min(torch.finfo(r.dtype).tiny)
            shift = (scale / an) * operator.At(r / per_batch(norm, r.ndim))  # = -(scale/a') grad ||r||
            # DDIM with the unguided e = (x - a x0)/s and the guided x0: a' (x0 + shift) + ...
            x = ddim_step(x, x0, a, s, an, sn, eta, generator) + an * shift
    return BaselineOutput(x, f.nfe, f.vjp)
