"""Training-free posterior samplers used as baselines: DPS, PiGDM, DDRM, DiffPIR, DDNM and DDNM+.

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

Defaults and their sources (``steps`` network evaluations on :func:`ddpm_grid`)

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
DDNM     100    uniform  ``eta = 0.85``, no time travel;      Wang et al. 2023 (ICLR), Alg. 1 and Eq. 17-19;
                         DDNM+ when ``s_y > 0``               wyhuai/DDNM ``main.py`` (``--eta 0.85``),
                                                              ``configs/celeba_hq.yml`` (``T_sampling`` 100, travel
                                                              length and repeat 1), ``functions/svd_ddnm.py``,
                                                              ``functions/svd_operators.py`` (``Lambda``,
                                                              ``Lambda_noise``); runner: DDNM+ iff ``sigma_y > 0``
=======  =====  =======  ===================================  =========================================================

Operators: DPS needs only ``A`` and ``A^T``; PiGDM and DiffPIR need ``(w A^T A + c I)^{-1} A^T``
(closed form for a :class:`~exactps.operators.base.SpectralOperator`, conjugate gradients for a
:class:`~exactps.operators.base.MatrixFreeOperator`); DDRM and DDNM work in the SVD basis and
need a :class:`~exactps.operators.base.SpectralOperator`. Singular values below
``rcond * max k`` count as zero, as in the pivot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.batch import per_batch
from exactps.interpolants import Interpolant, X0Predictor
from exactps.operators.base import LinearOperator, MatrixFreeOperator, SpectralOperator, default_rcond
from exactps.posterior import check_sigma_y
from exactps.samplers import alpha_sigma, ddim_step, gaussian_like

__all__ = [
    "BASELINES",
    "DIFFPIR_ZETA",
    "DPS_ZETA",
    "BaselineOutput",
    "ddnm_sample",
    "ddpm_grid",
    "ddrm_sample",
    "diffpir_sample",
    "dps_sample",
    "pigdm_sample",
]

#: DPS step sizes ``zeta`` of the official configs (FFHQ/ImageNet, ``s_y = 0.05``).
DPS_ZETA: dict[str, float] = {"sr": 0.3, "inpainting": 0.5, "gaussian_deblur": 0.3, "motion_deblur": 0.3}
#: DiffPIR ``zeta`` of the official configs; inpainting runs 20 steps there, the others 100.
DIFFPIR_ZETA: dict[str, float] = {"deblur": 0.1, "sr": 0.25, "inpainting": 1.0}


@dataclass
class BaselineOutput:
    """Samples ``x``, network evaluations ``nfe`` and vector-Jacobian products ``vjp``."""

    x: Tensor
    nfe: int
    vjp: int


class _Network:
    """Counts predictor calls and the backward passes through them; optional x0 clipping."""

    def __init__(self, predict: X0Predictor, clip: float | None):
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be positive or None, got {clip}")
        self.predict = predict
        self.clip = clip
        self.nfe = 0
        self.vjp = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        x0 = self.predict(x, t.to(x.dtype))
        if x0.shape != x.shape:
            raise ValueError(f"the predictor returned shape {tuple(x0.shape)} for input {tuple(x.shape)}")
        return x0 if self.clip is None else x0.clamp(-self.clip, self.clip)

    def with_vjp(self, x: Tensor, t: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """``x0 = f(x, t)`` and the map ``v -> J^T v`` with ``J = d x0 / d x`` (one backward pass)."""
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            x0 = self(xg, t)

        def vjp(v: Tensor) -> Tensor:
            self.vjp += 1
            (g,) = torch.autograd.grad(x0, xg, grad_outputs=v)
            return g

        return x0.detach(), vjp


# -- time grids and validation ------------------------------------------------------------------
def ddpm_grid(
    interp: Interpolant,
    steps: int,
    spacing: str = "uniform",
    num_train_steps: int = 1000,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``steps + 1`` decreasing times: the methods' DDPM indices ``i`` as ``t = (i+1)/T * t_max``, then 0.

    ``uniform``: ``i = (steps-1) c, ..., c, 0`` with ``c = T // steps`` (DDRM, DDNM, DDIM; every index
    for DPS). ``quad``: DiffPIR's ``i = T - 1 - floor(sqrt(u) T)`` for ``u`` uniform on ``[0, 1]``
    (dense near the data), its last index set to 0.
    """
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in [1, {num_train_steps}], got {steps}")
    if spacing == "uniform":
        skip = num_train_steps // steps
        idx = [i * skip for i in range(steps)][::-1]
    elif spacing == "quad":
        seq = [int(v) for v in torch.sqrt(torch.linspace(0, num_train_steps**2, steps, dtype=torch.float64))]
        seq[-1] = num_train_steps - 1
        idx = sorted({num_train_steps - 1 - s for s in seq}, reverse=True)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose uniform or quad")
    t = (torch.tensor(idx, dtype=torch.float64) + 1) / num_train_steps * interp.t_max
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)]).to(dtype)


