"""Gaussian interpolants ``x_t = a(t) x0 + s(t) e`` (METHOD.md, "Problem").

Every diffusion or flow backbone is a choice of ``(a, s)``. An interpolant gives ``a``, ``s``,
their time derivatives, the noise ratio ``r(t) = s(t) / a(t)`` (EDM's ``sigma`` of the rescaled
state ``x_t / a``) and its inverse, and the conversions between x0-, eps-, score- and
velocity-predictions of a network.

``t`` is a float or a tensor (a scalar or one value per batch element). The posterior and the
samplers need ``a(t) > 0`` and ``s(t) > 0``: :meth:`Interpolant.check_t` enforces
``t_min < t <= t_max``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from exactps.batch import per_batch

#: ``(x_t, t) -> x0_hat``: an estimate of ``E[x0 | x_t]`` (or ``E[x0 | x_t, y]``), what every sampler
#: of :mod:`exactps.samplers` and :mod:`exactps.baselines` consumes.
X0Predictor = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "BETA_SCHEDULES",
    "VE",
    "Interpolant",
    "LinearFlow",
    "Trigonometric",
    "VPCosine",
    "VPDiscrete",
    "VPLinear",
    "X0Predictor",
    "as_time",
    "broadcast_time",
    "eps_from_x0",
    "get_interpolant",
    "score_from_x0",
    "velocity_from_x0",
    "vpred_from_x0",
    "x0_from_eps",
    "x0_from_score",
    "x0_from_velocity",
    "x0_from_vpred",
]


def as_time(t: float | Tensor, like: Tensor | None = None) -> Tensor:
    """``t`` as a tensor on ``like``'s device and dtype (float64 when ``like`` is None)."""
    if like is None:
        return torch.as_tensor(t, dtype=torch.float64)
    return torch.as_tensor(t, dtype=like.dtype, device=like.device)


