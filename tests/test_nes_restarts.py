"""IPOP / BIPOP restarts of NES (``manifold_spectral.solvers.restarts``): the first run is the
plain run, the populations and regimes follow the schedule, the budget is shared, the ask/tell
contract holds across runs, and restarts solve a multi-modal function a single run does not."""

from __future__ import annotations

import numpy as np
import pytest

from manifold_spectral.solvers import functions, nes
from manifold_spectral.solvers.nes import NES
from manifold_spectral.solvers.restarts import RestartNES

N = 4
RASTRIGIN = functions.FUNCTIONS["rastrigin"].make(N)


def test_first_run_is_the_plain_run_and_ipop_doubles_the_population():
    x0 = np.full(N, 3.0)
    plain = nes.minimize(RASTRIGIN, x0, 2.0, seed=3, max_evals=20_000, vectorized=True)
    assert "tolfun" in plain.stop and plain.fun > 1.0  # a local minimum: a restart is due
    es = RestartNES(x0, 2.0, seed=3, max_evals=20_000, target=1e-8, restarts=9)
    res = es.optimize(RASTRIGIN, vectorized=True)
    first = es.runs[0]
    assert first["nfev"] == plain.nfev and first["stop"] == plain.stop
    np.testing.assert_array_equal(res.history["fun"][: plain.nit], plain.history["fun"])
    pops = [r["popsize"] for r in es.runs]
    assert pops == [8 * 2**i for i in range(len(pops))] and len(pops) >= 2
    assert res.success and res.fun < 1e-8 and res.fun == float(RASTRIGIN(res.x))
    assert res.nfev == sum(r.get("nfev", 0) for r in es.runs[:-1]) + es.es.countevals
    h = res.history
    assert h["nfev"][-1] == res.nfev and np.all(np.diff(h["fun"]) <= 0)
    assert np.all(np.diff(h["nfev"]) > 0) and np.all(np.diff(h["time"]) >= 0)
    assert res.method == f"spectral NES (IPOP, {len(pops)} run{'s' * (len(pops) != 1)})"


def test_budget_and_restart_limit_are_shared_by_all_runs():
    x0 = np.full(N, 3.0)
    es = RestartNES(x0, 2.0, seed=1, max_evals=3_000, restarts=50)
    res = es.optimize(RASTRIGIN, vectorized=True)
    assert "maxfevals" in res.stop and 3_000 <= res.nfev < 3_000 + es.popsize
    assert len(es.runs) >= 2 and len({r["seed"] for r in es.runs}) == len(es.runs)
    assert es.runs[0]["seed"] == 1
    # Each run gets what the runs before it left of the budget.
    assert es.es.max_evals == 3_000 - sum(r["nfev"] for r in es.runs[:-1])
    # The front door: restarts=k is the same run.
    front = nes.minimize(RASTRIGIN, x0, 2.0, seed=1, max_evals=3_000, restarts=50, vectorized=True)
    np.testing.assert_array_equal(front.x, res.x)
    assert front.nfev == res.nfev and front.fun == res.fun == float(RASTRIGIN(res.x))
    es = RestartNES(x0, 2.0, seed=1, max_evals=10**6, restarts=1)
    res = es.optimize(RASTRIGIN, vectorized=True)
    assert len(es.runs) == 2 and ("tolfun" in res.stop or "tolx" in res.stop)


def test_bipop_regimes_and_callable_x0():
    starts = []
    rng = np.random.default_rng(0)

    def x0():
        starts.append(rng.uniform(-4, 4, N))
        return starts[-1]

    es = RestartNES(x0, 2.0, seed=0, max_evals=5_000, restarts=9, bipop=True)
    es.optimize(RASTRIGIN, vectorized=True)
    runs = es.runs
    assert len(starts) == len(runs) >= 3
    assert runs[0]["regime"] == "large" and runs[1]["regime"] == "small"
    large = [r for r in runs if r["regime"] == "large"]
    small = [r for r in runs if r["regime"] == "small"]
    assert [r["popsize"] for r in large] == [8 * 2**i for i in range(len(large))]
    assert small
    last_large = runs[0]
    for r in runs[1:]:
        if r["regime"] == "large":
            last_large = r
            continue
        # lam_S in [lam_0, lam_L / 2] (lam_L: the next large population), sigma0 10^(-2U)
        assert 8 <= r["popsize"] <= last_large["popsize"] and r["popsize"] % 2 == 0
        assert 1e-2 <= r["sigma_scale"] <= 1.0
        if "nfev" in r:  # at most half the last large run (plus one generation)
            assert r["nfev"] <= last_large["nfev"] // 2 + r["popsize"]


