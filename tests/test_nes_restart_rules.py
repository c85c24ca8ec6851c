"""Restarts that learn from why a run ended (``solvers.restart_rules``, ``RestartNES(adapt=)``):
CSA and independent (unmirrored) samples for the run after a plateau stop
(``tolflatfitness``), a four times slower stagnating scale rate for every run after a
``tolx`` stop (a kink or a sharp ridge), the stopped run's shape carried into the run after a
plateau stop, the first run untouched,
and ``adapt=False`` / caller-fixed settings left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral.manifolds.points import SpectralPoint
from manifold_spectral.solvers import nes, restart_rules
from manifold_spectral.solvers.nes import NES
from manifold_spectral.solvers.restarts import RestartNES

N = 4


def plateau(X: np.ndarray) -> np.ndarray:
    """A step function whose steps are wider than the start's spread: every sample of the
    first generations ties, so each run ends on ``tolflatfitness``."""
    return np.floor(np.sum(X * X, axis=1) / 1e3)


def cone(X: np.ndarray) -> np.ndarray:
    """``||x||``: the values change linearly with the step, so with ``tolfun = 0`` every run
    ends on ``tolx`` (a kink at the optimum)."""
    return np.linalg.norm(X, axis=1)


def test_a_plateau_stop_makes_the_next_run_use_csa_without_mirrored_samples():
    es = RestartNES(np.ones(N), 1.0, seed=0, restarts=2, max_evals=10_000)
    es.optimize(plateau, vectorized=True)
    stops = [r["stop"] for r in es.runs[:-1]] + [es.es.stop()]  # the last run's is live
    assert all("tolflatfitness" in stop for stop in stops) and len(stops) == 3
    rule = "step_size=csa, mirrored=False, shape carried"
    assert [r["adapt"] for r in es.runs] == ["", rule, rule]
    assert es.es.step_size == "csa" and es.es.mirrored is False
    first = nes.minimize(plateau, np.ones(N), 1.0, seed=0, vectorized=True, max_evals=10_000)
    assert first.stop == es.runs[0]["stop"] and first.nfev == es.runs[0]["nfev"]
    off = RestartNES(np.ones(N), 1.0, seed=0, restarts=2, max_evals=10_000, adapt=False)
    off.optimize(plateau, vectorized=True)
    assert [r["adapt"] for r in off.runs] == ["", "", ""] and off.es.step_size == "dx"
    assert off.es.mirrored is True
    # an explicit step_size or mirrored is the caller's choice for every run
    fixed = RestartNES(np.ones(N), 1.0, seed=0, restarts=1, max_evals=10_000, step_size="dx")
    fixed.optimize(plateau, vectorized=True)
    assert fixed.es.step_size == "dx" and fixed.runs[1]["adapt"] == "mirrored=False, shape carried"
    kept = RestartNES(np.ones(N), 1.0, seed=0, restarts=1, max_evals=10_000, mirrored=True)
    kept.optimize(plateau, vectorized=True)
    assert kept.es.mirrored is True and kept.runs[1]["adapt"] == "step_size=csa, shape carried"


def test_a_tolx_stop_slows_the_stagnating_scale_rate_of_every_later_run():
    opts = dict(tolx=1e-4, tolfun=0.0, max_evals=20_000)
    es = RestartNES(np.ones(N), 1.0, seed=0, restarts=2, **opts)
    es.optimize(cone, vectorized=True)
    stops = [r["stop"] for r in es.runs[:-1]] + [es.es.stop()]
    assert len(stops) == 3 and all("tolx" in stop for stop in stops)
    assert [r["adapt"] for r in es.runs] == ["", "scale rate / 4", "scale rate / 4"]
    plain = NES(np.ones(N), 1.0, popsize=es.es.popsize).schedule
    moving, stagnating, converging = es.es.schedule.eta_sigma
    assert moving == plain.eta_sigma[0] == 1.0 and converging == plain.eta_sigma[2]
    assert stagnating == pytest.approx(plain.eta_sigma[1] / restart_rules.TOLX_SCALE_DAMPING)
    # the first run is the plain run, bitwise
    first = nes.minimize(cone, np.ones(N), 1.0, seed=0, vectorized=True, **opts)
    assert es.runs[0]["nfev"] == first.nfev and es.runs[0]["stop"] == first.stop
    # fixed rates are the caller's
    fixed = RestartNES(np.ones(N), 1.0, seed=0, restarts=1, eta_sigma=0.5, **opts)
    fixed.optimize(cone, vectorized=True)
    assert fixed.runs[1]["adapt"] == ""


def test_the_tolx_rule_outlives_a_run_that_ends_otherwise():
    es = RestartNES(np.ones(N), 1.0, seed=0, restarts=3, tolx=1e-4, tolfun=0.0)
    while len(es.runs) == 1:  # run 1 on the cone: tolx
        X = es.ask()
        es.tell(X, cone(X))
    while len(es.runs) == 2:  # run 2 on a plateau: tolflatfitness
        X = es.ask()
        es.tell(X, np.zeros(len(X)))
    assert "tolx" in es.runs[0]["stop"] and "tolx" not in es.runs[1]["stop"]
    assert "tolflatfitness" in es.runs[1]["stop"]
    plateau_rule = "step_size=csa, mirrored=False"
    adapted = [r["adapt"] for r in es.runs]
    assert adapted == ["", "scale rate / 4", f"{plateau_rule}, scale rate / 4, shape carried"]


def test_adapt_is_checked_and_means_nothing_without_restarts():
    with pytest.raises(TypeError, match="adapt"):
        RestartNES(np.ones(N), 1.0, adapt="yes")
    a = nes.minimize(cone, np.ones(N), 1.0, seed=1, vectorized=True, max_evals=500, adapt=False)
    b = nes.minimize(cone, np.ones(N), 1.0, seed=1, vectorized=True, max_evals=500)
    np.testing.assert_array_equal(a.x, b.x)


def test_bipop_rules_read_the_runs_of_the_new_runs_own_regime():
    """A large run learns from the large runs only and a small run from the small runs only:
    the large runs here end on ``tolx`` (a cone), the small ones on plateaus (constant
    values), so the large runs after the first get the slower scale rate and never CSA, and
    the small runs get CSA after a small plateau run and never the slower scale rate."""
    es = RestartNES(np.ones(N), 1.0, seed=0, restarts=2, bipop=True, tolx=1e-4, tolfun=0.0)
    while not es.stop():
        X = es.ask()
        large = es.runs[-1]["regime"] == "large"
        es.tell(X, cone(X) if large else np.zeros(len(X)))
    stops = [r["stop"] for r in es.runs[:-1]] + [es.es.stop()]
    regimes = [r["regime"] for r in es.runs]
    assert regimes.count("large") == 3 and regimes.count("small") >= 2
    for regime, stop in zip(regimes, stops, strict=True):
        assert ("tolx" if regime == "large" else "tolflatfitness") in stop
    seen = {"large": 0, "small": 0}
    for r in es.runs:
        first = seen[r["regime"]] == 0
        seen[r["regime"]] += 1
        expected = {
            "large": "scale rate / 4",
            "small": "step_size=csa, mirrored=False, shape carried",
        }
        expected = expected[r["regime"]]
        assert r["adapt"] == ("" if first else expected), (regimes, [q["adapt"] for q in es.runs])


def test_bipop_small_runs_keep_even_populations_after_unmirrored_large_runs():
    """The large runs here end on plateaus (constant values), so every large run after the
    first samples without mirroring; the small runs (a cone, ending on ``tolx``) mirror and
    need even populations although the run before each of them did not mirror."""
    es = RestartNES(np.ones(N), 1.0, seed=0, restarts=4, bipop=True, tolx=1e-4, tolfun=0.0)
    while not es.stop():
        X = es.ask()
        large = es.runs[-1]["regime"] == "large"
        es.tell(X, np.zeros(len(X)) if large else cone(X))
    small = [r for r in es.runs if r["regime"] == "small"]
    large = [r for r in es.runs if r["regime"] == "large"]
    assert all(r["adapt"] == "step_size=csa, mirrored=False, shape carried" for r in large[1:])
    assert len(small) >= 3 and all(r["adapt"] == "" for r in small)
    assert all(r["popsize"] % 2 == 0 for r in small)
    assert any(r["popsize"] not in {q["popsize"] for q in large} for r in small)


def test_carried_shape_keeps_the_basis_and_the_new_scale_and_flattens_the_condition():
    """Hand-computed: precision eigenvalues ``(1, 1e4)`` (condition ``1e4``) flattened to the
    cap ``1e2`` are the square root of their ratio around the new geometric mean ``0.25``
    (``sigma0 = 2``): ``0.25 / 10`` and ``0.25 * 10``; a condition of ``4``, below the
    cap, keeps its ratio: ``0.125``, ``0.5``."""
    c, s = np.cos(0.3), np.sin(0.3)
    B = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    d_new = torch.full((2,), 0.25, dtype=torch.float64)

    def carried(d: list[float]) -> SpectralPoint:
        d_old = torch.tensor(d, dtype=torch.float64)
        return restart_rules.carried_shape(SpectralPoint(B, d_old), d_new, 1e2)

    steep = carried([1.0, 1e4])
    torch.testing.assert_close(steep.d, torch.tensor([0.025, 2.5], dtype=torch.float64))
    assert torch.equal(steep.B, B) and steep.B is not B
    torch.testing.assert_close(carried([3.0, 12.0]).d, torch.tensor([0.125, 0.5]).double())


def _second_run(f, restarts_options: dict) -> tuple[RestartNES, NES]:
    """Run ``f`` until the second run has started; the restarter and the finished first run."""
    es = RestartNES(np.full(N, 2.0), 1.0, seed=0, restarts=1, **restarts_options)
    while len(es.runs) == 1:
        first = es.es
        X = es.ask()
        es.tell(X, f(X))
    return es, first


def step_ellipsoid(X: np.ndarray) -> np.ndarray:
    """Unit steps of an ellipsoid of condition ``1e3``: a run learns part of its shape, then
    ends on ``tolflatfitness`` while its samples still straddle steps."""
    return np.floor(np.sum(X * X * np.array([1.0, 10.0, 100.0, 1000.0]), axis=1))


def test_a_plateau_stop_carries_the_shape_flattened_to_the_cap_and_rounding_ties_do_not():
    """After a step function's plateau the next run starts at its fresh ``x0`` and
    ``sigma0``'s scale with the stopped run's basis and its learned condition (above the cap
    here) brought down to ``CARRIED_CONDITION``, the order of the eigenvalues kept. A smooth
    minimum far from zero (``1e3 + ...``) run with ``tolx = tolfun = 0`` also ends on
    ``tolflatfitness``, once its values round to ties at a scale near ``sqrt(eps)``: a
    minimum, whose next run starts from a sphere, as after ``adapt=False``."""
    es, first = _second_run(step_ellipsoid, {})
    assert "tolflatfitness" in es.runs[0]["stop"] and es.runs[1]["adapt"].endswith("carried")
    np.testing.assert_array_equal(es.es.mean.numpy(), np.full(N, 2.0))  # the fresh start
    old, new = first.dist.point, es.es.dist.point
    assert torch.equal(new.B, old.B) and float(old.d.max() / old.d.min()) > 1e2
    assert float(new.d.max() / new.d.min()) == pytest.approx(restart_rules.CARRIED_CONDITION)
    np.testing.assert_array_equal(np.argsort(new.d.numpy()), np.argsort(old.d.numpy()))
    np.testing.assert_allclose(np.log(new.d.numpy()).mean(), 0.0, atol=1e-12)
    smooth = lambda X: 1e3 + np.sum(X * X * np.array([1.0, 4.0, 9.0, 16.0]), axis=1)  # noqa: E731
    es, first = _second_run(smooth, dict(tolx=0.0, tolfun=0.0))
    assert "tolflatfitness" in es.runs[0]["stop"] and first.dist.scale() < 1e-6
    assert es.runs[1]["adapt"] == "step_size=csa, mirrored=False"
    assert torch.equal(es.es.dist.point.B, torch.eye(N, dtype=torch.float64))
    off, _ = _second_run(step_ellipsoid, dict(adapt=False))
    assert torch.equal(off.es.dist.point.B, torch.eye(N, dtype=torch.float64))
