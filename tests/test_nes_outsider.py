"""``nes.minimize`` / ``NES`` / ``RestartNES`` against an outside tester's reports (issue 14,
"no silent wrong answers"): a told point that a coarser state dtype would round (``result.fun``
was not ``f(result.x)``), an unknown option (pycma's ``maxfevals``) that failed deep inside the
search distribution, restart options whose wrong values a single run ignored, and a float32
start whose rounded points ``tell`` took for injected ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import nes
from manifold_spectral.solvers.cholesky_nes import CholeskyNES
from manifold_spectral.solvers.restarts import RestartNES
from manifold_spectral.solvers.xnes import XNES

THIRD = np.full(3, 1.0 / 3.0)  # not representable in float32 or float16


def _f(x) -> float:
    return float(np.sum((np.asarray(x, dtype=np.float64) - THIRD) ** 2))


# result.x is the point f was evaluated at -----------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("restarts", [False, True])
def test_told_point_is_returned_unrounded_by_a_coarser_state(dtype, restarts):
    """A repaired point told to a float32/float16 state with a float64 start comes back as
    told: rounded to the state's dtype, f(result.x) would be 2e-16 (float32) where fun is 0."""
    es = (RestartNES if restarts else nes.NES)(np.zeros(3), 1.0, seed=0, dtype=dtype)
    X = es.ask()
    X[0] = THIRD  # the best row, as a repair step or an injection would set it
    es.tell(X, [_f(x) for x in X])
    res = es.result
    assert res.x.dtype == np.float64
    np.testing.assert_array_equal(res.x, THIRD)
    assert res.fun == 0.0 == _f(res.x)


# Unknown options are named -------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, hint",
    [("maxfevals", "max_evals"), ("ftarget", "target"), ("tol_x", "tolx"), ("mirror", "mirrored"),
     ("options", r"the options as keywords, \*\*options"), ("args", "f with its arguments bound")],
)  # fmt: skip
@pytest.mark.parametrize("restarts", [0, 2])
def test_unknown_option_is_named_with_its_name_here(option, hint, restarts):
    """pycma's names and misspellings: a ``TypeError`` naming the option and what it is called
    here, before ``f`` is called (it was ``SpectralSearch.__init__() got an unexpected keyword
    argument``)."""
    calls = []
    with pytest.raises(TypeError, match=rf"^{option}: unknown option of spectral NES; did you "
                       rf"mean {hint}\b"):  # fmt: skip
        nes.minimize(calls.append, np.zeros(3), 1.0, restarts=restarts, **{option: 1})
    assert calls == []


def test_f_and_x0_swapped_names_f_before_calling_x0():
    """A callable ``x0`` (a start per restart) was called first: with ``f`` and ``x0``
    swapped, the error was the function's missing argument, not ``f``."""
    with pytest.raises(TypeError, match=r"^f: expected a callable, got ndarray"):
        nes.minimize(np.zeros(3), _f, 0.5)
    calls: list[int] = []
    start = lambda: calls.append(1) or np.zeros(3)  # noqa: E731
    with pytest.raises(TypeError, match=r"^callback: expected a callable or None, got 5"):
        nes.minimize(_f, start, 0.5, restarts=1, callback=5)
    assert calls == []


@pytest.mark.parametrize("cls", [nes.NES, XNES, CholeskyNES, RestartNES])
def test_pycma_options_dict_as_third_argument_says_keywords(cls):
    """pycma's ``CMAEvolutionStrategy(x0, sigma0, {"popsize": 10})`` lands in ``popsize``."""
    with pytest.raises(TypeError, match=r"^popsize: .*got a dict: pycma's options dict"):
        cls(np.zeros(3), 0.5, {"popsize": 10, "maxfevals": 100})


@pytest.mark.parametrize("cls", [XNES, CholeskyNES])
def test_spectral_options_are_unknown_to_the_baselines(cls):
    with pytest.raises(TypeError, match=rf"^cayley: unknown option of {cls.name}"):
        cls(np.zeros(3), 1.0, cayley="exact")


