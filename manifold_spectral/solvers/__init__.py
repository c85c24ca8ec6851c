"""Solvers built on the spectral manifolds and ``RGD``.

* ``spd``: optimisation over SPD matrices (metric nearness, log-det, user objectives) with
  the spectral method beside the retraction (geoopt) and Cholesky RGD baselines
  (paper Sec. 4.2, Fig. 3 left).
* ``nes``: gradient-free minimisation with natural evolution strategies whose search
  precision is learned on ``SpectralSPD`` (paper Sec. 4.3, Fig. 9); ``restarts``: IPOP and
  BIPOP restarts of it (``nes.minimize(..., restarts=k)``); ``functions``: test functions
  (App. C); ``xnes`` and ``cholesky_nes``: the xNES / DX-NES and Cholesky-NES baselines,
  the same driver on other parametrisations of the covariance (paper Sec. 4.3, Fig. 9).
* ``es`` and ``es_*``: the generic evolution strategy the three specialise (the ask/tell
  driver ``NESBase``, the search-distribution contract, rank utilities, step-size control,
  defaults, argument checks, stopping, the evaluation loop); ``nes_search`` and ``nes_step``:
  the spectral search distribution and its closed-form step.
* ``result.OptimizeResult``: the scipy-style result type every ``minimize`` returns.
* ``check.check_gradient`` (also ``spd.check_gradient``): Taylor-slope check of a user
  objective's gradient along random chart directions (pymanopt's ``check_gradient``).
"""

from . import functions, nes, restarts, spd
from .check import GradientCheck, check_gradient
from .result import OptimizeResult

__all__ = [
    "spd",
    "nes",
    "restarts",
    "functions",
    "OptimizeResult",
    "check_gradient",
    "GradientCheck",
]
