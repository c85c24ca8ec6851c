"""NES rate rules that a mutation audit found unguarded: each test fails under the mutation
named in its docstring and checks values computed by hand from the documented formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import spd
from manifold_spectral.solvers.es_rates import DXSchedule, csa_rates
from manifold_spectral.solvers.nes import NES


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


def _csa_generation(path=None, path_s=None, n: int = 4) -> tuple[float, str]:
    """One ``step_size="csa"`` generation of ``NES`` at ``x0 = 0``, ``sigma0 = 1`` on the
    sphere ``|x|^2``, optionally from a given DX-NES path ``p`` or CSA path ``p_s``: the
    ratio of the geometric-mean scale after and before it, and the phase. Mirrored pairs
    ``+-delta`` have equal values, hence equal utilities: ``sum_i u_i z_i = 0`` and the mean
    shift is 0, so both paths only decay, and with ``eta_sigma = 0`` the shape step is
    traceless: the scale changes by the CSA factor alone."""
    es = NES(np.zeros(n), 1.0, seed=0, step_size="csa")
    if path is not None:
        es.path = es.path.new_tensor(path)
    if path_s is not None:
        es.path_s = es.path_s.new_tensor(path_s)
    X = es.ask()
    before = float(es.dist.scale())
    es.tell(X, (X * X).sum(1))
    return float(es.dist.scale()) / before, es.phase


def _csa_constants(n: int, lam: int) -> tuple[float, float, float, float]:
    """``(c_s, d_s, c1, chi)`` by hand: the xNES weights ``max(0, ln(lam/2 + 1) - ln i)``
    give ``mu_eff = (sum w)^2 / sum w^2``; CMA-ES's ``c_s``, ``d_s`` (times 1 / 0.85) and
    ``c1 = 2 / ((n + 1.3)^2 + mu_eff)``."""
    w = np.maximum(0.0, math.log(lam / 2 + 1) - np.log(np.arange(1, lam + 1)))
    mu_eff = w.sum() ** 2 / (w * w).sum()
    c_s = (mu_eff + 2) / (n + mu_eff + 5)
    d_s = (1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_s) / 0.85
    c1 = 2 / ((n + 1.3) ** 2 + mu_eff)
    chi = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
    return c_s, d_s, c1, chi


def test_csa_scale_factor_by_hand():
    """``step_size="csa"`` while the path is not moving: ``sigma <- sigma exp(min(1,
    c_s / d_s (|p_s| / E - 1) + c1 / 2 (|y|^2 / n - 1)))``. With both paths at 0 (the first
    generation on a mirrored symmetric function) that is ``exp(-c_s / d_s - c1 / 2)``, in
    the converging and (from a medium DX-NES path) the stagnating phase. Dividing by
    ``d_s`` as a product, doubling the rank-one trace term, dropping that term while not
    moving, or taking the CSA only while converging passed every other test."""
    n = 4
    c_s, d_s, c1, chi = _csa_constants(n, 8)  # the default population at n = 4
    want = math.exp(-c_s / d_s - c1 / 2)
    ratio, phase = _csa_generation()
    assert phase == "converging"
    assert ratio == pytest.approx(want, rel=1e-12)
    ratio, phase = _csa_generation(path=[0.5 * chi, 0.0, 0.0, 0.0])
    assert phase == "stagnating"
    assert ratio == pytest.approx(want, rel=1e-12)


def test_csa_grows_the_scale_by_at_most_e_per_generation():
    """A CSA path far longer than expected (``|p_s| = 100``, ``c_s / d_s (|p_s| / E - 1) >>
    1``) grows the scale by ``e`` exactly, pycma's ``exp(min(1, .))`` (a cap of 2 passed
    every other test)."""
    ratio, phase = _csa_generation(path_s=[100.0, 0.0, 0.0, 0.0])
    assert phase == "converging"
    assert ratio == pytest.approx(math.e, rel=1e-12)


def test_spd_minimize_stops_at_the_first_record_below_tol():
    """``spd.minimize(tol=...)`` stops at the first recorded iteration with ``f - f* < tol``:
    every earlier record has a gap of at least ``tol`` (stopping only below ``tol / 2`` passed
    every other test, which check only that the last gap is below ``tol``)."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    Q = A @ A.T / 6 + torch.eye(6, dtype=torch.float64)
    res = spd.minimize(spd.LogDet(Q), "spectral", lr=0.05, steps=2000, tol=1e-6)
    gaps = res.history["gap"]
    assert res.success and gaps[-1] < 1e-6
    assert min(gaps[:-1]) >= 1e-6


@pytest.mark.parametrize(("below", "stops"), [(1.5, True), (0.5, False)])
def test_spd_minimize_below_optimum_beyond_the_rounding(below, stops):
    """With ``tol``, a recorded ``f - f*`` below ``-r``, ``r = sqrt(eps) max(|f*|, |f(x0)|)``
    (the rounding of ``f``), stops the run as a failure (``f_star`` is wrong), one within
    ``r`` counts as converged. At the start ``f(I) = tr(I) = 2`` with ``f* = 2 + below r``
    (``r`` from ``f(x0)``: ``|f*|`` is larger by a relative 1e-8): 1.5 r below fails at
    iteration 0, 0.5 r converges there (a threshold of 2 r passed every other test)."""
    r = math.sqrt(torch.finfo(torch.float64).eps) * 2.0
    problem = spd.Objective(lambda S: torch.trace(S), 2, f_star=2.0 + below * r)
    res = spd.minimize(problem, "spectral", lr=1e-3, steps=3, tol=1e-3)
    assert res.nit == 0
    assert res.success != stops
    assert ("below" in res.message) == stops
