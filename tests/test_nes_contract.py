"""The front door's promises at its edges: ``sigma0`` the state dtype cannot hold, a function
with no finite value, torch input in float32, restarts whose callable start changes shape."""

import math

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import nes
from manifold_spectral.solvers.restarts import RestartNES


def _sphere_recording(seen: list):
    def f(x):
        seen.append(np.array(x, dtype=np.float64, copy=True))
        return float((np.asarray(x, dtype=np.float64) ** 2).sum())

    return f


@pytest.mark.parametrize(
    "sigma0, dtype",
    [
        (1e200, torch.float64),
        (1e-160, torch.float64),
        (1e30, torch.float32),
        (1e-30, torch.float32),
    ],
)
def test_sigma0_outside_the_dtype_is_refused_before_any_evaluation(sigma0, dtype):
    # 1 / sigma0^2 (the precision) or sigma0^2 is 0 or Inf in ``dtype``: before, ask() sampled
    # NaN points (and f was called on them) or a distribution of zero width stopped at once.
    seen: list = []
    with pytest.raises(ValueError, match="sigma0"):
        nes.minimize(
            _sphere_recording(seen), np.zeros(3), sigma0, seed=0, max_evals=60, dtype=dtype
        )
    assert seen == []
    with pytest.raises(ValueError, match="sigma0"):
        nes.NES(np.zeros(3), [1.0, sigma0, 1.0], dtype=dtype)


def test_sigma0_at_the_edges_of_the_range_samples_finite_distinct_points():
    """The range is the one the run keeps its precisions in (``es_stop.precision_bounds``):
    inside it a run takes generations, outside it ``scalerange`` would stop it at once."""
    for dtype in (torch.float32, torch.float64):
        info = torch.finfo(dtype)
        for s in (2 * info.max**-0.2, info.tiny**-0.2 / 2):
            es = nes.NES(np.zeros(2), s, seed=1, dtype=dtype)
            X = es.ask()
            assert np.isfinite(X).all() and np.ptp(X[:, 0]) > 0
            es.tell(X, np.sum(X**2, axis=1))
            assert "scalerange" not in es.stop()
        for s in (info.max**-0.2 / 2, 2 * info.tiny**-0.2):  # would stop on scalerange
            with pytest.raises(ValueError, match="^sigma0: expected values in"):
                nes.NES(np.zeros(2), s, dtype=dtype)


@pytest.mark.parametrize("restarts", [0, 2])
def test_no_finite_value_gives_nan_fun_and_says_so(restarts):
    r = nes.minimize(lambda x: math.nan, [1.0, 2.0], 0.5, seed=0, max_evals=60, restarts=restarts)
    # before: fun = inf at the start point, which was never evaluated, message "maxfevals"
    assert math.isnan(r.fun) and not r.success
    assert r.message.startswith("no finite value of f was found")
    assert "maxfevals" in r.message


def test_a_convergence_stop_without_a_finite_value_is_no_success():
    """A start far from anything the function defines (NaN everywhere): the run stops on a
    convergence test (``noeffectcoord``: the steps vanish next to a mean of 1e20), which
    alone reported success with ``fun`` NaN."""
    r = nes.minimize(lambda x: math.nan, np.full(3, 1e20), 1.0, seed=0, max_evals=300)
    assert "noeffectcoord" in r.stop and math.isnan(r.fun)
    assert not r.success and r.message.startswith("no finite value of f was found")


def test_a_start_beyond_the_search_dtype_is_refused_before_any_evaluation():
    seen: list = []
    with pytest.raises(ValueError, match="^x0: .*float32"):
        nes.minimize(
            _sphere_recording(seen), np.full(3, 1e200), 1.0, max_evals=60, dtype=torch.float32
        )
    assert seen == []
    nes.NES(np.full(3, 1e200), 1.0, dtype=torch.float64)  # representable there


def test_some_finite_values_keep_fun_equal_to_f_of_x():
    def f(x):
        return float(x[0] ** 2 + x[1] ** 2) if x[0] > 0 else math.nan

    r = nes.minimize(f, [1.0, 2.0], 0.5, seed=0, max_evals=200)
    assert r.fun == f(r.x) and "no finite" not in r.message


def test_torch_float32_start_gives_float32_points_and_results():
    seen = []

    def f(x):
        seen.append((x.dtype, x.device))
        return (x * x).sum()

    x0 = torch.tensor([1.0, 2.0])
    r = nes.minimize(f, x0, 0.5, seed=0, max_evals=120)
    assert set(seen) == {(torch.float32, x0.device)}
    assert r.x.dtype == r.xmean.dtype == r.stds.dtype == torch.float32
    assert r.fun == float(f(r.x))  # the point told is the float32 point evaluated
    assert x0.tolist() == [1.0, 2.0]
    # an integer start: points in the state dtype (float64), not rounded to integers
    r = nes.minimize(lambda x: (x * x).sum(), torch.tensor([3, -2]), 0.5, seed=0, max_evals=60)
    assert r.x.dtype == torch.float64 and not torch.equal(r.x, r.x.round())


def test_restart_start_of_another_dimension_is_refused_naming_x0():
    calls = []

    def x0():
        calls.append(1)
        return [3.0, 3.0] if len(calls) == 1 else [3.0] * 5

    ras = lambda x: float(10 * len(x) + np.sum(x**2 - 10 * np.cos(2 * np.pi * x)))  # noqa: E731
    es = RestartNES(x0, 2.0, seed=0, restarts=3, max_evals=3000)
    with pytest.raises(ValueError, match="x0: .*dimension 5 .*dimension 2"):
        while not es.stop():
            X = es.ask()
            es.tell(X, [ras(x) for x in X])
    # the finished first run is still the last one: its counts were not folded in
    assert len(es.runs) == 1 and es.countevals == es.es.countevals and es.es.stop()
    assert es.result.x.shape == (2,)


