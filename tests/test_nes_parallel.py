"""Parallel fitness evaluation of the NES driver (``executor=`` / ``map=`` of ``optimize`` and
``minimize``): thread and process pools give bitwise the serial run, candidates keep the serial
per-row type, bad arguments fail before anything changes, and worker exceptions propagate."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.pool import ThreadPool
from typing import Any

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import functions, nes
from manifold_spectral.solvers.cholesky_nes import CholeskyNES
from manifold_spectral.solvers.nes import NES, NESBase
from manifold_spectral.solvers.xnes import XNES

N = 4
BUDGET = 240  # a few dozen generations
CLASSES = {"spectral": NES, "xnes": XNES, "cholesky": CholeskyNES}


class FitnessError(RuntimeError):
    """Raised by ``failing`` (module level, so it pickles)."""


def failing(x: Any) -> float:
    if float(x[0]) > 0.0:
        raise FitnessError("f failed on a candidate")
    return float(functions.sphere(x))


def holes(x: Any) -> float:
    """Rosenbrock with NaN/Inf on part of the space (non-finite values in most generations)."""
    if float(x[1]) > 0.3:
        return float("nan")
    if float(x[2]) < -0.6:
        return float("inf")
    return float(functions.rosenbrock(x))


def not_a_scalar(x: Any) -> Any:
    return np.asarray(x) * 2.0


@pytest.fixture(scope="module")
def threads() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessPoolExecutor]:
    # fork: the workers start in milliseconds and inherit this module (so the module-level
    # objectives unpickle by reference); spawn would re-import torch in every worker.
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
        yield ex


def _run(cls: type[NESBase], f: Any, x0: Any = None, **kwargs: Any) -> nes.NESResult:
    x0 = np.linspace(-1.0, 1.0, N) if x0 is None else x0
    es = cls(x0, 0.5, seed=3, max_evals=BUDGET)
    return es.optimize(f, **kwargs)


def _assert_identical(a: nes.NESResult, b: nes.NESResult) -> None:
    as_np = (lambda v: v.numpy()) if isinstance(a.x, torch.Tensor) else np.asarray
    assert type(a.x) is type(b.x)
    for name in ("x", "xmean", "stds"):
        va, vb = as_np(getattr(a, name)), as_np(getattr(b, name))
        assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), name
    assert a.fun == b.fun or (np.isnan(a.fun) and np.isnan(b.fun))
    assert (a.nfev, a.nit, a.evals_best, a.stop) == (b.nfev, b.nit, b.evals_best, b.stop)
    for key in ("nit", "nfev", "fun"):  # "time" is wall-clock
        assert a.history[key].tobytes() == b.history[key].tobytes(), key


# Bitwise equality with the serial run ---------------------------------------------------


@pytest.mark.parametrize("method", ["spectral", "xnes"])
@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_executor_matches_serial(method, pool, request):
    executor = request.getfixturevalue(pool)
    cls = CLASSES[method]
    serial = _run(cls, functions.rosenbrock, vectorized=False)
    parallel = _run(cls, functions.rosenbrock, executor=executor)
    assert serial.nfev == BUDGET
    _assert_identical(serial, parallel)
    # The vectorised serial run takes the same path (same values): identical too.
    _assert_identical(_run(cls, functions.rosenbrock), parallel)


def test_cholesky_and_torch_io_with_threads(threads):
    _assert_identical(
        _run(CholeskyNES, functions.ackley, vectorized=False),
        _run(CholeskyNES, functions.ackley, executor=threads),
    )
    x0 = torch.linspace(-1.0, 1.0, N, dtype=torch.float64)
    serial = _run(NES, functions.rosenbrock, x0, vectorized=False)
    parallel = _run(NES, functions.rosenbrock, x0, executor=threads)
    assert isinstance(parallel.x, torch.Tensor)
    _assert_identical(serial, parallel)


def test_torch_io_with_processes(processes):
    x0 = torch.linspace(-1.0, 1.0, N, dtype=torch.float64)
    _assert_identical(
        _run(XNES, functions.rosenbrock, x0, vectorized=False),
        _run(XNES, functions.rosenbrock, x0, executor=processes),
    )


def test_non_finite_values_as_in_serial(processes):
    serial = _run(NES, holes, vectorized=False)
    parallel = _run(NES, holes, executor=processes)
    _assert_identical(serial, parallel)
    assert np.isfinite(parallel.fun) and np.isfinite(parallel.history["fun"][-1])


def test_minimize_with_executor_and_map(threads):
    kw = {"seed": 1, "max_evals": BUDGET}
    x0 = np.full(N, 0.5)
    serial = nes.minimize(functions.griewank, x0, 0.5, **kw)
    _assert_identical(serial, nes.minimize(functions.griewank, x0, 0.5, executor=threads, **kw))
    _assert_identical(serial, nes.minimize(functions.griewank, x0, 0.5, map=map, **kw))


def test_map_callables(processes):
    serial = _run(XNES, functions.rosenbrock, vectorized=False)
    _assert_identical(serial, _run(XNES, functions.rosenbrock, map=map))  # the builtin
    with ThreadPool(2) as pool:
        _assert_identical(serial, _run(XNES, functions.rosenbrock, map=pool.map))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        _assert_identical(serial, _run(XNES, functions.rosenbrock, map=pool.map))


def test_candidates_have_the_serial_row_type(threads):
    seen: list[Any] = []

    def record(x):
        seen.append(x)
        return float((x * x).sum())

    for x0, kind in [
        (np.zeros(N), np.ndarray),
        (torch.zeros(N, dtype=torch.float32), torch.Tensor),
    ]:
        seen.clear()
        es = NES(x0, 0.5, seed=0, max_evals=16, dtype=torch.float64)
        es.optimize(record, executor=threads)
        assert len(seen) == es.countevals == 2 * es.popsize
        assert all(type(x) is kind and tuple(x.shape) == (N,) for x in seen)
        if kind is torch.Tensor:
            # as es.ask() returns: the start's dtype (torch in, torch out), not the state's
            assert all(x.dtype == torch.float32 for x in seen)
    # The executor is left open for its owner.
    assert threads.submit(abs, -1).result() == 1


# Bad arguments and exceptions ------------------------------------------------------------


def _snapshot(es: NESBase) -> tuple[Any, ...]:
    return (
        es.countevals,
        es.countiter,
        es.mean.clone(),
        es.covariance().clone(),
        es._generator.get_state().clone(),
        es._pending,
        dict(es._stop_extra),
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"executor": "threads", "map": map}, ValueError, "executor, map: give at most one"),
        ({"executor": object()}, TypeError, r"executor: expected an object with a \.map"),
        ({"executor": type("E", (), {"map": 3})()}, TypeError, "executor: expected"),
        ({"map": 3}, TypeError, "map: expected a callable"),
        ({"map": map, "vectorized": True}, ValueError, "vectorized=True cannot be combined"),
        ({"executor": "threads", "vectorized": True}, ValueError, "with executor"),
    ],
    ids=["both", "no-map", "map-not-callable", "map-int", "vectorized-map", "vectorized-ex"],
)
def test_bad_arguments_change_nothing(kwargs, error, match, threads):
    kwargs = {k: (threads if v == "threads" else v) for k, v in kwargs.items()}
    calls: list[Any] = []

    def f(x):
        calls.append(x)
        return float(functions.sphere(x))

    es = NES(np.ones(N), 0.5, seed=0, max_evals=BUDGET)
    before = _snapshot(es)
    with pytest.raises(error, match=match):
        es.optimize(f, **kwargs)
    after = _snapshot(es)
    assert not calls
    assert before[:2] == after[:2] and before[5:] == after[5:]
    for a, b in zip(before[2:5], after[2:5], strict=True):
        assert torch.equal(a, b)
    with pytest.raises(error, match=match):
        nes.minimize(f, np.ones(N), 0.5, max_evals=BUDGET, **kwargs)
    assert not calls


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_worker_exceptions_propagate(pool, request):
    executor = request.getfixturevalue(pool)
    es = NES(np.linspace(-1.0, 1.0, N), 0.5, seed=0, max_evals=BUDGET)
    with pytest.raises(FitnessError, match="f failed on a candidate"):
        es.optimize(failing, executor=executor)
    assert es.countevals == 0  # the generation was not told
    with pytest.raises(TypeError, match="expected a real scalar"):
        es.optimize(not_a_scalar, executor=executor)
    # The pool still works after a failed generation.
    _assert_identical(
        _run(NES, functions.sphere, vectorized=False),
        _run(NES, functions.sphere, executor=executor),
    )


def test_map_with_missing_results_is_an_error():
    def short(fn, items):
        return [fn(x) for x in items][:-1]

    es = NES(np.ones(N), 0.5, seed=0, max_evals=BUDGET)
    with pytest.raises(ValueError, match="executor/map: expected 8 results"):
        es.optimize(functions.sphere, map=short)
    assert es.countevals == 0