def _check_grid(interp: Interpolant, ts: Tensor) -> Tensor:
    if not isinstance(ts, Tensor) or ts.ndim != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1-D tensor of at least two times")
    ts = ts.to(torch.float64)
    if not bool((ts[1:] < ts[:-1]).all()) or float(ts[-1]) != 0.0:
        raise ValueError("ts must decrease strictly and end at 0")
    interp.check_t(ts[:-1])
    return ts


def _check_fraction(name: str, v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {v}")


def _prepare(
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None,
    steps: int,
    spacing: str = "uniform",
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the inputs; return ``y`` (batch of ``x_init``), ``s_y`` of shape ``(1|B,)`` and the grid."""
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be an exactps LinearOperator, got {type(operator).__name__}")
    operator.check_image(x_init, "x_init")
    operator.check_measurement(y, "y")
    n = x_init.shape[0]
    if y.shape[0] != n:
        if y.shape[0] != 1:
            raise ValueError(f"y has batch size {y.shape[0]} but x_init has {n} (use 1 to share y)")
        y = y.expand(n, *y.shape[1:])
    sy = check_sigma_y(sigma_y, x_init)
    grid = ddpm_grid(interp, steps, spacing) if ts is None else _check_grid(interp, ts)
    return y, sy, grid


# -- linear algebra with the operator ------------------------------------------------------------
class _Spectrum:
    """``A = U diag(k) V^T`` of a :class:`SpectralOperator`, with negligible ``k`` set to zero."""

    def __init__(self, op: LinearOperator, like: Tensor, method: str):
        if not isinstance(op, SpectralOperator):
            raise TypeError(
                f"{method} works in the SVD basis and needs a SpectralOperator (closed-form SVD); "
                f"got {type(op).__name__}"
            )
        self.op = op
        nd = op.coef_ndim
        k = op.singular_values(nd).to(like.dtype)
        rcond = op.rcond if op.rcond is not None else default_rcond(like.dtype)
        kmax = k.reshape(k.shape[0], -1).amax(dim=1)
        self.measured = k > rcond * per_batch(kmax, nd)  # the pivot's criterion
        self.k = torch.where(self.measured, k, torch.zeros_like(k))
        self.inv_k = torch.where(self.measured, 1.0 / torch.where(self.measured, k, 1.0), 0.0)
        self.ndim = nd

    def vt(self, x: Tensor) -> Tensor:
        return self.op.Vt(x)

    def v(self, c: Tensor) -> Tensor:
        return self.op.V(c)

    def ut(self, y: Tensor) -> Tensor:
        return self.op.physics.U_adjoint(y)

    def override(self, x_default: Tensor, c_measured: Tensor) -> Tensor:
        """``x_default`` with its coefficients on measured directions replaced by ``c_measured``."""
        delta = torch.where(self.measured, c_measured - self.vt(x_default), 0.0)
        return x_default + self.v(delta)

    def batch(self, v: Tensor) -> Tensor:
        return per_batch(v, self.ndim)


def _regularized_solve(op: LinearOperator, r: Tensor, w: float, c: Tensor, method: str) -> Tensor:
    """``(w A^T A + c I)^{-1} A^T r`` (``= A^T (w A A^T + c I)^{-1} r``); ``c = 0`` gives ``A^+ r / w``.

    ``c`` has shape ``(1|B,)``. Closed form for a SpectralOperator, CG for a MatrixFreeOperator.
    """
    if isinstance(op, SpectralOperator):
        sp = _Spectrum(op, r, method)
        ut_r = sp.ut(r)
        denom = torch.where(sp.measured, w * sp.k**2 + per_batch(c, ut_r.ndim), 1.0)
        return sp.v(torch.where(sp.measured, sp.k / denom, 0.0) * ut_r)
    if isinstance(op, MatrixFreeOperator):
        b = op.At(r)
        w_t = torch.full((b.shape[0], *([1] * (b.ndim - 1))), w, dtype=b.dtype, device=b.device)
        return op.solve_regularized(b, w_t, per_batch(c, b.ndim))
    raise TypeError(f"{method} needs a SpectralOperator or a MatrixFreeOperator, got {type(op).__name__}")


# -- DPS ----------------------------------------------------------------------------------------
def dps_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 1000,
    zeta: float = 1.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """Diffusion Posterior Sampling (Chung et al. 2023): a DDPM step, then a likelihood-gradient step.

    ``x' = mean_DDPM(x_t, x0) + sqrt(var) z - zeta grad_{x_t} ||y - A x0(x_t)||`` (the norm, not its
    square, as in the official code: ``zeta_i = zeta / ||r||`` on the squared norm). The norm is
    taken per sample (the official code uses batch size 1). ``s_y`` is only validated: DPS's step
    does not depend on it. One network evaluation and one VJP per step.
    """
    y, _, ts = _prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    if zeta < 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")
    f = _Network(predict, clip)
    x = x_init
    for i in range(len(ts) - 1):
        (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
        x0, vjp = f.with_vjp(x, ts[i])
        r = y - operator.A(x0)
        norm = r.flatten(1).norm(dim=1).clamp_min(torch.finfo(r.dtype).tiny)
        ascent = vjp(operator.At(r / per_batch(norm, r.ndim)))  # = -grad ||r||
        fwd = max(0.0, s**2 - (a * sn / an) ** 2)  # variance of x_t given x_{t'}
        x = (fwd / s**2) * an * x0 + (sn**2 / s**2) * (a / an) * x
        if sn > 0 and fwd > 0:
            x = x + math.sqrt(sn**2 * fwd / s**2) * gaussian_like(x, generator)
        x = x + zeta * ascent
    return BaselineOutput(x.detach(), f.nfe, f.vjp)


# -- PiGDM --------------------------------------------------------------------------------------
def pigdm_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 100,
    eta: float = 1.0,
    guidance: float = 1.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """Pseudoinverse-guided diffusion (Song et al. 2023): DDIM with the PiG likelihood score.

    ``g = J^T A^T (r_t^2 A A^T + s_y^2 I)^{-1} (y - A x0)`` with ``r_t^2 = s^2 / (a^2 + s^2)`` approximates
    ``grad_{x_t} log p(y | x_t)`` (exact for ``x0 ~ N(0, I)``); it enters the x0-prediction by
    Tweedie, ``x0_y = x0 + guidance (s^2 / a) g``, and a DDIM(``eta``) step uses ``x0_y`` and its
    ``e_y``. One network evaluation and one VJP per step.
    """
    y, sy, ts = _prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    _check_fraction("eta", eta)
    f = _Network(predict, clip)
    x = x_init
    for i in range(len(ts) - 1):
        (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
        x0, vjp = f.with_vjp(x, ts[i])
        v = _regularized_solve(operator, y - operator.A(x0), s**2 / (a**2 + s**2), sy**2, "PiGDM")
        x0 = x0 + guidance * (s**2 / a) * vjp(v)
        x = ddim_step(x, x0, a, s, an, sn, eta, generator)
    return BaselineOutput(x.detach(), f.nfe, f.vjp)


# -- DDRM ---------------------------------------------------------------------------------------
def _ddrm_init(sp: _Spectrum, ybar: Tensor, sy: Tensor, z: Tensor, a: float, s: float) -> Tensor:
    """``x_T = a V c + s P_null z`` with ``c = ybar + sqrt(sigma^2 - s_y^2/k^2) V^T z`` where ``k sigma > s_y``."""
    sig = s / a
    cz = sp.vt(z)
    syb = sp.batch(sy)
    informed = sp.measured & (sp.k * sig > syb)
    c = torch.where(informed, ybar + torch.sqrt((sig**2 - syb**2 * sp.inv_k**2).clamp_min(0)) * cz, sig * cz)
    return a * sp.override(sig * z, c)


def ddrm_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 20,
    eta: float = 0.85,
    eta_b: float = 1.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """Denoising Diffusion Restoration Models (Kawar et al. 2022), per spectral coefficient.

    With ``sigma = s/a``, ``c0 = V^T x0``, ``ybar = U^T y / k``: unmeasured ``c' = c0 + sqrt(1-eta^2)
    sigma' V^T e + eta sigma' z``; ``k sigma' < s_y``: ``c' = c0 + sqrt(1-eta^2) sigma' (ybar - c0) k/s_y
    + eta sigma' z``; ``k sigma' >= s_y``: ``c' = (1-eta_b) c0 + eta_b ybar + sqrt(sigma'^2 - eta_b^2
    s_y^2/k^2) z``; ``x' = a' V c'``. ``x_T`` is drawn from DDRM's ``q(x_T | y)`` with the white noise
    ``x_init / s(t_0)``. ``>=`` (Eq. 8 of the paper; the code has ``>``) makes the noiseless output
    match ``y`` exactly. Needs a SpectralOperator; no VJP.
    """
    y, sy, ts = _prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    _check_fraction("eta", eta)
    _check_fraction("eta_b", eta_b)
    sp = _Spectrum(operator, x_init, "DDRM")
    f = _Network(predict, clip)
    ut_y = sp.ut(y)
    ybar = sp.inv_k * ut_y
    syb = sp.batch(sy)
    a0, s0 = alpha_sigma(interp, ts[0])
    with torch.no_grad():
        x = _ddrm_init(sp, ybar, sy, x_init / s0, a0, s0)
        for i in range(len(ts) - 1):
            (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
            x0 = f(x, ts[i])
            eps, sig = (x - a * x0) / s, sn / an
            z = gaussian_like(x, generator)
            x_def = x0 + math.sqrt(1 - eta**2) * sig * eps + eta * sig * z  # unmeasured directions
            c0, cz = sp.vt(x0), sp.vt(z)
            before = sp.measured & (sp.k * sig >= syb)
            c_before = (1 - eta_b) * c0 + eta_b * ybar
            c_before = c_before + torch.sqrt((sig**2 - eta_b**2 * syb**2 * sp.inv_k**2).clamp_min(0)) * cz
            after = sp.measured & ~before  # implies k sigma' < s_y, so s_y > 0
            gain = math.sqrt(1 - eta**2) * sig / torch.where(after, syb, 1.0)
            c_after = c0 + gain * (ut_y - sp.k * c0) + eta * sig * cz
            x = an * sp.override(x_def, torch.where(before, c_before, c_after))
    return BaselineOutput(x, f.nfe, f.vjp)


# -- DiffPIR ------------------------------------------------------------------------------------
def diffpir_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 100,
    lam: float = 1.0,
    zeta: float = 0.1,
    data_range: float = 2.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """DiffPIR (Zhu et al. 2023): a proximal data step on the x0-prediction, then a noisy DDIM step.

    ``x0_y = argmin_z ||y - A z||^2 + rho ||z - x0||^2`` with ``rho = lam s_n^2 / (s/a)^2`` (``s_y = 0``:
    ``x0 + A^+ (y - A x0)``), ``e_y = (x_t - a x0_y) / s``, ``x' = a' x0_y + s' (sqrt(1-zeta) e_y +
    sqrt(zeta) z)``. As in the official code, ``s_n = s_y / data_range`` is the noise std on images
    rescaled to ``[0, 1]`` while ``s/a`` is on the model's scale (default ``data_range = 2``: data in
    ``[-1, 1]``). The last step returns ``x0_y`` (the paper's Alg. 1; the official code returns the
    state one step earlier). No VJP.
    """
    y, sy, ts = _prepare(interp, operator, y, sigma_y, x_init, ts, steps, spacing="quad")
    _check_fraction("zeta", zeta)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    f = _Network(predict, clip)
    x = x_init
    with torch.no_grad():
        for i in range(len(ts) - 1):
            (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
            x0 = f(x, ts[i])
            rho = lam * (sy / data_range) ** 2 / (s / a) ** 2
            x0 = x0 + _regularized_solve(operator, y - operator.A(x0), 1.0, rho, "DiffPIR")
            eps = (x - a * x0) / s
            x = an * x0 + sn * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * gaussian_like(x, generator))
    return BaselineOutput(x, f.nfe, f.vjp)


# -- DDNM / DDNM+ -------------------------------------------------------------------------------
def ddnm_sample(
    predict: X0Predictor,
    interp: Interpolant,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float | Tensor,
    x_init: Tensor,
    ts: Tensor | None = None,
    *,
    steps: int = 100,
    eta: float = 0.85,
    plus: bool = True,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> BaselineOutput:
    """DDNM / DDNM+ (Wang et al. 2023): range-null-space correction of ``x0``, then a DDIM(``eta``) step.

    DDNM: ``x0_y = x0 + A^+ (y - A x0)``, ``x' = a' x0_y + s' (eta z + sqrt(1-eta^2) e)`` (network ``e``).
    DDNM+ (Eq. 17-19, the official ``Lambda`` and ``Lambda_noise``), per coefficient: ``x0_y = x0 -
    V diag(lam) V^T A^+ (A x0 - y)`` with ``lam = k s' sqrt(1-eta^2) / (a' s_y)`` where ``k s' < a' s_y``
    (else 1); fresh noise ``s' eta z`` there and ``sqrt(s'^2 - a'^2 s_y^2 / k^2) z`` where ``k s' > a' s_y``,
    so ``x'`` keeps noise std ``s'``. ``plus=True`` (default) is the official runner: DDNM+ for noisy
    ``y``, which is exactly DDNM when ``s_y = 0``; ``plus=False`` forces the plain projection for any
    ``s_y`` (an ablation). Needs a SpectralOperator; no VJP.
    """
    y, sy, ts = _prepare(interp, operator, y, sigma_y, x_init, ts, steps)
    _check_fraction("eta", eta)
    sp = _Spectrum(operator, x_init, "DDNM")
    syb = sp.batch(sy if plus else torch.zeros_like(sy))
    f = _Network(predict, clip)
    x = x_init
    with torch.no_grad():
        for i in range(len(ts) - 1):
            (a, s), (an, sn) = alpha_sigma(interp, ts[i]), alpha_sigma(interp, ts[i + 1])
            x0 = f(x, ts[i])
            eps = (x - a * x0) / s
            # Eq. 17 (Lambda): lam = k s' sqrt(1-eta^2) / (a' s_y) where k s' < a' s_y, else 1
            small = sp.measured & (sp.k * sn < an * syb)
            lam = torch.where(small, sp.k * sn * math.sqrt(1 - eta**2) / (an * torch.where(small, syb, 1.0)), 1.0)
            x0 = x0 - sp.v(lam * sp.inv_k * sp.ut(operator.A(x0) - y))
            # Eq. 19 (Lambda_noise): fresh noise completes the std s' left by the noise of A^+ y
            z = gaussian_like(x, generator)
            default = sn * (eta * z + math.sqrt(1 - eta**2) * eps)
            big = sp.measured & (sp.k * sn > an * syb) & (syb > 0)
            d1 = torch.where(big, torch.sqrt((sn**2 - an**2 * syb**2 * sp.inv_k**2).clamp_min(0)), sn * eta)
            noisy = sp.measured & (syb > 0) & (small | big)
            noise = torch.where(noisy, d1 * sp.vt(z), sp.vt(default))
            x = an * x0 + sp.override(default, noise)
    return BaselineOutput(x, f.nfe, f.vjp)


#: name -> sampler, all called as ``fn(predict, interp, operator, y, sigma_y, x_init, ts=None,
#: generator=None, **method_kwargs)``.
BASELINES: dict[str, Callable[..., BaselineOutput]] = {
    "dps": dps_sample,
    "pigdm": pigdm_sample,
    "ddrm": ddrm_sample,
    "diffpir": diffpir_sample,
    "ddnm": ddnm_sample,
}
