"""Spectral NES's front doors (split from test_solvers_nes.py): the ask/tell population,
torch in / torch out, ``minimize``'s ``fun == f(x)`` contract for per-point and vectorised
functions, history, callback and injection, reproducibility, and named errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import functions, nes
from manifold_spectral.solvers.nes import NES
from manifold_spectral.solvers.xnes import XNES

DT = torch.float64


def test_ask_mirrored_population_and_default_popsize():
    es = NES(np.arange(5.0), 0.5, seed=0)
    assert es.popsize == 4 + math.floor(3 * math.log(5))  # 8, already even
    X = es.ask()
    assert X.shape == (es.popsize, 5) and X.dtype == np.float64
    h = es.popsize // 2
    np.testing.assert_allclose(X[:h] + X[h:], 2 * np.arange(5.0)[None, :].repeat(h, 0))
    assert NES(np.zeros(3), 1.0).popsize == 8  # 4 + 3 = 7, rounded up to even
    assert XNES(np.zeros(3), 1.0).popsize == 7  # no mirrored sampling


def test_torch_in_torch_out_and_vectorised_torch_function():
    x0 = torch.full((6,), 2.0, dtype=DT)
    seen = []

    def f(x):
        seen.append(type(x))
        return (x * x).sum(-1)

    res = nes.minimize(f, x0, 1.0, target=1e-6, seed=1, max_evals=5_000, vectorized=True)
    assert res.success and isinstance(res.x, torch.Tensor)
    assert all(t is torch.Tensor for t in seen)
    # Vectorised: one call per generation, the first generation split in two (row 0, rest).
    assert len(seen) == res.nit + 1


def _first_coordinate(x):  # per point only: on a (k, n) batch it returns row 0 (n values)
    return (np.asarray(x)[0] - 1.0) ** 2


def _first_coordinate_batch(X):  # the same function, vectorised
    return (np.asarray(X)[:, 0] - 1.0) ** 2


@pytest.mark.parametrize("n", [4, 10])  # popsize 10 at n = 10: the batch has n rows
def test_front_door_fun_is_f_of_x_per_point_and_vectorised(n):
    assert NES(np.zeros(n), 1.0).popsize == (10 if n == 10 else 8)
    kw = {"seed": 0, "max_evals": 600}
    per_point = nes.minimize(_first_coordinate, np.zeros(n), 1.0, **kw)  # the default
    assert per_point.fun == _first_coordinate(per_point.x) and per_point.fun < 1e-3
    batch = nes.minimize(_first_coordinate_batch, np.zeros(n), 1.0, vectorized=True, **kw)
    assert batch.fun == float(_first_coordinate_batch(batch.x[None, :])[0])
    np.testing.assert_array_equal(batch.x, per_point.x)  # same run, either contract
    # A wrong declaration is an error naming ``vectorized``, never a silent wrong answer.
    with pytest.raises(ValueError, match=rf"vectorized=True: f returned shape \({n},\)"):
        nes.minimize(_first_coordinate, np.zeros(n), 1.0, vectorized=True, **kw)
    with pytest.raises(TypeError, match=r"one point \(vectorized=False\), got shape \(3,\)"):
        nes.minimize(lambda x: np.asarray(x).sum(-1) + np.zeros(3), np.zeros(n), 1.0, **kw)
    # Every later generation checks the shape (popsize,) too.
    es = NES(np.zeros(n), 1.0, seed=0, max_evals=600)
    calls = []

    def drift(X):
        calls.append(1)
        values = _first_coordinate_batch(X)
        return values if len(calls) < 5 else values[:-1]

    with pytest.raises(ValueError, match="vectorized=True"):
        es.optimize(drift, vectorized=True)
    assert es.countiter == 3  # generations 1 (two calls), 2 and 3 were told; 4 was refused


def test_vectorized_none_is_deprecated_and_means_per_point():
    calls = []

    def f(x):
        calls.append(np.shape(x))
        return float(np.asarray(x) @ np.asarray(x))

    with pytest.warns(FutureWarning, match="vectorized=None is deprecated"):
        res = nes.minimize(f, np.ones(4), 1.0, seed=0, max_evals=400, vectorized=None)
    assert set(calls) == {(4,)} and len(calls) == res.nfev and res.fun == f(res.x)
    with pytest.raises(TypeError, match="vectorized: expected a bool"):
        nes.minimize(f, np.ones(4), 1.0, max_evals=400, vectorized=1)


def test_result_history_callback_and_injection():
    stopped = []

    def callback(es):
        stopped.append(es.countiter)
        return es.countiter >= 5

    res = nes.minimize(
        functions.sphere, np.ones(5), 1.0, seed=0, max_evals=10_000, callback=callback
    )
    assert res.nit == 5 and res.stop == {"callback": True} and not res.success
    h = res.history
    assert h["nfev"].shape == h["fun"].shape == h["time"].shape == (5,)
    assert list(h["nit"]) == [1, 2, 3, 4, 5] and res.method == "spectral NES"
    assert res["x"] is res.x and np.all(np.diff(h["time"]) >= 0)
    assert np.all(np.diff(h["fun"]) <= 0) and h["nfev"][-1] == res.nfev
    assert res.time > 0 and res.seed == 0
    # Injected (non-asked) points are accepted and whitened.
    es = NES(np.ones(5), 1.0, seed=1)
    X = es.ask()
    X[0] = 0.0
    es.tell(X, functions.sphere(X))
    assert es.fbest == 0.0


def test_same_seed_same_run():
    a = nes.minimize(functions.rosenbrock, np.zeros(5), 0.5, seed=7, max_evals=2_000)
    b = nes.minimize(functions.rosenbrock, np.zeros(5), 0.5, seed=7, max_evals=2_000)
    assert a.fun == b.fun and np.array_equal(a.x, b.x)


# Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x0", "sigma0", "exc", "match"),
    [
        (np.array([1.0, np.nan]), 1.0, ValueError, "x0: contains NaN or Inf"),
        (np.array([1.0, np.inf]), 1.0, ValueError, "x0: contains NaN or Inf"),
        (np.ones((2, 2)), 1.0, ValueError, "x0: expected a non-empty 1-d vector"),
        (np.array([]), 1.0, ValueError, "x0: expected a non-empty 1-d vector"),
        (np.array(["a", "b"]), 1.0, TypeError, "x0: expected a real vector"),
        (np.ones(3), 0.0, ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), -1.0, ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), np.nan, ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), [1.0, 0.0, 1.0], ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), [1.0, 1.0], ValueError, r"sigma0: expected a scalar or shape \(3,\)"),
        (np.ones(3), True, TypeError, "sigma0"),
    ],
)
def test_bad_x0_and_sigma0(x0, sigma0, exc, match):
    with pytest.raises(exc, match=match):
        NES(x0, sigma0)


def test_bad_tell_arguments():
    es = NES(np.zeros(4), 1.0, seed=0)
    X = es.ask()
    with pytest.raises(ValueError, match=r"X: expected shape \(8, 4\)"):
        es.tell(X[:-1], np.zeros(7))
    with pytest.raises(ValueError, match=r"fvals: expected shape \(8,\)"):
        es.tell(X, np.zeros(7))
    with pytest.raises(TypeError, match="fvals: expected real values"):
        es.tell(X, np.zeros(8, dtype=complex))
    Y = X.copy()
    Y[0, 0] = np.nan
    with pytest.raises(ValueError, match="X: contains NaN or Inf"):
        es.tell(Y, np.zeros(8))
    es.tell(X, functions.sphere(X))  # the rejected calls changed nothing
    assert es.countiter == 1


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"popsize": 7}, ValueError, "mirrored sampling needs an even popsize"),
        ({"popsize": 1}, ValueError, "popsize: expected an int >= 2"),
        ({"popsize": 4.0}, TypeError, "popsize"),
        ({"mirrored": "yes"}, TypeError, "mirrored: expected a bool"),
        ({"eta_B": 0.0}, ValueError, "eta_B: expected a finite number > 0"),
        ({"eta_mu": -1.0}, ValueError, "eta_mu"),
        ({"max_evals": 0}, ValueError, "max_evals"),
        ({"seed": -1}, ValueError, "seed"),
        ({"target": float("nan")}, ValueError, "target"),
        ({"dtype": torch.int64}, TypeError, "dtype"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        NES(np.zeros(4), 1.0, **kwargs)


def test_bad_function_and_termination():
    with pytest.raises(TypeError, match="f: expected a callable"):
        nes.minimize(3.0, np.zeros(3), 1.0)
    es = NES(np.zeros(3), 1.0, tolx=0, tolfun=0)
    with pytest.raises(ValueError, match="no termination criterion"):
        es.optimize(functions.sphere)
    with pytest.raises(TypeError, match="expected a real scalar"):
        nes.minimize(lambda x: "bad", np.zeros(3), 1.0, max_evals=100)


# Baselines --------------------------------------------------------------------------------
