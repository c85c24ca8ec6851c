"""Solvers built on the spectral manifolds and ``RGD``.

* ``spd``: optimisation over SPD matrices (metric nearness, log-det, user objectives) with
  the spectral method beside the retraction (geoopt) and Cholesky RGD baselines
  (paper Sec. 4.2, Fig. 3 left).
* ``result.OptimizeResult``: the scipy-style result type every ``minimize`` returns.
"""

from . import spd
from .result import OptimizeResult

__all__ = ["spd", "OptimizeResult"]
