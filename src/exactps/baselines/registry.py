"""THE baseline registry: name -> sampler (see :mod:`exactps.baselines` for the methods and sources)."""

from __future__ import annotations

from collections.abc import Callable

from exactps.baselines.common import BaselineOutput
from exactps.baselines.daps import daps_sample
from exactps.baselines.ddnm import ddnm_sample
from exactps.baselines.ddrm import ddrm_sample
from exactps.baselines.diffpir import diffpir_sample
from exactps.baselines.dps import dps_sample
from exactps.baselines.mpgd import mpgd_sample
from exactps.baselines.pigdm import pigdm_sample

__all__ = ["BASELINES"]

#: name -> sampler, all called as ``fn(predict, interp, operator, y, sigma_y, x_init, ts=None,
#: generator=None, **method_kwargs)``.
BASELINES: dict[str, Callable[..., BaselineOutput]] = {
    "dps": dps_sample,
    "pigdm": pigdm_sample,
    "ddrm": ddrm_sample,
    "diffpir": diffpir_sample,
    "ddnm": ddnm_sample,
    "daps": daps_sample,
    "mpgd": mpgd_sample,
}