def test_restart_start_of_another_array_type_is_refused_naming_x0():
    starts = iter([np.ones(2), torch.ones(2)])
    es = RestartNES(lambda: next(starts), 1.0, seed=0, restarts=1, max_evals=5000)
    with pytest.raises(TypeError, match="x0: .*torch start"):
        while not es.stop():
            X = es.ask()
            es.tell(X, [0.0] * len(X))  # flat: the first run stops on tolflatfitness


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused_by_name():
    # before: torch.Generator's raw RuntimeError
    with pytest.raises(ValueError, match="device: 'cuda'"):
        nes.minimize(lambda x: float(x @ x), np.zeros(3), 1.0, device="cuda", max_evals=20)


SHIFT = np.array([1.0, 2.0, 3.0])


def _writes_into_its_argument(x):
    x -= SHIFT  # the common in-place idiom
    return float(np.sum(x**2))


def test_f_that_writes_into_its_argument_cannot_change_the_run():
    pure = nes.minimize(
        lambda x: float(np.sum((x - SHIFT) ** 2)), np.zeros(3), 0.5, seed=0, max_evals=600
    )
    res = nes.minimize(_writes_into_its_argument, np.zeros(3), 0.5, seed=0, max_evals=600)
    assert np.array_equal(res.x, pure.x) and res.fun == pure.fun
    assert res.fun == _writes_into_its_argument(res.x.copy())

    def batch(X):
        X -= SHIFT
        return np.sum(X**2, axis=1)

    vec = nes.minimize(batch, np.zeros(3), 0.5, seed=0, max_evals=600, vectorized=True)
    assert np.array_equal(vec.x, pure.x)


@pytest.mark.parametrize("vectorized", [False, True])
def test_a_masked_value_is_undefined_not_zero(vectorized):
    # np.ma.masked (a reduction over all-masked values) reads 0.0 through np.asarray
    def f(x):
        return np.ma.masked if x[0] < 0 else float(np.sum(x**2)) + 1.0

    def g(X):
        bad = X[:, 0] < 0
        hidden = np.where(bad, 0.0, np.sum(X**2, axis=1) + 1.0)  # data under the mask: 0.0
        return np.ma.masked_array(hidden, mask=bad)

    res = nes.minimize(
        g if vectorized else f, np.zeros(3), 2.0, seed=0, max_evals=400, vectorized=vectorized
    )
    assert res.x[0] >= 0 and res.fun >= 1.0  # never a masked point at the reported 0.0


def test_a_float32_numpy_start_gives_float32_points_and_results():
    seen = set()

    def f(x):
        seen.add(x.dtype)
        return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))

    res = nes.minimize(f, np.ones(3, dtype=np.float32), 0.5, seed=0, max_evals=200)
    assert seen == {np.dtype(np.float32)}
    assert res.x.dtype == res.xmean.dtype == res.stds.dtype == np.float32
    ints = nes.minimize(f, np.ones(3, dtype=np.int64), 0.5, seed=0, max_evals=40)
    assert ints.x.dtype == np.float64  # a non-floating start comes back in the state dtype


@pytest.mark.parametrize("bad", ["no", "False", 1])
def test_jacobi_switch_is_checked_and_none_is_its_default(bad):
    with pytest.raises(TypeError, match="jacobi"):
        nes.NES(np.ones(3), 0.5, jacobi=bad)
    f = lambda X: np.sum(X**2, axis=1)  # noqa: E731
    runs = [
        nes.minimize(f, np.ones(3), 0.5, seed=0, max_evals=300, vectorized=True, jacobi=j)
        for j in (None, True)
    ]
    assert np.array_equal(runs[0].x, runs[1].x)


def test_bfloat16_state_is_refused_by_name():
    with pytest.raises(TypeError, match="dtype: torch.bfloat16"):
        nes.NES(np.ones(3), 0.5, dtype=torch.bfloat16)


def test_history_has_no_best_value_before_the_first_finite_one():
    calls = [0]

    def f(x):
        calls[0] += 1
        return math.nan if calls[0] <= 16 else float(np.sum(x**2))

    res = nes.minimize(f, np.ones(3), 0.5, seed=0, max_evals=200)
    h = res.history["fun"]
    assert np.isnan(h[:2]).all() and np.isfinite(h[2:]).all()  # popsize 8: two NaN generations
    assert h[-1] == res.fun


@pytest.mark.parametrize("stop", [True, np.True_, torch.tensor(True), 1])
def test_callback_true_scalars_stop_the_run(stop):
    res = nes.minimize(
        lambda x: float(np.sum(x**2)),
        np.ones(3),
        0.5,
        seed=0,
        max_evals=400,
        callback=lambda es: stop if es.countiter >= 3 else None,
    )
    assert res.nit == 3 and "callback" in res.stop


@pytest.mark.parametrize("bad", [1.0, "stop", np.array([True, False])])
def test_callback_other_values_are_named(bad):
    with pytest.raises(TypeError, match="^callback:"):
        nes.minimize(
            lambda x: float(np.sum(x**2)),
            np.ones(3),
            0.5,
            seed=0,
            max_evals=400,
            callback=lambda es: bad,
        )
