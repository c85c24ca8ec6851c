"""The DX-NES movement detection of ``es_rates.DXSchedule`` at large populations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifold_spectral.solvers.es_rates import DXSchedule
from manifold_spectral.solvers.nes import NES


def test_moving_threshold_is_dx_nes_at_the_default_population_and_higher_above():
    n = 10  # default population 4 + floor(3 ln 10) = 10
    assert DXSchedule.make(n, 10).moving == 1.0
    assert DXSchedule.make(n, 12).moving == 1.5
    sched = DXSchedule.make(n, 80)
    assert sched.state(1.2 * sched.chi) == 1  # stagnating, not moving
    assert sched.state(1.5 * sched.chi) == 0


@pytest.mark.parametrize("popsize", [80, 320])
def test_scale_does_not_drift_up_under_random_selection(popsize):
    """Pure-noise values rank the samples at random: the scale must random-walk without a
    drift (false *moving* generations with distance weights pushed it up ~e^3.5 per 100
    generations at lam = 80)."""
    n, logs = 10, []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        es = NES(np.zeros(n), 1.0, popsize, seed)
        for _ in range(100):
            X = es.ask()
            es.tell(X, rng.standard_normal(popsize))
        logs.append(math.log(es.dist.scale()))
    assert abs(float(np.mean(logs))) < 1.0, logs


def test_step_size_option_is_checked_and_csa_converges_on_the_sphere():
    with pytest.raises(ValueError, match="step_size"):
        NES(np.ones(4), 1.0, seed=0, step_size="cmsa")
    assert NES(np.ones(4), 1.0, seed=0).step_size == "dx"
    for cls_name in ("NES", "XNES", "CholeskyNES"):
        from manifold_spectral.solvers import cholesky_nes, xnes

        cls = {"NES": NES, "XNES": xnes.XNES, "CholeskyNES": cholesky_nes.CholeskyNES}[cls_name]
        es = cls(np.full(10, 3.0), 2.0, seed=1, step_size="csa", target=1e-10, max_evals=20_000)
        res = es.optimize(lambda X: (X * X).sum(1), vectorized=True)
        assert res.success, (cls_name, res.fun, res.stop)


def test_csa_keeps_the_scale_on_a_sharp_ridge_longer():
    """BBOB f13's collapse in miniature: on ``x_1^2 + 100 ||x_2..n||`` the xNES scale gradient
    shrinks every direction, the ridge one too, before the shape has learned the ridge;
    with CMA-ES's cumulative step-size rule in the non-moving phases the run gets further."""

    def ridge(X):
        return X[:, 0] ** 2 + 100 * np.sqrt((X[:, 1:] ** 2).sum(1))

    best = {}
    for rule in ("dx", "csa"):
        vals = []
        for seed in range(3):
            es = NES(np.full(10, 2.0), 2.0, seed=seed, step_size=rule, max_evals=20_000)
            vals.append(es.optimize(ridge, vectorized=True).fun)
        best[rule] = float(np.median(vals))
    assert best["csa"] < 1e-3 * best["dx"]  # seeds 0-2: median 5e-10 vs 0.18 (tolx)


@pytest.mark.parametrize("n, factor", [(4, 3.0), (10, 3.0), (15, 2.0), (20, 1.5), (60, 1.5)])
def test_moving_shape_defaults_and_validation(n, factor):
    """Spectral NES learns the shape with rank utilities while moving, at 3x the base rate
    up to n = 10 and 1.5x from n = 20 (``rank_moving_shape``); the baselines keep DX-NES's
    update; the other phases' rates are unchanged; anything else is refused by name."""
    from manifold_spectral.solvers.cholesky_nes import CholeskyNES
    from manifold_spectral.solvers.xnes import XNES

    x0 = np.full(n, 1.0)
    es = NES(x0, 0.5, seed=0)
    assert es.moving_shape == "rank"
    ref = DXSchedule.make(n, es.popsize, NES.STAGNATING_SHAPE)
    assert es.schedule.eta_B[0] == pytest.approx(ref.eta_B[0] * factor / 1.5)
    assert es.schedule.eta_B[1:] == ref.eta_B[1:]
    assert NES(x0, 0.5, seed=0, moving_shape="dx").schedule.eta_B == ref.eta_B
    for cls in (XNES, CholeskyNES):
        assert cls(x0, 0.5, seed=0).moving_shape == "dx"
    with pytest.raises(ValueError, match="moving_shape"):
        NES(x0, 0.5, moving_shape="distance")


def test_rank_shape_utilities_reach_the_update():
    """At equal rates, a run whose moving generations take the shape from the rank utilities
    leaves the distance-weighted run at its first moving generation, and only there."""
    from manifold_spectral.solvers import functions

    f = functions.RotatedEllipsoid(6, cond=1e2)
    runs = []
    for utilities in ("rank", "dx"):
        es = NES(np.full(6, 20.0), 0.5, seed=5)  # far from the minimum: moving soon
        es.moving_shape = utilities  # the rates stay those of "rank"
        phases = []
        for _ in range(20):
            X = es.ask()
            es.tell(X, f(X))
            phases.append((es.phase, es.dist.point.B.clone()))
        runs.append(phases)
    first_moving = next(i for i, (ph, _) in enumerate(runs[0]) if ph == "moving")
    for i, ((ph, Ba), (_, Bb)) in enumerate(zip(*runs, strict=True)):
        assert torch.equal(Ba, Bb) == (i < first_moving), (i, ph)
