"""Restarts and ask/tell at their edges, found by an outside tester: a callable start in
another dtype, a sigma0 list with BIPOP, a failing next run, the per-run records, a
per-coordinate sigma0, pickling, runs without tolx/tolfun, the history before a finite
value, and points injected far outside the distribution."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import nes
from manifold_spectral.solvers.restarts import RestartNES


def sphere(X):
    return np.sum(np.asarray(X, dtype=np.float64) ** 2, axis=-1)


def test_callable_starts_in_another_dtype_keep_fun_equal_to_f_of_x():
    starts = iter([np.full(3, 2.0)] + [np.full(3, 2.0, dtype=np.float32)] * 20)
    res = nes.minimize(sphere, lambda: next(starts), 1.0, seed=0, restarts=3, max_evals=3000)
    assert res.x.dtype == np.float64 and res.fun == sphere(res.x)


def test_bipop_takes_a_sigma0_list_and_refuses_a_small_run_sigma_up_front():
    res = nes.minimize(
        sphere,
        np.full(3, 2.0),
        [2.0, 2.0, 2.0],
        seed=0,
        restarts=2,
        bipop=True,
        max_evals=3000,
        vectorized=True,
    )
    assert res.nfev == sum(r["nfev"] for r in res.runs)
    with pytest.raises(ValueError, match=r"^sigma0 / 100"):
        RestartNES(np.ones(3), 1e-7, bipop=True, dtype=torch.float32)  # 1e-9 is below 2e-8


def test_a_next_run_that_cannot_start_changes_no_count():
    starts = iter([np.ones(3)] + [np.ones(4)] * 5)  # the second start has another dimension
    es = RestartNES(lambda: next(starts), 1.0, seed=0, restarts=2)
    with pytest.raises(ValueError, match="x0"):
        while not es.stop():
            X = es.ask()
            es.tell(X, sphere(X))
    assert es.result.nfev == es.es.countevals and len(es.runs) == 1


@pytest.mark.parametrize("kw", [dict(restarts=2), dict(restarts=0), dict(restarts=5, target=1e-6)])
def test_every_run_record_is_complete_and_adds_up(kw):
    res = nes.minimize(sphere, np.full(3, 2.0), 1.0, seed=1, vectorized=True, **kw)
    if kw["restarts"] == 0 and "target" not in kw:
        assert res.runs is None  # no restarts: the plain run
        return
    assert all({"nfev", "stop"} <= r.keys() for r in res.runs)
    assert sum(r["nfev"] for r in res.runs) == res.nfev


def test_a_per_coordinate_sigma0_does_not_count_as_learned_condition():
    scales = np.array([1e-4, 1e-4, 1e4, 1e4])
    res = nes.minimize(
        lambda x: float(np.sum((x / scales) ** 2)),
        np.ones(4) * scales,
        scales,
        seed=0,
        target=1e-8,
        max_evals=4000,
    )
    assert "condition" not in res.stop and res.fun < 1e-8


@pytest.mark.parametrize("opts", [dict(dtype=torch.float32), dict(cayley="neumann"), {}])
def test_pickle_mid_run_resumes_bitwise(opts):
    es = nes.NES(np.full(4, 2.0), 1.0, seed=0, **opts)
    for _ in range(5):
        X = es.ask()
        es.tell(X, sphere(X))
    es.covariance()  # a read that once left an unpicklable cache
    twin = pickle.loads(pickle.dumps(es))
    for e in (es, twin):
        for _ in range(5):
            X = e.ask()
            e.tell(X, sphere(X))
    assert np.array_equal(es.result.x, twin.result.x)


def test_restarts_terminate_without_tolx_and_tolfun():
    res = nes.minimize(
        sphere, np.full(2, 2.0), 1.0, seed=0, restarts=1, tolx=0, tolfun=0, vectorized=True
    )
    assert res.nfev > 0 and len(res.runs) >= 1


def test_restart_history_has_no_best_value_before_the_first_finite_one():
    calls = [0]

    def f(x):
        calls[0] += 1
        return math.nan if calls[0] <= 16 else float(np.sum(x**2))

    h = nes.minimize(f, np.ones(3), 0.5, seed=0, restarts=2, max_evals=300).history["fun"]
    assert np.isnan(h[:2]).all() and np.isfinite(h[2:]).all()


@pytest.mark.parametrize("r", [20.0, 100.0])
def test_an_injected_far_point_moves_the_distribution_as_pycma_would(r):
    n = 4
    c = np.full(n, r / np.sqrt(n))
    es = nes.NES(np.zeros(n), 1.0, seed=0)
    X = es.ask()
    X[0] = c  # the optimum, injected far outside
    es.tell(X, np.sum((X - c) ** 2, axis=1))
    assert float(es.dist.stds().max()) < 3.0 and not es.stop()
    asked = nes.NES(np.zeros(n), 1.0, seed=0)
    Y = asked.ask()
    asked.tell(Y[::-1].copy(), sphere(Y[::-1]))  # asked points in another order: not clipped
    ref = nes.NES(np.zeros(n), 1.0, seed=0)
    Z = ref.ask()
    ref.tell(Z, sphere(Z))
    assert torch.allclose(asked.mean, ref.mean, rtol=0, atol=1e-15)


def test_seed_beyond_64_bits_and_a_numpy_bool_sigma0_are_named():
    with pytest.raises(ValueError, match=r"^seed: expected an int in \[0, 2\*\*63\)"):
        nes.NES(np.ones(2), 1.0, seed=2**64)
    assert nes.NES(np.ones(2), 1.0, seed=2**63 - 1).seed == 2**63 - 1
    with pytest.raises(TypeError, match="^sigma0: .* got a bool"):
        nes.NES(np.ones(2), np.True_)


def test_a_numpy_bool_start_is_refused_as_a_torch_one():
    for x0 in (np.array([True, False]), torch.tensor([True, False])):
        with pytest.raises(TypeError, match="^x0: expected a real vector"):
            nes.NES(x0, 1.0)


@pytest.mark.parametrize("bipop", [False, True])
def test_countevals_counts_every_evaluation_of_every_run(bipop):
    # pycma's idiom ``callback=lambda es: es.countevals >= budget`` read 0 until the first
    # restart (the finished runs only), so such a callback never stopped a first run.
    calls, seen = [0], []

    def f(x):
        calls[0] += 1
        return float(np.sum(x**2))

    def callback(es):
        seen.append((es.countevals, calls[0]))
        return es.countevals >= 2500

    res = nes.minimize(f, np.full(3, 2.0), 1.0, seed=0, restarts=4, bipop=bipop, tolx=1e-3,
                       max_evals=10_000, callback=callback)  # fmt: skip
    assert len(res.runs) > 1  # the count crossed restarts
    assert all(count == made for count, made in seen)
    assert "callback" in res.stop and 2500 <= res.nfev == calls[0] < 2600
