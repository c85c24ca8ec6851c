"""``success`` of the NES front door without a ``target``: the run converged.

Before, ``success`` meant "a value at or below ``target`` was found" only, so every run
without a target reported failure, a converged one included (an outside tester's report).
Now (``es_stop.succeeded``): with a target, as before; without, a stop on ``tolx``,
``tolfun`` or ``noeffectcoord`` of the run that found ``x``; a plateau, the budget, a
callback or a numerical stop is not a success.
"""

from __future__ import annotations

import numpy as np

from manifold_spectral.solvers import nes
from manifold_spectral.solvers.restarts import _run_of


def _sphere(x) -> float:
    return float(np.sum((np.asarray(x, dtype=np.float64) - 1.0) ** 2))


def _steps(x) -> float:
    return float(np.sum(np.round(np.asarray(x, dtype=np.float64)) ** 2))


def test_a_converged_run_without_target_succeeds():
    res = nes.minimize(_sphere, np.zeros(4), 1.0, seed=0)
    assert set(res.stop) & {"tolx", "tolfun"} and res.success, res.stop
    assert res.fun < 1e-10 and res.fun == _sphere(res.x)


def test_the_budget_a_callback_and_a_missed_target_are_not_success():
    budget = nes.minimize(_sphere, np.zeros(4), 1.0, seed=0, max_evals=40)
    assert "maxfevals" in budget.stop and not budget.success
    called = nes.minimize(_sphere, np.zeros(4), 1.0, seed=0, callback=lambda es: True)
    assert called.stop == {"callback": True} and not called.success
    # Converged, but on a target below the minimum: the target decides.
    missed = nes.minimize(_sphere, np.zeros(4), 1.0, seed=0, target=-1.0)
    assert set(missed.stop) & {"tolx", "tolfun"} and not missed.success


def test_a_plateau_is_not_success():
    res = nes.minimize(_steps, np.full(5, 3.0), 1.0, seed=9, popsize=8, max_evals=10**5)
    assert res.stop == {"tolflatfitness": 2} and not res.success


def test_restarts_without_target_report_the_run_that_found_x():
    res = nes.minimize(_sphere, np.zeros(4), 1.0, seed=0, restarts=1)
    assert len(res.runs) == 2 and res.success, res.runs
    best_run = _run_of(res.runs, res.evals_best)
    assert set(best_run["stop"]) & {"tolx", "tolfun"}
    cut = nes.minimize(_sphere, np.zeros(4), 1.0, seed=0, restarts=1, max_evals=60)
    assert not cut.success and "maxfevals" in cut.stop


def test_run_of_counts_evaluations_over_runs():
    runs = [{"nfev": 10, "stop": {"tolx": 1}}, {"nfev": 5, "stop": {"maxfevals": 15}}]
    assert _run_of(runs, 1) is runs[0] and _run_of(runs, 10) is runs[0]
    assert _run_of(runs, 11) is runs[1] and _run_of(runs, 15) is runs[1]
