"""Deprecated module: the stopping tests live in ``manifold_spectral.solvers.es_stop``.

They are part of the generic evolution-strategy layer (``es``, ``es_*``) that spectral NES,
xNES and Cholesky NES share. The old names still work, with a ``DeprecationWarning``.
"""

from .._compat import moved_names

__getattr__ = moved_names(
    __name__,
    dict.fromkeys(("convergence_stops", "precision_bounds"), "manifold_spectral.solvers.es_stop"),
)
