"""``OptimizeResult``: the result type every ``*.minimize`` of ``manifold_spectral.solvers``
returns, in the spirit of ``scipy.optimize.OptimizeResult``.

Shared fields (all solvers):

* ``x``: the solution, in the array type of the problem's input (numpy in, numpy out; torch
  in, torch out on the input's device and dtype);
* ``fun``: the objective at ``x`` (a Python float);
* ``nit``: iterations (update steps) taken; ``nfev``: objective evaluations the *updates*
  used (``None`` where updates use gradients only; evaluations made for ``history`` are not
  counted);
* ``success`` and ``message``: whether the stopping rule was met, and why the run stopped;
* ``method``: the method name passed to ``minimize``;
* ``history``: numpy arrays of equal length, one entry per recorded iteration. Always
  ``"nit"`` (iteration index, 0 = the starting point), ``"fun"`` and ``"time"`` (cumulative
  seconds spent in update steps, monitoring excluded); ``"gap"`` (``fun - f*``) when the
  optimal value is known; a solver may add its own keys (and must document them);
* ``time``: total wall-clock seconds of the call, monitoring included.

Solver-specific results subclass it and add fields with defaults (``spd.SPDResult`` adds the
spectral factors ``B``, ``d`` and the optimal value ``f_star``; ``NESResult``, here, the
fields of the evolution strategies).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["OptimizeResult", "NESResult", "result_message"]


@dataclasses.dataclass(eq=False)
class OptimizeResult:
    """Result of a ``minimize`` call (scipy style; see the module docstring for the fields)."""

    x: Any
    fun: float
    nit: int
    success: bool
    message: str
    method: str
    history: dict[str, np.ndarray]
    time: float
    nfev: int | None = None

    def __getitem__(self, key: str) -> Any:
        """``result["x"]``, as with scipy's dict-like result."""
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}(method={self.method!r})"]
        for key in ("success", "message", "fun", "nit", "nfev", "time"):
            value = getattr(self, key)
            if key == "time":
                value = f"{value:.3g} s"
            lines.append(f"  {key}: {value}")
        shape = getattr(self.x, "shape", None)
        lines.append(f"  x: {type(self.x).__name__} of shape {tuple(shape) if shape else '?'}")
        lines.append(f"  history: {', '.join(self.history)} ({len(self.history['nit'])} records)")
        return "\n".join(lines)


@dataclasses.dataclass(eq=False, repr=False)
class NESResult(OptimizeResult):
    """``OptimizeResult`` of the NES solvers (scipy style: attributes and ``result["x"]``).

    Shared fields (``manifold_spectral.solvers.result``): ``x`` the best point seen (numpy,
    or torch when ``x0`` was a tensor), ``fun`` its value, ``nit`` generations, ``nfev``
    function evaluations (``popsize`` per generation, every call of ``f``), ``success`` (with
    ``target``: a value at or below it was found; without: the run that found ``x`` converged,
    ``es_stop.succeeded``), ``message`` (the stop reasons), ``method``, ``time``
    (wall seconds since the optimizer was created) and ``history``: one record per
    generation (records start after the first generation: NES never evaluates the starting
    point) with the keys ``"nit"``, ``"nfev"``, ``"fun"`` (best value so far, for
    best-f-versus-evaluations plots; NaN before the first finite value) and ``"time"``
    (cumulative seconds spent in ``ask``/``tell``, function evaluations excluded).

    NES fields: ``stop`` (the termination criteria that fired, pycma style), ``xmean`` (final
    mean), ``stds`` (final ``sqrt(diag(Sigma))``), ``evals_best`` (evaluation index of ``x``),
    ``popsize`` and ``seed``; with restarts ``runs``, one dict per run (``popsize``,
    ``regime``, ``sigma_scale``, ``seed``, ``adapt``, ``nfev``, ``stop``), else ``None``.
    """

    stop: dict[str, Any] = dataclasses.field(default_factory=dict)
    xmean: Any = None
    stds: Any = None
    evals_best: int = 0
    popsize: int = 0
    seed: int = 0
    runs: list[dict[str, Any]] | None = None


#: The start of ``NESResult.message`` when no evaluated value was finite.
NO_FINITE_VALUE = "no finite value of f was found (x is the final mean, never evaluated)"


def history(nfev: Any, fun: Any, time: Any) -> dict[str, np.ndarray]:
    """``NESResult.history`` of a run's per-generation records: ``nit`` counts them from 1,
    ``nfev`` (int64) is the evaluations so far, ``fun`` and ``time`` are float64."""
    nfev = np.asarray(nfev, dtype=np.int64)
    return {
        "nit": np.arange(1, nfev.shape[0] + 1, dtype=np.int64),
        "nfev": nfev,
        "fun": np.asarray(fun, dtype=np.float64),
        "time": np.asarray(time, dtype=np.float64),
    }


def result_message(stop: dict[str, Any], found: bool) -> str:
    """``message`` of a ``NESResult``: the stop reasons (``"running"`` while none), led by
    ``NO_FINITE_VALUE`` when ``found`` is false: then there is no evaluated point whose value
    could be ``fun``, so ``fun`` is NaN and ``x`` the mean."""
    reasons = ", ".join(stop) if stop else "running"
    return reasons if found else f"{NO_FINITE_VALUE}; {reasons}"