@pytest.mark.parametrize("bipop", [False, True])
def test_restarts_counts_the_large_regime_only_as_pycma(bipop):
    """``restarts=k`` ends after the k-th large restart: with IPOP every run is one (k + 1 runs),
    with BIPOP the small runs in between do not count (pycma's rule), so the large regime
    reaches the same populations as IPOP's."""
    es = RestartNES(np.full(N, 3.0), 2.0, seed=0, max_evals=10**6, restarts=3, bipop=bipop)
    res = es.optimize(RASTRIGIN, vectorized=True)
    large = [r["popsize"] for r in es.runs if r["regime"] == "large"]
    small = [r for r in es.runs if r["regime"] == "small"]
    assert large == [8, 16, 32, 64] and bool(small) == bipop
    assert "maxfevals" not in res.stop and es.runs[-1]["regime"] == "large"


def test_ask_tell_across_restarts_and_bad_arguments():
    es = RestartNES(np.full(N, 3.0), 2.0, seed=2, max_evals=20_000, restarts=2)
    sizes = set()
    while not es.stop():
        X = es.ask()
        assert X.shape == (es.popsize, N)
        sizes.add(es.popsize)
        es.tell(X, RASTRIGIN(X))
    assert sizes == {8, 16, 32} and len(es.runs) == 3
    X = es.ask()
    with pytest.raises(ValueError, match="X: expected shape"):
        es.tell(X[:-1], RASTRIGIN(X[:-1]))
    for kwargs, exc, match in [
        ({"restarts": -1}, ValueError, "restarts"),
        ({"restarts": 1.5}, ValueError, "restarts"),
        ({"bipop": 1}, TypeError, "bipop"),
        ({"incpopsize": 1.0}, ValueError, "incpopsize"),
        ({"max_evals": 0}, ValueError, "max_evals"),
    ]:
        with pytest.raises(exc, match=match):
            RestartNES(np.zeros(N), 1.0, **kwargs)
    with pytest.raises(ValueError, match="vectorized=True"):  # the same contract of f
        nes.minimize(lambda x: np.asarray(x)[0] ** 2, np.zeros(N), 1.0, restarts=1,
                     max_evals=500, vectorized=True)  # fmt: skip
    assert isinstance(RestartNES(np.zeros(N), 1.0, restarts=0).es, NES)


def test_history_records_of_a_plain_and_a_restarted_run():
    """``history`` (``result.history``): ``nit`` counts generations from 1 to ``nit``, ``nfev``
    the evaluations so far (int64, ending at ``nfev``; one population a generation in the
    plain run), ``fun`` the best value so far (float64, non-increasing, ending at ``fun``)."""
    x0 = np.full(N, 3.0)
    plain = nes.minimize(RASTRIGIN, x0, 2.0, seed=3, max_evals=2_000, vectorized=True)
    es = RestartNES(x0, 2.0, seed=3, max_evals=20_000, target=1e-8, restarts=9)
    restarted = es.optimize(RASTRIGIN, vectorized=True)
    for res in (plain, restarted):
        h = res.history
        assert [h[k].dtype for k in ("nit", "nfev", "fun", "time")] == [
            np.int64,
            np.int64,
            np.float64,
            np.float64,
        ]
        np.testing.assert_array_equal(h["nit"], np.arange(1, res.nit + 1))
        assert h["nfev"][-1] == res.nfev and np.all(np.diff(h["nfev"]) > 0)
        assert h["fun"][-1] == res.fun and np.all(np.diff(h["fun"]) <= 0)
    np.testing.assert_array_equal(plain.history["nfev"], 8 * np.arange(1, plain.nit + 1))
