"""Deprecated module: the evaluation loop lives in ``manifold_spectral.solvers.es_eval``.

It is part of the generic evolution-strategy layer (``es``, ``es_*``) that spectral NES,
xNES and Cholesky NES share. The old name still works, with a ``DeprecationWarning``.
"""

from .._compat import moved_names

__getattr__ = moved_names(__name__, {"run_optimizer": "manifold_spectral.solvers.es_eval"})
