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
    for dtype in (torch.float32, torch.float64):
        info = torch.finfo(dtype)
        for s in (4 * math.sqrt(info.tiny), math.sqrt(info.max) / 4):
            es = nes.NES(np.zeros(2), s, seed=1, dtype=dtype)
            X = es.ask()
            assert np.isfinite(X).all() and np.ptp(X[:, 0]) > 0


@pytest.mark.parametrize("restarts", [0, 2])
def test_no_finite_value_gives_nan_fun_and_says_so(restarts):
    r = nes.minimize(lambda x: math.nan, [1.0, 2.0], 0.5, seed=0, max_evals=60, restarts=restarts)
    # before: fun = inf at the start point, which was never evaluated, message "maxfevals"
    assert math.isnan(r.fun) and not r.success
    assert r.message.startswith("no finite value of f was found")
    assert "maxfevals" in r.message


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
    assert len(es.runs) == 1 and es.countevals == 0 and es.es.stop()
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
