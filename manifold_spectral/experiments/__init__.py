"""Paper reproductions behind ``manifold-spectral reproduce`` (see ``manifold_spectral.cli``).

* ``curvature``: SPD curvature learning from a gradient stream (Sec. 4.1, Fig. 2 and 7):
  fixed-point and iterate matching of the spectral, default and Cholesky schemes.
* ``curvature_kronecker``: the Kronecker version (Fig. 2 right, Fig. 8): our exact and
  practical Kronecker schemes beside the Kronecker Cholesky scheme and the projection
  (nearest Kronecker product) baseline.

Experiments import the core; the core never imports them. Each module exposes a ``run_*``
function returning a result dataclass, ``format_table(result) -> str`` and
``plot(result, path)``.
"""

from .curvature import CurvatureResult, format_table, plot, run_full_matrix
from .curvature_kronecker import run_kronecker

__all__ = ["CurvatureResult", "run_full_matrix", "run_kronecker", "format_table", "plot"]