def test_spectral_options_still_reach_the_spectral_search():
    es = nes.NES(np.zeros(3), 1.0, seed=0, cayley="neumann", jacobi=False)
    assert es.dist.jacobi is False


# Restart options are checked in a single run too -------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"incpopsize": 0.5}, ValueError, "^incpopsize: expected a number > 1"),
        ({"adapt": "yes"}, TypeError, "^adapt: expected a bool"),
    ],
)
def test_wrong_restart_option_raises_without_restarts(kwargs, error, match):
    """``restarts=0`` ignores ``incpopsize`` and ``adapt`` (nothing to restart), but a wrong
    value is a mistake the caller should hear of, as with ``restarts=1``."""
    calls = []
    with pytest.raises(error, match=match):
        nes.minimize(calls.append, np.zeros(3), 1.0, **kwargs)
    assert calls == []


# A float32 start: the asked points are rounded, still known as asked ------------------------


@pytest.mark.parametrize("x0", [np.zeros(4, dtype=np.float32), torch.zeros(4)], ids=type)
def test_float32_start_updates_with_its_own_samples(x0):
    """A float32 start (``torch.zeros(n)``'s default dtype) gets its points rounded to float32;
    ``tell`` took them for injected points (re-whitened from the rounded values, mirrored
    pairs broken, long ones clipped). With its own samples, and values that rank the rounded
    points as the float64 run's (a linear f), the state is bitwise that of the float64 start."""
    es32, es64 = nes.NES(x0, 1.0, seed=3), nes.NES(np.zeros(4), 1.0, seed=3)
    for _ in range(5):
        X32, X64 = es32.ask(), es64.ask()
        X32 = np.asarray(X32, dtype=np.float64)
        np.testing.assert_array_equal(X32, X64.astype(np.float32))
        es32.tell(X32.astype(np.float32), X32 @ np.arange(1.0, 5.0))
        es64.tell(X64, X64 @ np.arange(1.0, 5.0))
    assert torch.equal(es32.mean, es64.mean)
    assert torch.equal(es32.covariance(), es64.covariance())


# target: pycma's f <= ftarget ---------------------------------------------------------------


def test_target_is_reached_at_equality_on_an_integer_valued_function():
    """An integer-valued f with minimum 0 and ``target=0`` stops at the first 0 (pycma's
    ``f <= ftarget``); a strict test ran on to the budget and reported failure."""
    f = lambda x: float(np.sum(np.round(np.asarray(x)) ** 2))  # noqa: E731
    res = nes.minimize(f, np.full(3, 0.4), 1.0, target=0.0, seed=0, max_evals=5000, restarts=3)
    assert res.success and res.fun == 0.0 and f(res.x) == 0.0
    assert res.stop == {"ftarget": 0.0}
    assert res.nfev < 500


def test_one_mirrored_pair_is_refused():
    """popsize 2 with mirrored sampling: z and -z get opposite utilities and the same z z^T,
    so the covariance estimate is zero every generation (the shape never learns)."""
    with pytest.raises(ValueError, match="popsize: mirrored sampling needs an even popsize >= 4"):
        nes.NES(np.zeros(3), 1.0, popsize=2)
    es = nes.NES(np.zeros(3), 1.0, popsize=2, mirrored=False, seed=0)
    assert es.popsize == 2


def test_bipop_small_runs_never_go_below_the_smallest_mirrored_population():
    """BIPOP's small population ``lam0 (incpopsize / 2)^(u^2)`` can round to 2 (popsize 4,
    incpopsize 1.1); a mirrored run of 2 is refused, so the small run takes 4."""
    f = lambda x: float(np.sum(np.asarray(x) ** 2 + 10 * (1 - np.cos(2 * np.pi * np.asarray(x)))))  # noqa: E731
    res = nes.minimize(
        f, np.full(3, 3.0), 2.0, popsize=4, incpopsize=1.1, restarts=9, bipop=True, seed=0,
        max_evals=3000,
    )  # fmt: skip
    assert min(run["popsize"] for run in res.runs) == 4 and len(res.runs) > 2
