"""Restart strategies for the NES solvers: IPOP and BIPOP (Auger & Hansen 2005; Hansen 2009).

A run of NES (any ``NESBase`` subclass) that stops on its own (``tolx``, ``tolfun``,
``tolflatfitness``, ``tolstagnation``, ``condition``, or a numerical stop of ``es_stop``) has
converged or stagnated, usually at a local minimum of a multi-modal function. A restart
starts a fresh run, from ``x0`` again (or a new start when ``x0`` is a callable), with

* IPOP: the population times ``incpopsize`` (2) at every restart, ``sigma0`` unchanged: a
  larger population smooths the landscape seen by the rank-based estimate, which is what
  solves the weakly structured multi-modal functions (Rastrigin-like);
* BIPOP: two regimes that share the budget. The *large* regime is IPOP (run ``i`` of it has
  ``lam_L = lam_0 incpopsize^i``); the *small* regime draws ``U ~ U[0, 1]`` and runs with
  ``lam_S = floor(lam_0 (lam_L / (2 lam_0))^(U^2))`` and ``sigma0 10^(-2 U)``, with at most
  half the evaluations of the last large run (rounded up to whole generations, as pycma's).
  After each run the regime that has spent fewer
  evaluations runs next (the first run counts as large). As in pycma (``cma.fmin2(...,
  bipop=True)``), ``restarts`` counts the large regime's restarts only: the small runs come
  in between, bounded by the budget, so BIPOP's large regime goes as far as IPOP's does.

With ``adapt=True`` (default) a restart also learns from why the previous run ended
(``restart_rules``): after ``tolflatfitness`` (a plateau) the next run uses CSA
(``step_size="csa"``) without mirrored sampling; once a run has ended on ``tolx`` (a
collapse onto a kink or a sharp ridge) every later run's DX-NES scale rate while the path
stagnates is divided by 4; and after a plateau stop (while the scale is still wide) the
next run also starts with the stopped run's learned shape, its eigenbasis and eigenvalue
spread flattened to a condition of at most ``CARRIED_CONDITION``, at its own ``x0`` and scale;
``runs[i]["adapt"]`` records what was changed. With BIPOP the rules read the runs of the
new run's own regime only (a small run's budget or local-collapse stop says nothing about how
a large run ends, and the reverse).

``max_evals`` bounds the evaluations of all runs together; ``target`` stops everything.
``RestartNES`` has the ask/tell interface of ``NES`` (``ask``, ``tell``, ``stop``,
``result``, ``optimize``); ``popsize`` is the current run's and changes between runs, so ask
before every tell. The first run is bitwise the plain ``NES`` run with the same seed.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..validation import check_flag
from .es import NESBase, NESResult
from .es_checks import (
    check_incpopsize,
    check_max_evals,
    check_sigma0,
    check_sigma0_range,
    check_x0,
    min_popsize,
)
from .es_defaults import default_max_evals
from .es_eval import _check_vectorized, run_optimizer
from .es_stop import succeeded
from .nes import NES
from .restart_rules import adapt_run, carry_shape, next_run_options
from .result import history, result_message

__all__ = ["RestartNES"]


def small_sigma_scale(u: float) -> float:
    """The factor of ``sigma0`` of a BIPOP small run drawn with ``U = u`` in ``[0, 1]``:
    ``10^(-2 U)`` (Hansen 2009)."""
    return 10.0 ** (-2.0 * u)


#: The smallest of them (``U = 1``), which ``sigma0`` must leave inside the dtype's range.
SMALLEST_SIGMA_SCALE = small_sigma_scale(1.0)

#: Stop reasons of a run that end everything (the rest start the next run).
_FINAL = ("ftarget", "callback")


def _run_of(runs: list[dict[str, Any]], evals: int) -> dict[str, Any]:
    """The run whose evaluations include the ``evals``-th (counted over all runs, from 1)."""
    for run in runs:
        if evals <= run["nfev"]:
            return run
        evals -= run["nfev"]
    return runs[-1]


def _run_seed(seed: int, run: int) -> int:
    """Seed of run ``run`` (run 0 keeps ``seed``, so it is the plain NES run)."""
    if run == 0:
        return seed
    return int(np.random.SeedSequence([seed, run]).generate_state(1)[0])


class RestartNES:
    """NES with IPOP (default) or BIPOP restarts, in pycma's ask/tell style.

    Every run has a budget (``max_evals``' remainder, or ``nes.minimize``'s default for its
    population), so the whole terminates without ``tolx`` or ``tolfun``
    (``runs_have_budgets``).

    Args:
        x0: start point (n,), or a callable returning one (called once per run).
        sigma0: initial standard deviation of every run (scaled by ``10^(-2U)`` in BIPOP's
            small regime).
        popsize: population of the first run (``None``: the NES default).
        seed: seed of the first run; later runs and BIPOP's draws are derived from it.
        restarts: at most this many large-regime runs after the first (``0``: one plain
            run); with IPOP, every run is one; BIPOP's small runs do not count (pycma's rule).
        bipop: BIPOP instead of IPOP.
        incpopsize: population factor of the large regime (> 1).
        adapt: learn from why each run ended (``restart_rules``: CSA without mirrored
            sampling and the learned shape after a plateau stop, a slower scale rate after
            ``tolx``); ``False``:
            every run takes ``options``.
        max_evals: evaluations of all runs together (``None``: each run has the default
            budget of ``nes.minimize``).
        target: stop every run at the first value at or below it.
        es_class: the NES driver of each run (``NES``; or a baseline such as ``XNES``).
        options: passed to every run (rates, switches, ``tolx``, ``tolfun``, dtype, ...).
    """

    runs_have_budgets = True

    def __init__(
        self,
        x0: Any,
        sigma0: Any,
        popsize: int | None = None,
        seed: int | None = None,
        *,
        restarts: int = 9,
        bipop: bool = False,
        incpopsize: float = 2.0,
        adapt: bool = True,
        max_evals: int | None = None,
        target: float | None = None,
        es_class: type[NESBase] = NES,
        **options: Any,
    ) -> None:
        if isinstance(restarts, bool) or not isinstance(restarts, numbers.Integral) or restarts < 0:
            raise ValueError(f"restarts: expected an int >= 0, got {restarts!r}")
        if not isinstance(bipop, bool):
            raise TypeError(f"bipop: expected a bool, got {bipop!r}")
        check_incpopsize(incpopsize)
        self.adapt = check_flag(adapt, "adapt")
        max_evals_checked = check_max_evals(max_evals)
        if not isinstance(sigma0, (numbers.Real, Tensor)):  # a list: BIPOP scales it
            sigma0 = np.asarray(sigma0, dtype=np.float64)
        self._x0, self.sigma0, self.es_class = x0, sigma0, es_class
        self.restarts, self.bipop, self.incpopsize = int(restarts), bipop, float(incpopsize)
        self.max_evals = max_evals_checked
        self.options = dict(options, target=target)
        self.target = target
        self.tolx = options.get("tolx", 1e-11)
        self.tolfun = options.get("tolfun", 1e-11)
        self._start = time.perf_counter()
        self._stop_extra: dict[str, Any] = {}
        # per run: popsize, regime, sigma_scale, seed; nfev and stop once it has ended
        self.runs: list[dict[str, Any]] = []
        self._evals_done = 0  # of the finished runs
        self.countiter = 0
        self._hist: list[tuple[int, float, float]] = []  # (nfev, best so far, busy time)
        self._best: tuple[float, Any, int] = (math.inf, None, 0)
        self._busy_done = 0.0  # ask/tell seconds of the finished runs
        self._spent = {"large": 0, "small": 0}
        self._large_runs = 0
        self._last_large = 0
        self._last_run: dict[str, tuple[NESBase, float]] = {}  # per regime: (run, fall)
        self._scale0: list[float] = []  # the initial scale (``dist.scale()``) of every run
        self.es = self._new_run(self._start_point(), popsize, seed, "large", 1.0, None)
        if bipop:  # the small runs' smallest sigma0 must fit the state too, checked up front
            sigma = check_sigma0(sigma0, self.es.n) * SMALLEST_SIGMA_SCALE
            check_sigma0_range(sigma, options.get("dtype", torch.float64), "sigma0 / 100")
        self.seed = self.es.seed
        self.lam0 = self.es.popsize
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2**31]))

    # Runs ------------------------------------------------------------------------------

    def _start_point(self) -> Any:
        """The next run's start: ``x0``, or a fresh one from the callable, which must keep
        the first run's dimension and array type (``ValueError`` / ``TypeError`` naming
        ``x0`` otherwise, before anything of the finished run is changed); a start in
        another floating dtype is converted to the first one's, in which ``result.x``
        comes back (a best point of one run returned in another's dtype would round it:
        ``result.fun`` would no longer be ``f(result.x)``)."""
        if not callable(self._x0):
            return self._x0
        x0 = self._x0()
        t, is_torch = check_x0(x0)
        if self.runs:
            n, torch_io, io_dtype = self._first
            if t.shape[0] != n:
                raise ValueError(
                    f"x0: the callable returned a start of dimension {t.shape[0]} for run "
                    f"{len(self.runs) + 1}; the first run's has dimension {n}"
                )
            if is_torch != torch_io:
                kinds = ("numpy", "torch")
                raise TypeError(
                    f"x0: the callable returned a {kinds[is_torch]} start for run "
                    f"{len(self.runs) + 1}; the first run's was {kinds[torch_io]}"
                )
            if t.dtype != io_dtype:
                x0 = t.to(io_dtype) if is_torch else t.to(io_dtype).numpy()
        return x0

    def _new_run(
        self,
        x0: Any,
        popsize: int | None,
        seed: int | None,
        regime: str,
        scale: float,
        cap: int | None,
    ) -> NESBase:
        budget = None if self.max_evals is None else self.max_evals - self._evals_done
        if cap is not None:
            budget = cap if budget is None else min(budget, cap)
        sigma = self.sigma0 * scale if scale != 1.0 else self.sigma0
        # The restart rules read the runs of the new run's own regime (none for the first):
        # a BIPOP small run starts at sigma0 / 100 at worst and stops on its budget or on
        # collapses of a local search, which say nothing about how a large run ends.
        same = [r for r in self.runs if r["regime"] == regime] if self.adapt else []
        last = same[-1]["stop"] if same else {}
        tolx_seen = any("tolx" in r["stop"] for r in same)
        extra = next_run_options(last, self.options)
        options = {**self.options, **extra}
        es = self.es_class(x0, sigma, popsize, seed, max_evals=budget, **options)
        if es.max_evals is None:  # nes.minimize's default budget for this population
            es.max_evals = default_max_evals(es.popsize, es.n)
        previous, fallen = self._last_run.get(regime, (None, 1.0)) if self.adapt else (None, 1.0)
        adapted = [f"{k}={v}" for k, v in extra.items()]
        adapted += [adapt_run(es, tolx_seen) or "", carry_shape(es, previous, fallen) or ""]
        self._scale0.append(es.dist.scale())
        self.runs.append(
            {"popsize": es.popsize, "regime": regime, "sigma_scale": scale, "seed": es.seed,
             "adapt": ", ".join(a for a in adapted if a)}
        )  # fmt: skip
        if len(self.runs) == 1:  # what every later start must match (_start_point)
            self._first = (es.n, es._torch_io, es._io_dtype)
            # Populations stay even when the first run mirrors: a later run may mirror
            # although the run before it did not (the plateau rule turns it off per run).
            self._first_mirrored = es.mirrored
        return es

    def _next_run(self, x0: Any) -> None:
        """Close the current run and start the next one from ``x0`` (IPOP or BIPOP's
        choice)."""
        es, k = self.es, len(self.runs)
        self.runs[-1].update(nfev=es.countevals, stop=dict(es.stop()))
        self._spent[self.runs[-1]["regime"]] += es.countevals
        self._last_run[self.runs[-1]["regime"]] = (es, es.dist.scale() / self._scale0[-1])
        if self.runs[-1]["regime"] == "large":
            self._last_large = es.countevals
        seed = _run_seed(self.seed, k)
        large_pop = int(round(self.lam0 * self.incpopsize ** (self._large_runs + 1)))
        if self.bipop and self._spent["small"] < self._spent["large"]:
            u = float(self._rng.uniform())
            lam = int(math.floor(self.lam0 * (0.5 * large_pop / self.lam0) ** (u * u)))
            lam = max(lam, min_popsize(self._first_mirrored))
            lam += lam % 2 if self._first_mirrored else 0
            cap = max(self._last_large // 2, lam)
            self.es = self._new_run(x0, lam, seed, "small", small_sigma_scale(u), cap)
        else:
            self._large_runs += 1
            lam = large_pop + (large_pop % 2 if self._first_mirrored else 0)
            self.es = self._new_run(x0, lam, seed, "large", 1.0, None)

    @property
    def _exhausted(self) -> bool:
        """No restart left: ``restarts`` large-regime runs after the first have been made
        (pycma's count; with IPOP every run is large)."""
        return self._large_runs >= self.restarts

    # ask / tell ------------------------------------------------------------------------

    @property
    def popsize(self) -> int:
        """Population of the current run."""
        return self.es.popsize

    @property
    def n(self) -> int:
        return self.es.n

    def ask(self) -> Any:
        """A new population of the current run, shape (popsize, n)."""
        return self.es.ask()

    def tell(self, X: Any, fvals: Any) -> None:
        """Tell the current run; start the next run when it stopped on its own."""
        es = self.es
        es.tell(X, fvals)
        self.countiter += 1
        if es.fbest < self._best[0]:
            self._best = (es.fbest, es.xbest.clone(), self._evals_done + es.evals_best)
        busy = self._busy_done + es._busy
        best = self._best[0] if self._best[1] is not None else math.nan  # as NES's history
        self._hist.append((self._evals_done + es.countevals, best, busy))
        stop = es.stop()
        if not stop:
            return
        out_of_budget = self.max_evals is not None and (
            self._evals_done + es.countevals >= self.max_evals
        )
        if any(key in stop for key in _FINAL) or self._exhausted or out_of_budget:
            self.runs[-1].update(nfev=es.countevals, stop=dict(stop))  # the last run ended
            return
        x0 = self._start_point()  # may raise: then the finished run stays the last one
        saved = (self._evals_done, self._busy_done, dict(self._spent), self._last_large,
                 self._large_runs, dict(self.runs[-1]), dict(self._last_run))  # fmt: skip
        self._evals_done += es.countevals
        self._busy_done += es._busy
        try:
            self._next_run(x0)
        except BaseException:  # nothing of a run that could not start is kept or counted
            (self._evals_done, self._busy_done, self._spent, self._last_large,
             self._large_runs, last, self._last_run) = saved  # fmt: skip
            self.runs[-1] = last
            self.es = es
            raise

    def stop(self) -> dict[str, Any]:
        """Empty while a run is going or another may start; else the final reasons."""
        out: dict[str, Any] = dict(self._stop_extra)
        inner = self.es.stop()
        if self.max_evals is not None and self.countevals >= self.max_evals:
            out["maxfevals"] = self.max_evals
        if "ftarget" in inner:
            out["ftarget"] = inner["ftarget"]
        if inner and not out and self._exhausted:
            out.update(inner)
        return out

    @property
    def countevals(self) -> int:
        """Evaluations of all runs so far, the finished ones and the current one (pycma's
        ``countevals``, and ``NES.countevals``): a callback or loop that reads it sees the
        budget spent, not 0 until the first restart."""
        return self._evals_done + self.es.countevals

    @property
    def result(self) -> NESResult:
        """Best point over all runs; ``nfev`` and ``history`` of all runs together; the last
        run's ``xmean``/``stds``/``popsize``; ``runs`` (one dict per run) in ``runs``."""
        last = self.es.result
        stop = self.stop()
        fbest, xbest, evals_best = self._best
        h = np.asarray(self._hist, dtype=np.float64).reshape(-1, 3)
        nfev = self.countevals
        runs = [*self.runs[:-1], {**self.runs[-1], "nfev": last.nfev, "stop": last.stop}]
        runs_text = f"{len(self.runs)} run" + "s" * (len(self.runs) != 1)
        return NESResult(
            x=last.x if xbest is None else self.es._output(xbest),
            fun=fbest if xbest is not None else math.nan,
            nfev=nfev,
            nit=self.countiter,
            # Without a target: whether the run that found ``x`` converged (``es_stop``).
            success="ftarget" in stop
            if self.target is not None
            else (
                bool(stop)
                and xbest is not None
                and succeeded(_run_of(runs, evals_best)["stop"], None)
            ),
            stop=stop,
            message=result_message(stop, xbest is not None or not nfev),
            method=f"{self.es.name} ({'BIPOP' if self.bipop else 'IPOP'}, {runs_text})",
            history=history(h[:, 0], h[:, 1], h[:, 2]),
            time=time.perf_counter() - self._start,
            xmean=last.xmean,
            stds=last.stds,
            evals_best=evals_best,
            popsize=self.es.popsize,
            seed=self.seed,
            runs=runs,
        )

    def optimize(
        self,
        f: Callable[[Any], Any],
        *,
        callback: Callable[[RestartNES], Any] | None = None,
        vectorized: bool | None = False,
        executor: Any = None,
        map: Callable[..., Any] | None = None,
    ) -> NESResult:
        """Run ask/evaluate/tell over all runs; the contract of ``NESBase.optimize``."""
        vectorized = _check_vectorized(vectorized)
        return run_optimizer(
            self, f, callback=callback, vectorized=vectorized, executor=executor, map=map
        )

    def __repr__(self) -> str:
        return (
            f"RestartNES(run={len(self.runs)}, popsize={self.popsize}, "
            f"evals={self.countevals}, fbest={self._best[0]:.3e})"
        )
