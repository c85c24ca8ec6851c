"""Optional and noisy third-party imports, behind one boundary.

* ``import_geoopt``: geoopt 0.5 decorates functions with ``torch.jit.script``, which recent
  torch reports with a ``DeprecationWarning`` at import time. The warning is silenced here,
  only around our own import of geoopt (a user's ``warnings`` settings stay untouched).
* ``require``: import an optional dependency of the command line and the experiments
  (matplotlib, tqdm) or raise an ``ImportError`` that names the extra to install;
  ``progress_bar`` (tqdm, or a silent stand-in when disabled, so ``--no-progress`` needs no
  tqdm) and ``agg_figure`` (matplotlib's ``Figure`` and Agg canvas) are built on it.
* ``moved_names``: a module ``__getattr__`` that keeps a name which moved to another module
  working at its old place, with a ``DeprecationWarning`` naming the new one.

The core library (``pip install manifold_spectral``, no extras) never imports matplotlib or
tqdm; only writing plots and drawing progress bars need the ``plots`` extra.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

__all__ = [
    "import_geoopt",
    "require",
    "progress_bar",
    "agg_figure",
    "moved_names",
    "PLOTS_HINT",
    "BASELINES_HINT",
]

#: What to install when matplotlib or tqdm is missing.
PLOTS_HINT = "pip install 'manifold_spectral[plots]'"
#: What to install when a baseline of the reproductions (pycma, COCO, ...) is missing.
BASELINES_HINT = "pip install 'manifold_spectral[baselines]'"


def import_geoopt() -> ModuleType:
    """``import geoopt`` with its ``torch.jit.script`` deprecation warning filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script.* is deprecated", category=DeprecationWarning
        )
        import geoopt
    return geoopt


def require(module: str, what: str = "this command", hint: str = PLOTS_HINT) -> ModuleType:
    """``importlib.import_module(module)``, or ``ImportError`` saying ``hint``
    (``PLOTS_HINT`` by default)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise ImportError(f"{what} needs {top}, which is not installed: {hint}") from e


class _SilentBar:
    """What the experiments use of a tqdm bar, doing nothing (``progress=False``)."""

    def __init__(self, iterable: Iterable[Any] | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None

    def close(self) -> None:
        return None


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool = False, **kwargs: Any):
    """``tqdm.auto.tqdm(iterable, **kwargs)``, or a silent stand-in when ``disable`` (then
    tqdm need not be installed)."""
    if disable:
        return _SilentBar(iterable)
    return require("tqdm.auto", "a progress bar (or pass --no-progress)").tqdm(iterable, **kwargs)


def agg_figure(what: str = "writing plots") -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)`` from matplotlib (no pyplot, no global backend change)."""
    figure = require("matplotlib.figure", what)
    agg = require("matplotlib.backends.backend_agg", what)
    return figure.Figure, agg.FigureCanvasAgg


def moved_names(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names that moved: ``names[old] = "new.module"``.

    Reading ``module.old`` imports ``new.module`` on first use and returns its attribute of
    the same name, with a ``DeprecationWarning`` that names the new place; any other name is
    the usual ``AttributeError``. The import is by name, at access time, so a compatibility
    alias adds no import edge to the old module."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} has moved to {names[name]}.{name}; the old name is deprecated",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__
