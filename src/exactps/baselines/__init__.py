"""Training-free posterior samplers used as baselines: DPS, PiGDM, DDRM, DiffPIR, DDNM and DDNM+, DAPS
and MPGD, one module each, and their table :data:`BASELINES` (one entry per method).

Every baseline consumes the same x0-predictor of the *unconditional* prior that the EPS samplers
use (``(x_t, t) -> E[x0 | x_t]``, e.g. ``PosteriorPredictor(gmm.denoise, interp)`` with no
operator) and is written in the ``(a, s)`` of the interpolant ``x_t = a x0 + s e``. On
:class:`~exactps.interpolants.VPLinear` (``a^2 = abar``, ``s^2 = 1 - abar``) the updates are those
of the papers; the default time grids are the DDPM indices ``i`` of the official code, mapped to
``t = (i + 1) / 1000 * t_max`` (see :func:`ddpm_grid`). Each call returns the samples, the number
of network evaluations ``nfe`` and of vector-Jacobian products (backward passes) ``vjp``. A grid
``ts`` (decreasing, ending at 0; ``x_init`` is the state at ``ts[0]``) overrides ``steps``.

Notation per step ``t -> t'``: ``x0 = f(x_t, t)``, ``e = (x_t - a x0) / s``, ``z ~ N(0, I)``,
``r = y - A x0``, ``A = U diag(k) V^T``; a prime marks the next time.

Defaults and their sources (``steps`` network evaluations on :func:`ddpm_grid`; DAPS: on its own grid)

=======  =====  =======  ===================================  =========================================================
method   steps  grid     hyper-parameters                     source
=======  =====  =======  ===================================  =========================================================
DPS      1000   uniform  ``zeta = 1.0`` on ``grad ||r||``     Chung et al. 2023 (ICLR), Alg. 1 and Sec. 3.2
                         (= ``zeta'/||r||`` on ``||r||^2``);  (``zeta_i = zeta'/||y - A x0||``); official code
                         DDPM step, posterior variance        DPS2022/diffusion-posterior-sampling:
                                                              ``guided_diffusion/condition_methods.py``
                                                              (``PosteriorSampling``: ``x_t -= scale * grad ||r||``,
                                                              ``scale`` default 1.0), ``configs/diffusion_config.yaml``
                                                              (ddpm, 1000 steps); per-task ``scale`` of
                                                              ``configs/*_config.yaml`` in :data:`DPS_ZETA`
PiGDM    100    uniform  ``eta = 1.0`` (DDIM),                Song et al. 2023 (ICLR), Eq. 7-8 (likelihood score,
                         ``r_t^2 = s^2/(a^2+s^2)``,           ``r_t^2 = sigma_t^2/(1+sigma_t^2)``), Sec. 4 (100 DDIM
                         guidance weight 1                    steps). No official code release; ``eta`` not checked
                                                              against code (NVlabs/RED-diff ``algos/pgdm.py`` uses 0)
DDRM     20     uniform  ``eta = 0.85``, ``eta_b = 1.0``      Kawar et al. 2022 (NeurIPS), Eq. 7-8, 20-NFE results;
                                                              bahjat-kawar/ddrm ``main.py`` (``--eta 0.85``,
                                                              ``--etaB 1``), ``runners/diffusion.py`` (``seq =
                                                              range(0, 1000, 1000 // timesteps)``),
                                                              ``functions/denoising.py``
DiffPIR  100    quad     ``lam = 1.0``, ``zeta = 0.1``;       Zhu et al. 2023 (CVPRW), Alg. 1; yuanzhi-zhu/DiffPIR
                         ``s_y`` on ``[0, 1]`` images         ``configs/deblur.yaml`` (``lambda_`` 1, ``zeta`` 0.1,
                                                              ``iter_num`` 100, ``skip_type`` quad); other tasks in
                                                              :data:`DIFFPIR_ZETA`
DDNM     100    uniform  ``eta = 0.85``, time travel off      Wang et al. 2023 (ICLR), Alg. 1 and Eq. 17-19;
                         (``travel_length`` and               wyhuai/DDNM ``main.py`` (``--eta 0.85``),
                         ``travel_repeat`` 1); DDNM+ when     ``configs/celeba_hq.yml`` (``T_sampling`` 100, travel
                         ``s_y > 0``                          length and repeat 1), ``functions/svd_ddnm.py``
                                                              (``get_schedule_jump``), ``functions/svd_operators.py``
                                                              (``Lambda``, ``Lambda_noise``); runner: DDNM+ iff
                                                              ``sigma_y > 0``
DAPS     1000   poly-7   200 annealing levels ``s/a`` from    Zhang et al. 2025 (CVPR; arXiv:2407.01521), Alg. 1;
                (s/a)    100 to 0.1 (:func:`daps_grid`), 5    zhangbingliang2019/DAPS first release (25471a8):
                         Euler ODE steps each (to 0.01);      ``sampler.py``, ``config/sampler/edm_daps.yaml``,
                         Langevin: 100 steps, ``lr`` 1e-4     ``config/task/*.yaml``; ``commands/pixel_ffhq.sh``
                         decayed linearly by 100x, ``tau``    (200 x 5 = DAPS-1K); per-task ``lr`` in :data:`DAPS_LR`;
                         0.01, ``r_i = sigma_i``              100-NFE split (ours) in :data:`DAPS_PRESETS`
MPGD     100    uniform  ``eta = 0.5``, ``scale = 4`` on      He et al. 2024 (ICLR), Alg. 1 (pixel space, w/o
                         ``grad_x0 ||r||`` (no VJP), divided  projection); KellyYutongHe/mpgd_pytorch ``linear_inv/``:
                         by ``a'`` (``sqrt(abar_{t-1})``)     ``condition_methods.py`` (``WoProjSampling``),
                                                              ``guided_gaussian_diffusion.py`` (``DDIMx0``),
                                                              ``configs/mgpd_diffusion_config.yaml`` (eta 0.5),
                                                              ``scripts/wo_proj_ffhq_super_resolution.sh`` (100
                                                              steps, scale 4); other tasks in :data:`MPGD_SCALE`
=======  =====  =======  ===================================  =========================================================

Operators: DPS, DAPS and MPGD need only ``A`` and ``A^T``; PiGDM and DiffPIR need
``(w A^T A + c I)^{-1} A^T`` (closed form for a :class:`~exactps.operators.base.SpectralOperator`,
conjugate gradients for a :class:`~exactps.operators.base.MatrixFreeOperator`); DDRM and DDNM work
in the SVD basis and need a :class:`~exactps.operators.base.SpectralOperator`. Singular values below
``rcond * max k`` count as zero, as in the pivot.
"""

