"""Optional and noisy third-party imports, behind one boundary.

* ``import_geoopt``: geoopt 0.5 decorates functions with ``torch.jit.script``, which recent
  torch reports with a ``DeprecationWarning`` at import time. The warning is silenced here,
  only around our own import of geoopt (a user's ``warnings`` settings stay untouched).
* ``require``: import an optional dependency of the command line and the experiments
  (matplotlib, tqdm) or raise an ``ImportError`` that names the extra to install.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

__all__ = ["import_geoopt", "require", "PLOTS_HINT"]

#: What to install when matplotlib or tqdm is missing.
PLOTS_HINT = "pip install 'manifold_spectral[plots]'"


def import_geoopt() -> ModuleType:
    """``import geoopt`` with its ``torch.jit.script`` deprecation warning filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script.* is deprecated", category=DeprecationWarning
        )
        import geoopt
    return geoopt


def require(module: str, what: str = "this command") -> ModuleType:
    """``importlib.import_module(module)``, or ``ImportError`` saying ``PLOTS_HINT``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise ImportError(f"{what} needs {top}, which is not installed: {PLOTS_HINT}") from e
