"""The DX-NES movement detection of ``es_rates.DXSchedule`` at large populations."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