from __future__ import annotations

from exactps.baselines.common import BaselineOutput, ddpm_grid
from exactps.baselines.daps import DAPS_LR, DAPS_PRESETS, daps_grid, daps_sample
from exactps.baselines.ddnm import ddnm_sample, travel_schedule
from exactps.baselines.ddrm import ddrm_sample
from exactps.baselines.diffpir import DIFFPIR_STEPS, DIFFPIR_ZETA, diffpir_sample
from exactps.baselines.dps import DPS_ZETA, dps_sample
from exactps.baselines.mpgd import MPGD_SCALE, mpgd_sample
from exactps.baselines.pigdm import PIGDM_WEIGHTINGS, pigdm_sample
from exactps.baselines.registry import BASELINES
from exactps.baselines.settings import (
    BASELINE_DEFAULTS,
    PUBLISHED_PER_TASK,
    Grid,
    candidates,
    flatten_point,
    published_point,
    published_settings,
)

__all__ = [
    "BASELINES",
    "BASELINE_DEFAULTS",
    "DAPS_LR",
    "DAPS_PRESETS",
    "DIFFPIR_STEPS",
    "DIFFPIR_ZETA",
    "DPS_ZETA",
    "MPGD_SCALE",
    "PIGDM_WEIGHTINGS",
    "PUBLISHED_PER_TASK",
    "BaselineOutput",
    "Grid",
    "candidates",
    "daps_grid",
    "daps_sample",
    "ddnm_sample",
    "ddpm_grid",
    "ddrm_sample",
    "diffpir_sample",
    "dps_sample",
    "flatten_point",
    "mpgd_sample",
    "pigdm_sample",
    "published_point",
    "published_settings",
    "travel_schedule",
]
