"""What every baseline shares: the output record, the counted network, DDPM time grids, input
checks, and linear algebra with the operator (its spectrum, regularised solves)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from exactps.batch import check_sigma_y, per_batch
from exactps.interpolants import Interpolant, X0Predictor
from exactps.operators.base import LinearOperator, MatrixFreeOperator, SpectralOperator, default_rcond

__all__ = [
    "BaselineOutput",
    "CountedNetwork",
    "Spectrum",
    "check_fraction",
    "check_grid",
    "ddpm_grid",
    "prepare",
    "regularized_solve",
]


@dataclass
class BaselineOutput:
    """Samples ``x``, network evaluations ``nfe`` and vector-Jacobian products ``vjp``."""

    x: Tensor
    nfe: int
    vjp: int


class CountedNetwork:
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


def check_grid(interp: Interpolant, ts: Tensor) -> Tensor:
    if not isinstance(ts, Tensor) or ts.ndim != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1-D tensor of at least two times")
    ts = ts.to(torch.float64)
    if not bool((ts[1:] < ts[:-1]).all()) or float(ts[-1]) != 0.0:
        raise ValueError("ts must decrease strictly and end at 0")
    interp.check_t(ts[:-1])
    return ts


def check_fraction(name: str, v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {v}")


def prepare(
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
    grid = ddpm_grid(interp, steps, spacing) if ts is None else check_grid(interp, ts)
    return y, sy, grid


# -- linear algebra with the operator ------------------------------------------------------------
class Spectrum:
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


def regularized_solve(op: LinearOperator, r: Tensor, w: float, c: Tensor, method: str) -> Tensor:
    """``(w A^T A + c I)^{-1} A^T r`` (``= A^T (w A A^T + c I)^{-1} r``); ``c = 0`` gives ``A^+ r / w``.

    ``c`` has shape ``(1|B,)``. Closed form for a SpectralOperator, CG for a MatrixFreeOperator.
    """
    if isinstance(op, SpectralOperator):
        sp = Spectrum(op, r, method)
        ut_r = sp.ut(r)
        denom = torch.where(sp.measured, w * sp.k**2 + per_batch(c, ut_r.ndim), 1.0)
        return sp.v(torch.where(sp.measured, sp.k / denom, 0.0) * ut_r)
    if isinstance(op, MatrixFreeOperator):
        b = op.At(r)
        w_t = torch.full((b.shape[0], *([1] * (b.ndim - 1))), w, dtype=b.dtype, device=b.device)
        return op.solve_regularized(b, w_t, per_batch(c, b.ndim))
    raise TypeError(f"{method} needs a SpectralOperator or a MatrixFreeOperator, got {type(op).__name__}")
