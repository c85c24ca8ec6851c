"""Baselines the paper compares against that no package provides.

* ``CholeskyCurvature``: the inverse-free Cholesky-factor curvature scheme of
  Lin et al. (2024), ``S = (K K^T)^-1``, ``K <- K (I - beta2 Phi(K^T H K - gamma I))``
  (paper Sec. 4.1, Fig. 2 and 7).
"""

from .cholesky import CholeskyCurvature, phi

__all__ = ["CholeskyCurvature", "phi"]
