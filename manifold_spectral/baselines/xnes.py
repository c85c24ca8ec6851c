"""Deprecated module: ``XNES`` and ``XNESSearch`` live in ``manifold_spectral.solvers.xnes``.

They are evolution strategies built on ``solvers.es.NESBase``; kept here they made
``baselines`` and ``solvers`` import each other. The old names still work, with a
``DeprecationWarning``.
"""

from .._compat import moved_names

__getattr__ = moved_names(
    __name__, dict.fromkeys(("XNES", "XNESSearch"), "manifold_spectral.solvers.xnes")
)