def broadcast_time(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a scalar or per-batch tensor ``v`` (shape ``()`` or ``(B,)``) to broadcast with ``x``."""
    if v.ndim == 0:
        return v
    if v.ndim != 1 or v.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"t must be a scalar or have shape (batch,) = ({x.shape[0]},), got {tuple(v.shape)}")
    return per_batch(v, x.ndim)


@dataclass(frozen=True)
class Interpolant(ABC):
    """A Gaussian interpolant ``x_t = a(t) x0 + s(t) e`` on ``t in (t_min, t_max]``.

    ``t_min`` is the data end (``s(t_min) = 0``); ``t_max`` is where samplers start.
    """

    @property
    @abstractmethod
    def t_min(self) -> float: ...

    @property
    @abstractmethod
    def t_max(self) -> float: ...

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale ``a(t)``."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale ``s(t)``."""

    @abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor:
        """``da/dt``."""

    @abstractmethod
    def d_sigma(self, t: Tensor) -> Tensor:
        """``ds/dt``."""

    @abstractmethod
    def t_from_ratio(self, r: Tensor) -> Tensor:
        """Inverse of :meth:`ratio`: the ``t`` with ``s(t)/a(t) = r``."""

    def ratio(self, t: Tensor) -> Tensor:
        """Noise ratio ``r(t) = s(t) / a(t)`` (the std of ``x_t / a`` around ``x0``)."""
        return self.sigma(t) / self.alpha(t)

    def check_t(self, t: float | Tensor, like: Tensor | None = None) -> Tensor:
        """Validate ``t`` (finite, ``t_min < t <= t_max``) and return it as a tensor."""
        tt = as_time(t, like)
        if not torch.isfinite(tt).all():
            raise ValueError(f"t must be finite, got {t}")
        lo, hi = tt.min().item(), tt.max().item()
        # allow the round-off of t_max in the caller's dtype (float32 rounds 0.999 up)
        tol = max(1e-9, 8 * torch.finfo(tt.dtype).eps) * max(1.0, abs(self.t_max))
        if lo <= self.t_min or hi > self.t_max + tol:
            raise ValueError(
                f"t must lie in ({self.t_min}, {self.t_max}] for {type(self).__name__}, "
                f"got values in [{lo}, {hi}]"
            )
        return tt

    def ratio_max(self) -> float:
        return float(self.ratio(as_time(self.t_max)))


@dataclass(frozen=True)
class VPLinear(Interpolant):
    """Variance preserving, DDPM's linear beta schedule in continuous time (Song et al. 2021).

    ``log a^2 = -(beta_min t + (beta_max - beta_min) t^2 / 2)``, ``a^2 + s^2 = 1``, ``t in (0, 1]``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_end: float = 1.0

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return self.t_end

    def _log_abar(self, t: Tensor) -> Tensor:
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._log_abar(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._log_abar(t)))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * (self.beta_min + (self.beta_max - self.beta_min) * t) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        c = torch.log1p(r**2)  # = -log abar
        qa = 0.5 * (self.beta_max - self.beta_min)
        if qa == 0:
            return c / self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 4 * qa * c)) / (2 * qa)


@dataclass(frozen=True)
class VPCosine(Interpolant):
    """Variance preserving, cosine schedule (Nichol & Dhariwal 2021).

    ``a = cos(theta) / cos(theta_0)`` with ``theta = pi/2 (t + s0)/(1 + s0)``; ``t_max < 1`` keeps ``a > 0``.
    """

    s0: float = 0.008
    t_end: float = 0.9946  # ratio s/a about 80 at the start, like EDM's sigma_max

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return self.t_end

    def _theta(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.s0) / (1 + self.s0)

    def _c0(self) -> float:
        return math.cos(0.5 * math.pi * self.s0 / (1 + self.s0))

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(self._theta(t)) / self._c0()

    def sigma(self, t: Tensor) -> Tensor:
        a = self.alpha(t)
        return torch.sqrt(torch.clamp((1 - a) * (1 + a), min=0.0))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.sin(self._theta(t)) * (0.5 * math.pi / (1 + self.s0)) / self._c0()

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        theta = torch.arccos(self._c0() / torch.sqrt(1 + r**2))
        return theta * 2 * (1 + self.s0) / math.pi - self.s0


@dataclass(frozen=True)
class VE(Interpolant):
    """Variance exploding / EDM: ``a = 1``, ``s = t``, ``t in (0, sigma_max]``."""

    sigma_max: float = 80.0

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return self.sigma_max

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        return r


@dataclass(frozen=True)
class LinearFlow(Interpolant):
    """Linear flow / rectified flow: ``a = 1 - t``, ``s = t``; ``t_max < 1`` keeps ``a > 0``."""

    t_end: float = 0.999

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return self.t_end

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        return r / (1 + r)


@dataclass(frozen=True)
class Trigonometric(Interpolant):
    """Trigonometric interpolant: ``a = cos(pi t / 2)``, ``s = sin(pi t / 2)``."""

    t_end: float = 0.999

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return self.t_end

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        return torch.arctan(r) * 2 / math.pi


def _cosine_betas(n: int, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's ``beta_i = min(1 - f((i+1)/n) / f(i/n), max_beta)``,
    ``f(u) = cos((u + 0.008)/1.008 pi/2)^2``."""
    u = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


#: THE table of DDPM beta schedules, by diffusers' names: ``(beta_start, beta_end, n) -> betas`` (float64).
BETA_SCHEDULES: dict[str, Callable[[float, float, int], Tensor]] = {
    "linear": lambda b0, b1, n: torch.linspace(b0, b1, n, dtype=torch.float64),
    "scaled_linear": lambda b0, b1, n: torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2,
    "squaredcos_cap_v2": lambda b0, b1, n: _cosine_betas(n),
}


@dataclass(frozen=True)
class VPDiscrete(Interpolant):
    """A discrete-time DDPM schedule ``abar_k = prod_{i<=k} (1 - beta_i)``, ``k = 0..n-1``, as an interpolant
    whose time is the network's timestep input (guided-diffusion's and diffusers' convention).

    ``x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) e``, so the noise ratio is ``r_k^2 = (1 - abar_k)/abar_k``.
    Between the grid points ``log abar`` is interpolated linearly in ``t`` (as DPM-Solver's discrete
    schedule does), with ``abar = 1`` at ``t = -1`` (the data end, ``t_min``), so that ``t_from_ratio`` is
    the exact inverse of :meth:`ratio`: ``t(r_k) = k`` on the grid, a fractional timestep in between
    (``log abar = -log(1 + r^2)``). ``beta_schedule`` is a name of :data:`BETA_SCHEDULES`.
    """

    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta schedule {self.beta_schedule!r}; choose one of {sorted(BETA_SCHEDULES)}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"a DDPM schedule needs at least 2 timesteps, got {self.num_train_timesteps}")

    @cached_property
    def betas(self) -> Tensor:
        """``beta_k``, float64."""
        return BETA_SCHEDULES[self.beta_schedule](self.beta_start, self.beta_end, self.num_train_timesteps)

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        """``abar_k = prod_{i<=k} (1 - beta_i)``, float64."""
        return torch.cumprod(1 - self.betas, dim=0)

    @cached_property
    def _grid(self) -> Tensor:
        """``log abar`` at ``t = -1, 0, ..., n-1`` (decreasing, 0 first)."""
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.log(self.alphas_cumprod)])

    @property
    def t_min(self) -> float:
        return -1.0

    @property
    def t_max(self) -> float:
        return float(self.num_train_timesteps - 1)

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(log abar(t), d log abar/dt)`` of the piecewise-linear interpolation (float64)."""
        u = t.double().clamp(self.t_min, self.t_max) + 1
        k = u.floor().clamp(max=self.num_train_timesteps - 1).long()
        grid = self._grid.to(t.device)
        slope = grid[k + 1] - grid[k]
        return grid[k] + (u - k) * slope, slope

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._segment(t)[0]).to(t.dtype)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._segment(t)[0])).to(t.dtype)

    def d_alpha(self, t: Tensor) -> Tensor:
        log_abar, slope = self._segment(t)
        return (0.5 * slope * torch.exp(0.5 * log_abar)).to(t.dtype)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        """The fractional timestep with ``(1 - abar)/abar = r^2``; ratios beyond the last step give ``t_max``."""
        c = -torch.log1p(r.double() ** 2)  # log abar, decreasing in t
        grid = self._grid.to(r.device)
        desc = -grid  # increasing
        k = (torch.searchsorted(desc, -c, right=True) - 1).clamp(0, self.num_train_timesteps - 1)
        frac = ((c - grid[k]) / (grid[k + 1] - grid[k])).clamp(0, 1)
        return (k - 1 + frac).to(r.dtype)


_INTERPOLANTS: dict[str, type[Interpolant]] = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "ve": VE,
    "flow": LinearFlow,
    "trig": Trigonometric,
}


def get_interpolant(name: str) -> Interpolant:
    """Interpolant by name: ``vp-linear``, ``vp-cosine``, ``ve``, ``flow``, ``trig``."""
    try:
        return _INTERPOLANTS[name]()
    except KeyError:
        raise ValueError(f"unknown interpolant {name!r}; choose one of {sorted(_INTERPOLANTS)}") from None


def _coeffs(interp: Interpolant, t: float | Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    tt = broadcast_time(as_time(t, x), x)
    return interp.alpha(tt), interp.sigma(tt)


def eps_from_x0(interp: Interpolant, x_t: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
    """``e = (x_t - a x0) / s``."""
    a, s = _coeffs(interp, t, x_t)
    return (x_t - a * x0) / s


def x0_from_eps(interp: Interpolant, x_t: Tensor, eps: Tensor, t: float | Tensor) -> Tensor:
    """``x0 = (x_t - s e) / a``."""
    a, s = _coeffs(interp, t, x_t)
    return (x_t - s * eps) / a


def score_from_x0(interp: Interpolant, x_t: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
    """Tweedie: ``grad log p(x_t) = (a E[x0|x_t] - x_t) / s^2``."""
    a, s = _coeffs(interp, t, x_t)
    return (a * x0 - x_t) / s**2


def x0_from_score(interp: Interpolant, x_t: Tensor, score: Tensor, t: float | Tensor) -> Tensor:
    """``x0 = (x_t + s^2 score) / a``."""
    a, s = _coeffs(interp, t, x_t)
    return (x_t + s**2 * score) / a


def velocity_from_x0(interp: Interpolant, x_t: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
    """Flow velocity ``dx_t/dt = a' x0 + s' e`` (the probability-flow ODE drift)."""
    tt = broadcast_time(as_time(t, x_t), x_t)
    eps = eps_from_x0(interp, x_t, x0, t)
    return interp.d_alpha(tt) * x0 + interp.d_sigma(tt) * eps


def x0_from_velocity(interp: Interpolant, x_t: Tensor, v: Tensor, t: float | Tensor) -> Tensor:
    """Invert :func:`velocity_from_x0`: ``x0 = (s v - s' x_t) / (a' s - a s')``."""
    tt = broadcast_time(as_time(t, x_t), x_t)
    a, s = interp.alpha(tt), interp.sigma(tt)
    da, ds = interp.d_alpha(tt), interp.d_sigma(tt)
    return (s * v - ds * x_t) / (da * s - a * ds)


def vpred_from_x0(interp: Interpolant, x_t: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
    """Salimans & Ho's v-prediction ``v = a e - s x0``."""
    a, s = _coeffs(interp, t, x_t)
    return a * eps_from_x0(interp, x_t, x0, t) - s * x0


def x0_from_vpred(interp: Interpolant, x_t: Tensor, v: Tensor, t: float | Tensor) -> Tensor:
    """Invert :func:`vpred_from_x0`: ``x0 = (a x_t - s v) / (a^2 + s^2)``."""
    a, s = _coeffs(interp, t, x_t)
    return (a * x_t - s * v) / (a**2 + s**2)
