"""``manifold_spectral._threads`` and ``spd.minimize(threads=...)``: small problems run with one
intra-op thread, the caller's count comes back afterwards (also after an exception), and the
results do not depend on the limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral._threads import SMALL_MATRIX, small_problem_threads, torch_threads
from manifold_spectral.experiments.spd import random_spd
from manifold_spectral.solvers import spd

CALLER = 3  # a count that differs from both 1 and the machine's default


@pytest.fixture
def caller_threads():
    """The caller's setting during a test (restored afterwards, whatever the test did)."""
    old = torch.get_num_threads()
    torch.set_num_threads(CALLER)
    yield CALLER
    torch.set_num_threads(old)


def logdet(n: int, seed: int = 0) -> spd.LogDet:
    return spd.LogDet(random_spd(n, 1.0, torch.Generator().manual_seed(seed)))


def threads_during(n: int, steps: int = 3, **kw) -> list[int]:
    """The intra-op thread count seen at every record of a ``spd.minimize`` run."""
    seen: list[int] = []
    spd.minimize(
        logdet(n),
        "spectral",
        lr=0.05,
        steps=steps,
        callback=lambda k, f: seen.append(torch.get_num_threads()),
        **kw,
    )
    return seen


def test_small_problem_runs_with_one_thread_and_restores(caller_threads):
    assert threads_during(10) == [1] * 4
    assert torch.get_num_threads() == caller_threads


def test_threshold_is_inclusive_and_large_problems_keep_the_callers_threads(caller_threads):
    assert set(threads_during(SMALL_MATRIX, steps=1)) == {1}
    assert set(threads_during(SMALL_MATRIX + 1, steps=1)) == {caller_threads}
    assert torch.get_num_threads() == caller_threads


def test_explicit_and_disabled_limits(caller_threads):
    assert set(threads_during(10, threads=2)) == {2}
    assert set(threads_during(10, threads=None)) == {caller_threads}
    assert torch.get_num_threads() == caller_threads
    for bad in (0, -1, 1.5, True, "one"):
        with pytest.raises(ValueError, match="threads"):
            spd.minimize(logdet(4), "spectral", lr=0.1, steps=1, threads=bad)


class Boom(RuntimeError):
    pass


def test_threads_restored_after_an_exception(caller_threads):
    def callback(k: int, f: float) -> None:
        assert torch.get_num_threads() == 1
        if k == 2:
            raise Boom("from the callback")

    with pytest.raises(Boom):
        spd.minimize(logdet(10), "spectral", lr=0.05, steps=5, callback=callback)
    assert torch.get_num_threads() == caller_threads

    def grad(S: torch.Tensor) -> torch.Tensor:
        raise Boom("from the gradient")

    problem = spd.Objective(lambda S: torch.trace(S), 10, grad)
    with pytest.raises(Boom):
        spd.minimize(problem, "spectral", lr=0.05, steps=5)
    assert torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("method", spd.METHODS)
def test_results_identical_with_and_without_the_limit(caller_threads, method):
    runs = [
        spd.minimize(logdet(30, seed=1), method, lr=0.05, steps=40, threads=t)
        for t in ("auto", None)
    ]
    assert np.array_equal(runs[0].history["fun"], runs[1].history["fun"])
    assert torch.equal(runs[0].x, runs[1].x)


def test_context_managers(caller_threads):
    with torch_threads(None):
        assert torch.get_num_threads() == caller_threads
    with pytest.raises(Boom), torch_threads(2):
        assert torch.get_num_threads() == 2
        raise Boom
    assert torch.get_num_threads() == caller_threads
    with small_problem_threads(8, "cuda"):  # an accelerator: the CPU count is not touched
        assert torch.get_num_threads() == caller_threads
    with small_problem_threads(8, torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == caller_threads
