"""Baselines the paper compares against that no package provides.

* ``CholeskyCurvature``: the inverse-free Cholesky-factor curvature scheme of
  Lin et al. (2024), ``S = (K K^T)^-1``, ``K <- K (I - beta2 Phi(K^T H K - gamma I))``
  (paper Sec. 4.1, Fig. 2 and 7).
* ``KroneckerCholeskyCurvature``: its Kronecker form (INGD / SINGD without momentum),
  ``S = (K K^T)^-1 kron (C C^T)^-1`` (Fig. 2 right, Fig. 8).
* ``nearest_kronecker`` and ``KroneckerProjection``: the nearest Kronecker product
  (Van Loan & Pitsianis, 1993) and the impractical projection baseline built on it.
* ``CholeskyRGD``: Cholesky-factor RGD for a general ``f(S)``, ``S = L L^T``,
  ``L <- L h(-2 lr Phi(L^T E L))`` (Lin et al., 2023; paper Sec. 4.2, Fig. 3 left).
* ``RetractionRGD``: geoopt's ``RiemannianSGD`` on ``SymmetricPositiveDefinite`` with the
  step size mapped to the Fisher-Rao convention (retraction-based RGD, Sec. 4.2).

The NES baselines ``XNES`` and ``CholeskyNES`` are evolution strategies on
``solvers.es.NESBase`` and live in ``manifold_spectral.solvers.xnes`` and
``manifold_spectral.solvers.cholesky_nes`` (their old names here still work, deprecated), so
that this package sits below ``solvers`` and imports nothing above it.
"""

from .._compat import moved_names
from .cholesky import CholeskyCurvature, phi
from .cholesky_rgd import CholeskyPoint, CholeskyRGD
from .kronecker import (
    KroneckerCholeskyCurvature,
    KroneckerCholeskyFactors,
    KroneckerProjection,
    nearest_kronecker,
)
from .retraction_rgd import RetractionRGD

__all__ = [
    "CholeskyCurvature",
    "phi",
    "KroneckerCholeskyCurvature",
    "KroneckerCholeskyFactors",
    "KroneckerProjection",
    "nearest_kronecker",
    "CholeskyRGD",
    "CholeskyPoint",
    "RetractionRGD",
]

__getattr__ = moved_names(
    __name__,
    {
        "XNES": "manifold_spectral.solvers.xnes",
        "CholeskyNES": "manifold_spectral.solvers.cholesky_nes",
    },
)
