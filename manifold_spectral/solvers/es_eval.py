"""The evaluation loop of the evolution strategies: ``run_optimizer`` (ask / evaluate / tell until
``stop()``) and the declared contract of ``f`` (``vectorized``), serial or through an
executor. Used by ``NESBase.optimize`` and ``RestartNES.optimize``."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from ..validation import callback_stops, unmasked
from ..validation import check_flag as _check_flag

if TYPE_CHECKING:
    from .es import NESResult

__all__ = ["run_optimizer"]


def run_optimizer(
    es: Any,
    f: Callable[[Any], Any],
    *,
    callback: Callable[[Any], Any] | None = None,
    vectorized: bool | None = False,
    executor: Any = None,
    map: Callable[..., Any] | None = None,
) -> NESResult:
    """The ask/evaluate/tell loop of ``NESBase.optimize`` for any optimizer ``es`` with its
    interface (``ask``, ``tell``, ``stop``, ``popsize``, ``result``; also ``RestartNES``).

    Parallel fitness evaluation: ``executor`` (any object with a
    ``concurrent.futures.Executor``-like ``.map(fn, iterable)``: ``ThreadPoolExecutor``,
    ``ProcessPoolExecutor``, Dask's ``client.get_executor()``, ``mpi4py.futures``, ...) or
    ``map`` (any callable with the builtin ``map`` signature, e.g.
    ``multiprocessing.Pool(...).map``), not both. Then the ``popsize`` candidates of a
    generation are evaluated concurrently, one call ``f(x)`` per candidate row (a vectorised
    ``f`` is never called on the batch: ``vectorized`` must be ``False``). Each
    call gets its own copy of its row, of the type the serial per-row path passes (a numpy
    (n,) array, or a torch tensor when ``x0`` was one), and the worker reduces the value to
    a float. Results are taken in the order of the candidates, so for a fixed seed the run
    is bitwise the serial one (same ``x``, ``fun``, ``nfev``, ``history`` except its
    ``"time"``); NaN/Inf values are ranked worst as in serial mode. An exception raised by
    ``f`` in a worker reaches the caller with its original type (as the executor re-raises
    it). With a process pool, ``f`` must be picklable (a module-level function or an
    instance of a module-level class). The executor is used, never shut down: its owner
    manages its lifetime. One generation is one ``map`` call, so the speed-up is at most
    ``popsize``-fold and pays only when ``f`` costs much more than a task dispatch.
    """
    _check_callables(f, callback)
    vectorized = _check_vectorized(vectorized)
    mapper = _check_mapper(executor, map, vectorized)
    bounded = getattr(es, "runs_have_budgets", False)  # RestartNES: every run has one
    if (
        es.max_evals is None
        and es.target is None
        and es.tolx == 0
        and es.tolfun == 0
        and not bounded
    ):
        raise ValueError("optimize: no termination criterion (set max_evals or target)")
    first = True
    while not es.stop():
        X = es.ask()
        if mapper is None:
            # f gets a copy (as an executor's worker does): an f that writes into its
            # argument (``x -= shift``) must not change the points that ``tell`` ranks and
            # keeps as the best one, or result.fun would not be f(result.x).
            values = _evaluate(f, _copy(X), es.popsize, vectorized, first)
            first = False
        else:
            values = _evaluate_parallel(mapper, f, X, es.popsize)
        es.tell(X, values)
        if callback is not None:
            try:
                if callback_stops(callback(es)):  # the one rule of every solver's callback
                    es._stop_extra["callback"] = True
            except StopIteration:
                es._stop_extra["callback"] = True
    return es.result


def _copy(X: Any) -> Any:
    return X.clone() if isinstance(X, Tensor) else X.copy()


def _scalar(v: Any) -> float:
    if isinstance(v, Tensor):
        v = v.detach().cpu().numpy()
    a = np.asarray(unmasked(v))
    if a.size != 1 or a.dtype.kind not in "biuf":
        raise TypeError(f"f: expected a real scalar for one point, got {v!r}")
    return float(a.reshape(()))


def _evaluate(f: Callable[[Any], Any], X: Any, k: int, vectorized: bool, first: bool) -> Any:
    """Values of ``f`` on the rows of ``X`` under the declared contract, as a (k,) array.

    Per point (``vectorized=False``): one call per row, each must return a real scalar.
    Vectorised: one call on the batch, which must return shape (k,); on the ``first``
    generation the batch is split into its first row and the rest (no extra evaluation), and
    the two calls must return shapes (1,) and (k - 1,): a per-point ``f`` that happens to
    return k values on a (k, n) batch (e.g. ``x[0]`` when n == k) fails one of the two.
    """
    if not vectorized:
        return np.array([_point_value(f(X[i])) for i in range(k)])
    if first:
        head = _batch_values(f(X[:1]), 1)
        return np.concatenate([head, _batch_values(f(X[1:]), k - 1)])
    return _batch_values(f(X), k)


def _point_value(v: Any) -> float:
    """``f(x)`` for one point: a real scalar (a per-point ``f`` that returns a batch of values
    is declared wrongly)."""
    if isinstance(v, Tensor):
        v = v.detach().cpu().numpy()
    try:
        a = np.asarray(unmasked(v))
    except (TypeError, ValueError):
        a = np.asarray(None)
    if a.dtype.kind in "biuf" and a.size != 1:
        raise TypeError(
            f"f: expected a real scalar for one point (vectorized=False), got shape {a.shape};"
            " if f maps a (k, n) batch to k values, pass vectorized=True"
        )
    return _scalar(v)


def _batch_values(out: Any, k: int) -> np.ndarray:
    """The (k,) values of a vectorised ``f`` on a (k, n) batch; any other shape is an error."""
    arr = out.detach().cpu().numpy() if isinstance(out, Tensor) else np.asarray(unmasked(out))
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"f: expected real values, got dtype {arr.dtype}")
    if arr.shape != (k,):
        raise ValueError(
            f"vectorized=True: f returned shape {arr.shape} for a ({k}, n) batch, expected "
            f"({k},); if f takes one point (n,) and returns a scalar, pass vectorized=False"
        )
    return arr.astype(np.float64)


def _check_callables(f: Any, callback: Any) -> None:
    """``TypeError`` naming ``f`` or ``callback`` unless each is callable (``callback``: or
    ``None``). ``nes.minimize`` checks them before it builds anything: with ``f`` and ``x0``
    swapped, a callable ``x0`` (a start per restart) was called for the first start and
    failed on its missing argument before ``f`` was looked at."""
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {callback!r}")


def _check_vectorized(vectorized: Any) -> bool:
    """``vectorized`` as a bool; ``None`` (the former "guess" default) warns and means False."""
    if vectorized is None:
        warnings.warn(
            "vectorized=None is deprecated: f is no longer probed on a batch (a guess that "
            "could pick the wrong function); None now means False (one call per point). "
            "Pass vectorized=True if f maps a (k, n) batch to k values.",
            FutureWarning,
            stacklevel=3,
        )
        return False
    return _check_flag(vectorized, "vectorized")


def _check_mapper(
    executor: Any, map_fn: Any, vectorized: bool | None
) -> Callable[[Callable[[Any], float], list[Any]], Any] | None:
    """The ``map(fn, rows)`` to evaluate a generation with, from ``executor`` or ``map``."""
    if executor is None and map_fn is None:
        return None
    if executor is not None and map_fn is not None:
        raise ValueError("executor, map: give at most one of them (both were given)")
    if executor is not None:
        name, mapper = "executor", getattr(executor, "map", None)
        if not callable(mapper):
            raise TypeError(
                "executor: expected an object with a .map(fn, iterable) method "
                f"(e.g. concurrent.futures.ProcessPoolExecutor), got {type(executor).__name__}"
            )
    else:
        name, mapper = "map", map_fn
        if not callable(mapper):
            raise TypeError(
                "map: expected a callable with the builtin map signature map(fn, iterable) "
                f"(e.g. multiprocessing.Pool(...).map), got {type(map_fn).__name__}"
            )
    if vectorized:
        raise ValueError(
            f"vectorized=True cannot be combined with {name}: parallel evaluation calls f once "
            "per candidate (use vectorized=False)"
        )
    return mapper


@dataclasses.dataclass(frozen=True)
class _ScalarCall:
    """``x -> float(f(x))`` as a picklable callable (runs in the worker)."""

    f: Callable[[Any], Any]

    def __call__(self, x: Any) -> float:
        return _point_value(self.f(x))


def _evaluate_parallel(
    mapper: Callable[[Callable[[Any], float], list[Any]], Any],
    f: Callable[[Any], Any],
    X: Any,
    k: int,
) -> np.ndarray:
    """Values of ``f`` on the rows of ``X``, one ``mapper`` task per row, in row order."""
    rows = [_copy(X[i]) for i in range(k)]
    values = list(mapper(_ScalarCall(f), rows))
    if len(values) != k:
        raise ValueError(f"executor/map: expected {k} results (one a candidate), got {len(values)}")
    return np.array([_scalar(v) for v in values])
