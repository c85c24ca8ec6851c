"""The evolution strategies read the values only through their ranks: ``f`` and ``g(f)`` for a
strictly increasing ``g`` give the same bits of every state (mean, precision or factor, paths,
phase, rates) and pick the same best point, generation after generation.

Guards the rule that every adaptation (fitness shaping, DX-NES phases and rates, distance
weights, CSA, the rank-one term, and any future step-size rule) is rank-based: a rule that
reads the values themselves (their spread, their rate of decrease) changes the run under
``g``. The stopping tests read the values (``tolfun``, ``tolflatfitness``), so the runs here are
driven by ask/tell for a fixed number of generations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifold_spectral.solvers.cholesky_nes import CholeskyNES
from manifold_spectral.solvers.nes import NES
from manifold_spectral.solvers.restarts import RestartNES
from manifold_spectral.solvers.xnes import XNES

N = 6
GENERATIONS = 120

# A rotation fixed by a seed (the ridge is not along a coordinate axis).
_Q = np.linalg.qr(np.random.default_rng(7).standard_normal((N, N)))[0]


def sharp_ridge(X: np.ndarray) -> np.ndarray:
    """BBOB f13's shape, ``z_1^2 + 100 ||z_2..n||`` with ``z = Q x``: the values change like
    the distance to the ridge, so a rule that reads their spread sees a kink."""
    Z = X @ _Q.T
    return Z[:, 0] ** 2 + 100.0 * np.linalg.norm(Z[:, 1:], axis=1)


def steps(X: np.ndarray) -> np.ndarray:
    """A step ellipsoid (BBOB f7's plateaus): many generations with tied values."""
    return np.floor(4.0 * (np.arange(1, N + 1) * X * X).sum(axis=1))


def ellipsoid(X: np.ndarray) -> np.ndarray:
    """A smooth ill-conditioned quadratic (the phases move, stagnate and converge)."""
    Z = X @ _Q.T
    return (10.0 ** np.linspace(0, 3, N) * Z * Z).sum(axis=1)


# Strictly increasing maps of values >= 0 that keep distinct float64 values distinct on the
# values these runs see: no offset that small values would be absorbed in (``v^3 + 1`` maps
# every ``v < 1e-6`` to ``1.0``, a tie that changes the ranks).
TRANSFORMS = {
    "scale": lambda v: 1e3 * v,
    "sqrt": np.sqrt,
    "cube": lambda v: v**3,
    "log": lambda v: np.log(v + 1e-300),
}


def _state(es) -> list[torch.Tensor]:
    return [es.mean, es.covariance(), es.path, es.path_c, es.path_s]


def _run_pair(cls, f, g, options) -> None:
    x0 = np.full(N, 1.5)
    a = cls(x0, 1.0, seed=3, **options)
    b = cls(x0, 1.0, seed=3, **options)
    for gen in range(GENERATIONS):
        Xa, Xb = a.ask(), b.ask()
        assert np.array_equal(Xa, Xb), f"generation {gen}: the samples differ"
        values = f(Xa)
        a.tell(Xa, values)
        b.tell(Xb, g(values))
        for sa, sb in zip(_state(a), _state(b), strict=True):
            assert torch.equal(sa, sb), f"generation {gen}: the state differs"
        assert (a.phase, a.rates) == (b.phase, b.rates), f"generation {gen}"
        assert np.array_equal(a.xbest, b.xbest), f"generation {gen}: another best point"


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("f", [sharp_ridge, steps, ellipsoid], ids=lambda f: f.__name__)
def test_spectral_nes_is_bitwise_invariant_to_increasing_maps(f, name):
    _run_pair(NES, f, TRANSFORMS[name], {})


@pytest.mark.parametrize("f", [sharp_ridge, steps], ids=lambda f: f.__name__)
def test_csa_and_baselines_are_bitwise_invariant(f):
    g = TRANSFORMS["sqrt"]
    _run_pair(NES, f, g, {"step_size": "csa"})
    _run_pair(XNES, f, g, {"adaptive_rates": True, "distance_weights": True})
    _run_pair(CholeskyNES, f, g, {})


def test_the_runs_visit_every_phase_and_tie():
    """The pairs above are not vacuous: over their generations the spectral runs move,
    stagnate and converge, and the step ellipsoid hands ``tell`` tied values."""
    phases = set()
    tied = 0
    for f in (sharp_ridge, steps, ellipsoid):
        es = NES(np.full(N, 1.5), 1.0, seed=3)
        for _ in range(GENERATIONS):
            X = es.ask()
            v = f(X)
            tied += int(np.unique(v).size < v.size)
            es.tell(X, v)
            phases.add(es.phase)
    assert phases == {"moving", "stagnating", "converging"}
    assert tied > 0
    assert math.isfinite(es.fbest)


@pytest.mark.parametrize(
    "f, rule",
    [(sharp_ridge, "scale rate / 4"), (steps, "shape carried")],
    ids=["sharp_ridge", "steps"],
)
def test_restarts_that_learn_from_the_stop_are_bitwise_invariant(f, rule):
    """IPOP restarts whose runs end on ``tolx`` (the ridge: a slower scale rate) or on
    ``tolflatfitness`` (the steps: CSA and the carried shape): with ``tolfun = 0`` every stop
    reads the values through comparisons only, so the whole sequence of runs is rank-based."""
    g = TRANSFORMS["cube"]
    options = dict(restarts=2, tolx=1e-6, tolfun=0.0, max_evals=6000)
    a = RestartNES(np.full(N, 1.5), 1.0, seed=3, **options)
    b = RestartNES(np.full(N, 1.5), 1.0, seed=3, **options)
    while not a.stop():
        Xa, Xb = a.ask(), b.ask()
        assert np.array_equal(Xa, Xb) and not b.stop()
        values = f(Xa)
        a.tell(Xa, values)
        b.tell(Xb, g(values))
        for sa, sb in zip(_state(a.es), _state(b.es), strict=True):
            assert torch.equal(sa, sb), f"generation {a.countiter}: the state differs"
    assert b.stop() and a.runs == b.runs
    assert any(rule in r["adapt"] for r in a.runs)
