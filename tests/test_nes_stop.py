"""NES runs continued past convergence end with a clean result (issue 14, item 1).

Before ``solvers/es_stop.py`` (then ``nes_stop.py``) a run on the sphere with
``tolx = tolfun = 0`` and a large budget shrank the distribution until the precision
``d ~ sigma^-2`` overflowed in the natural gradient, and ``tell`` raised
``FloatingPointError`` (a NaN rotation step).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import nes
from manifold_spectral.solvers.cholesky_nes import CholeskyNES
from manifold_spectral.solvers.nes import NES
from manifold_spectral.solvers.restarts import RestartNES
from manifold_spectral.solvers.xnes import XNES


def _sphere(shift: float):
    return lambda x: float(np.sum((np.asarray(x, dtype=np.float64) - shift) ** 2))


def _assert_clean(res: nes.NESResult, f, max_evals: int) -> None:
    assert "numerical" not in res.stop
    # Without a target, success is convergence (test_nes_success.py): scalerange is not one.
    assert res.success == ("noeffectcoord" in res.stop)
    assert res.nfev < max_evals  # a convergence test fired, not the budget
    assert np.all(np.isfinite(res.xmean)) and np.all(np.isfinite(res.stds))
    assert np.all(res.stds > 0)
    assert res.fun == f(res.x)
    assert res.message == ", ".join(res.stop)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sphere_at_zero_past_convergence_stops_on_scalerange(dtype):
    # The mean converges to 0 with sigma, so only the absolute range test can fire.
    f, budget = _sphere(0.0), 10**6
    res = nes.minimize(f, np.ones(5), 1.0, seed=3, tolx=0, tolfun=0, max_evals=budget, dtype=dtype)
    _assert_clean(res, f, budget)
    assert "scalerange" in res.stop
    lo, hi = res.stop["scalerange"]
    info = torch.finfo(dtype)
    # The stop fires on the first generation out of [tiny^0.4, max^0.4], far from overflow.
    assert hi > info.max**0.4 and hi < info.max**0.45 and lo > 0
    assert res.fun < 1e-100 if dtype == torch.float64 else res.fun < 1e-12


def test_sphere_off_zero_past_convergence_stops_on_noeffectcoord():
    f, budget = _sphere(1.0), 10**6
    res = nes.minimize(f, np.zeros(5), 1.0, seed=4, tolx=0, tolfun=0, max_evals=budget)
    _assert_clean(res, f, budget)
    assert "noeffectcoord" in res.stop
    mean = np.asarray(res.xmean)
    assert np.array_equal(mean + 0.2 * np.asarray(res.stds), mean)
    assert res.fun < 1e-28


def test_flat_function_stops_after_the_tolfun_window():
    n, lam = 5, 8
    res = nes.minimize(
        lambda x: 1.0, np.zeros(n), 1.0, seed=5, popsize=lam, tolfun=0, tolflatfitness=0,
        max_evals=10**5,
    )  # fmt: skip
    window = 10 + math.ceil(30 * n / lam)  # the tolfun window of the docs
    assert res.stop == {"flatfitness": window} and res.nfev == window * lam


def _steps(x) -> float:
    # A sphere of unit steps: every point with |x_i| < 1/2 is on the optimal plateau 0.
    return float(np.sum(np.round(np.asarray(x, dtype=np.float64)) ** 2))


def test_a_plateau_stops_on_tolflatfitness_as_pycma():
    # Once most samples land on one plateau their tied utilities carry no direction;
    # without the test the run waited for the whole tolfun window of all-equal values.
    n, lam = 5, 8
    window = 10 + math.ceil(30 * n / lam)
    res = nes.minimize(_steps, np.full(n, 3.0), 1.0, seed=9, popsize=lam, max_evals=10**5)
    assert res.stop == {"tolflatfitness": 2}
    assert res.fun == 0.0 == _steps(res.x)
    off = nes.minimize(
        _steps, np.full(n, 3.0), 1.0, seed=9, popsize=lam, max_evals=10**5, tolflatfitness=0
    )
    assert "flatfitness" in off.stop and "tolflatfitness" not in off.stop
    assert off.nfev > res.nfev + window // 2 * lam  # ~20 generations saved


def test_tolflatfitness_counts_consecutive_generations_with_the_best_at_the_75th_percentile():
    es = NES(np.zeros(2), 1.0, popsize=8, seed=10, tolflatfitness=3)
    flat = [0.0] * 7 + [np.nan]  # best == sorted value [int(0.75 * 8)] = [6]
    steep = [0.0] * 5 + [1.0, 2.0, np.inf]
    for values, count in ((flat, 1), (flat, 2), (steep, 0), (flat, 1), (flat, 2), (flat, 3)):
        es.tell(es.ask(), values)
        assert es._flat_gens == count
        assert ("tolflatfitness" in es.stop()) == (count == 3)


@pytest.mark.parametrize("cls", [CholeskyNES, XNES])
def test_baselines_diverging_on_a_linear_function_stop_on_scalerange(cls):
    # Sigma grows without bound; the baselines read only sqrt(diag Sigma) for free.
    es = cls(np.zeros(4), 1.0, seed=6, tolx=0, tolfun=0, max_condition=0, max_evals=10**6)
    res = es.optimize(lambda x: float(np.asarray(x)[0]))
    assert set(res.stop) == {"scalerange"}
    assert res.stop["scalerange"] ** 2 > torch.finfo(torch.float64).tiny ** -0.4
    assert np.all(np.isfinite(res.xmean)) and np.all(np.isfinite(res.stds))


def test_a_failed_update_stops_with_the_state_unchanged(monkeypatch):
    es = NES(np.zeros(3), 1.0, seed=7)
    X = es.ask()
    es.tell(X, np.sum(X**2, 1))
    mean, B, d = es.mean.clone(), es.dist.point.B.clone(), es.dist.point.d.clone()

    def fail(*args, **kwargs):
        raise FloatingPointError("overflow on purpose")

    monkeypatch.setattr(es.dist, "update", fail)
    X = es.ask()
    es.tell(X, np.sum(X**2, 1))  # no exception
    assert es.stop() == {"numerical": "overflow on purpose"}
    assert torch.equal(es.mean, mean) and torch.equal(es.dist.point.d, d)
    assert torch.equal(es.dist.point.B, B) and es.countevals == 2 * es.popsize


def test_restarts_after_a_scalerange_stop():
    # A numerical stop is a convergence: the restart strategy starts the next run.
    f = _sphere(0.0)
    es = RestartNES(np.ones(3), 1.0, seed=8, tolx=0, tolfun=0, restarts=1, max_evals=10**5)
    res = es.optimize(f)
    assert len(es.runs) == 2 and "scalerange" in es.runs[0]["stop"]
    assert "scalerange" in res.stop and res.nfev < 10**5 and res.fun == f(res.x)


def _stagnating_run(tolstagnation=None, drift: float = 0.0, gens: int = 520) -> list[int]:
    """Generations (1-based) at which ``tolstagnation`` is among the stop reasons, for a
    run whose best value is in generation 1 and every later generation gets the same values
    (``drift > 0``: each generation's values ``drift`` lower than the last one's)."""
    es = NES(np.zeros(2), 1.0, popsize=6, seed=11, tolx=0, tolfun=0, max_condition=0,
             tolstagnation=tolstagnation)  # fmt: skip
    fired = []
    for g in range(1, gens + 1):
        values = np.arange(6.0) - (10.0 if g == 1 else drift * g)
        es.tell(es.ask(), values)
        if "tolstagnation" in es.stop():
            fired.append(g)
    return fired


def test_tolstagnation_is_pycmas_test_and_default():
    """pycma's default ``int(100 + 100 n^1.5 / lam)`` (147 at n = 2, lam = 6) and its test:
    with medians and bests unchanged block over block and the best older than T/2, the test
    fires once 101 every-5th-generation entries are kept (generation 505), not before; a run
    whose values still improve, or ``tolstagnation=0``, never stops on it. Without the test
    (before it was added) a rugged function such as BBOB f23 let one run take the whole
    budget, so IPOP never restarted."""
    from manifold_spectral.solvers.es_defaults import default_tolstagnation

    assert default_tolstagnation(2, 6) == 147 and default_tolstagnation(10, 10) == 416
    assert NES(np.zeros(2), 1.0, popsize=6, seed=0).tolstagnation == 147
    fired = _stagnating_run()
    assert fired and fired[0] == 505  # equal medians count as "no better" (pycma's >=)
    assert _stagnating_run(drift=1e-3) == []
    assert _stagnating_run(tolstagnation=0) == []
