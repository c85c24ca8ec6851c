"""NES rate rules that a mutation audit found unguarded: each test fails under the mutation
named in its docstring and checks values computed by hand from the documented formulas."""

from __future__ import annotations

import math

import pytest

from manifold_spectral.solvers.es_rates import DXSchedule, csa_rates


def test_dx_schedule_phases_at_their_thresholds():
    """``DXSchedule.state``: moving when ``||p|| >= m chi``, stagnating when
    ``||p|| >= 0.1 chi``, else converging, with ``chi = sqrt(n) (1 - 1/(4n) + 1/(21 n^2))``
    and ``m = 1`` up to the default population (n = 10: 4 + floor(3 ln 10) = 10), 1.5 above.
    A stagnation threshold of 0.2 chi passed every other test."""
    n = 10
    chi = math.sqrt(n) * (1.0 - 1.0 / 40.0 + 1.0 / 2100.0)
    s = DXSchedule.make(n, 10)
    assert s.chi == pytest.approx(chi, rel=1e-15)
    assert [s.state(f * chi) for f in (1.0, 0.99, 0.15, 0.1, 0.099, 0.0)] == [0, 1, 1, 1, 2, 2]
    wide = DXSchedule.make(n, 12)  # above the default population: m = 1.5
    assert [wide.state(f * chi) for f in (1.5, 1.2, 0.15, 0.05)] == [0, 1, 1, 2]


def test_csa_rates_by_hand():
    """``csa_rates(n, mu_eff, lam)``: ``c_s = (mu_eff + 2) / (n + mu_eff + 5)``,
    ``d_s = (1 + 2 max(0, sqrt((mu_eff - 1) / (n + 1)) - 1) + c_s) / 0.85`` and
    ``chi sqrt(1 - mu_eff / lam)``. At n = 10, mu_eff = 3, lam = 10 the max term is 0; at
    mu_eff = 23, lam = 40 it is ``2 (sqrt(2) - 1)``. Dropping the 1 / 0.85 factor
    (``CSA_DAMPING_FACTOR``) passed every other test."""
    chi = math.sqrt(10) * (1.0 - 1.0 / 40.0 + 1.0 / 2100.0)
    c_s, d_s, expected = csa_rates(10, 3.0, 10)
    assert c_s == pytest.approx(5.0 / 18.0, rel=1e-15)
    assert d_s == pytest.approx((1.0 + 5.0 / 18.0) / 0.85, rel=1e-15)
    assert expected == pytest.approx(chi * math.sqrt(0.7), rel=1e-15)
    c_s, d_s, _ = csa_rates(10, 23.0, 40)
    assert c_s == pytest.approx(25.0 / 38.0, rel=1e-15)
    assert d_s == pytest.approx((1.0 + 2.0 * (math.sqrt(2.0) - 1.0) + 25.0 / 38.0) / 0.85)
