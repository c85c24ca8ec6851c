"""``nes_step.spectral_update`` (the closed-form fast path of ``SpectralSearch.update``)
computes the layered Gaussian / RGD update it replaces, up to rounding.

The two paths round differently, so whole runs drift apart (the dynamics are chaotic); the
tests compare one generation from the same state, at states taken along runs that visit
every DX-NES state, and the first generations of runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import functions
from manifold_spectral.solvers.nes import NES


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return float((a - b).abs().max()) <= rtol * float(b.abs().max())


def _one_generation_agrees(es: NES, X: np.ndarray, values: np.ndarray) -> None:
    """Tell a copy of ``es`` through each path; both new states must agree to rounding."""
    slow = copy.deepcopy(es)
    slow.dist.fast = False  # the layered path: REINFORCE -> Gaussian -> RGD -> retr
    es.tell(X, values)
    slow.tell(X, values)
    assert es.phase == slow.phase
    assert _close(es.mean, slow.mean, 1e-12)
    assert _close(es.dist.point.d, slow.dist.point.d, 1e-12)
    assert _close(es.dist.point.B, slow.dist.point.B, 1e-10)


@pytest.mark.parametrize(
    "n, states",
    [(3, {"moving", "stagnating", "converging"}), (12, {"moving", "stagnating"})],
)
def test_fast_update_agrees_with_the_layered_one_along_a_run(n, states):
    es = NES(np.full(n, 2.0), 1.0, seed=11)
    assert es.dist.fast
    seen = set()
    for _ in range(150):
        X = es.ask()
        _one_generation_agrees(es, X, functions.rosenbrock(X))
        seen.add(es.phase)
    assert seen == states


def test_fast_update_agrees_without_the_rank_one_term_and_with_fixed_rates():
    ell = functions.RotatedEllipsoid(6, cond=1e3)
    es = NES(np.full(6, 2.0), 1.0, seed=3, rank_one=False, adaptive_rates=False)
    for _ in range(60):
        X = es.ask()
        _one_generation_agrees(es, X, ell(X))


def test_fast_update_agrees_with_rank_shape_utilities_while_moving():
    es = NES(np.full(6, 2.0), 1.0, seed=7, moving_shape="rank")
    seen = set()
    for _ in range(80):
        X = es.ask()
        _one_generation_agrees(es, X, functions.rosenbrock(X))
        seen.add(es.phase)
    assert "moving" in seen


def test_rank_shape_keeps_the_scale_and_the_mean_of_the_distance_weights():
    from manifold_spectral.solvers.es_search import whitened_natural_gradient

    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 5, generator=g, dtype=torch.float64)
    u, u_s = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    step, g_sigma = whitened_natural_gradient(z, u, 0.1, u_shape=u_s)
    ref, ref_sigma = whitened_natural_gradient(z, u, 0.1)
    shape, _ = whitened_natural_gradient(z, u_s, 0.1)
    assert g_sigma == ref_sigma
    assert torch.allclose(step, shape, rtol=0, atol=1e-14)


def test_fast_and_layered_runs_agree_for_the_first_generations():
    fast = NES(np.full(8, 2.0), 1.0, seed=5)
    slow = NES(np.full(8, 2.0), 1.0, seed=5)
    slow.dist.fast = False
    # Rounding differences grow (rotations divide by eigenvalue gaps), so only the first 10
    # generations are compared; a wrong formula differs at the first.
    for _ in range(10):
        X = fast.ask()
        Y = slow.ask()
        assert np.abs(X - Y).max() <= 1e-6 * np.abs(Y).max()
        fast.tell(X, functions.rosenbrock(X))
        slow.tell(Y, functions.rosenbrock(Y))


def test_fast_update_applies_only_where_it_is_the_layered_step():
    assert not NES(np.zeros(3), 1.0, dtype=torch.float32).dist.fast  # periodic re-orthogonalisation
    assert not NES(np.zeros(3), 1.0, cayley="neumann").dist.fast


def test_a_non_finite_fast_step_raises_and_commits_nothing():
    from manifold_spectral.solvers.nes_step import SpectralStep

    es = NES(np.zeros(4), 1.0, seed=1)
    B, d = es.dist.point.B.numpy().copy(), es.dist.point.d.numpy().copy()
    z = np.random.default_rng(0).standard_normal((8, 4))
    u = np.array([1e308, -1e308] * 4)
    step = SpectralStep(es.dist.manifold)
    with pytest.raises(FloatingPointError):
        step(B, d, np.zeros(4), z, z, u, 1.0, 1.0, 0.1)
    assert np.array_equal(B, np.eye(4)) and np.array_equal(d, np.ones(4))
    X = es.ask()
    es.tell(X, np.where(np.arange(8) % 2, 1e308, -1e308) * np.inf)  # +-inf: ranked, finite u
    assert "numerical" not in es.stop()


def test_rank_utilities_rank_minus_inf_worst_without_ties():
    # The no-tie fast path of rank_utilities must map -inf (and NaN) to the worst rank.
    from manifold_spectral.solvers.nes import rank_utilities, utility_weights

    base = utility_weights(4)[1]  # per rank, best first
    u = rank_utilities([1.0, -np.inf, 0.0, 2.0], base)
    expected = np.array([base[1], base[3], base[0], base[2]])
    assert np.allclose(u, expected - expected.mean(), rtol=0, atol=1e-15)
    u = rank_utilities([np.nan, 5.0, -1.0, 7.0], base)
    expected = np.array([base[3], base[1], base[0], base[2]])
    assert np.allclose(u, expected - expected.mean(), rtol=0, atol=1e-15)


def test_the_best_point_is_the_first_of_tied_best_values():
    es = NES(np.zeros(3), 1.0, seed=2, popsize=4)
    X = es.ask()
    es.tell(X, np.array([3.0, 1.0, 2.0, 1.0]))
    assert es.fbest == 1.0 and es.evals_best == 2
    assert np.array_equal(es.result.x, X[1])


def test_fast_update_agrees_with_the_layered_one_with_linear_rotations():
    # jacobi=False: the linearised angles of the paper's chart step (the former default).
    es = NES(np.full(6, 2.0), 1.0, seed=4, jacobi=False)
    assert es.dist.fast and not es.dist.jacobi
    for _ in range(60):
        X = es.ask()
        _one_generation_agrees(es, X, functions.rosenbrock(X))


@pytest.mark.parametrize("fast", [True, False])
def test_near_repeated_eigenvalues_turn_by_their_jacobi_angle_not_by_pi(fast):
    # Off-diagonal curvature between two nearly equal eigenvalues: the linearised angle
    # 2 atan(eta c / (2 gap)) is ~pi (a sign flip of both vectors: the curvature is lost
    # and the eigenvalues can never split); the 2 x 2 eigenproblem turns them by ~45 deg.
    from manifold_spectral.manifolds import SpectralPoint

    es = NES(np.zeros(2), 1.0, seed=12)
    es.dist.point = SpectralPoint(
        torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 1.0 + 1e-6], dtype=torch.float64)
    )
    es.dist.fast = fast
    X = es.ask()
    es.tell(X, X[:, 0] * X[:, 1])  # a saddle along the diagonals
    B = es.dist.point.B
    assert abs(abs(float(B[0, 0])) - 2**-0.5) < 1e-3 and abs(abs(float(B[1, 0])) - 2**-0.5) < 1e-3
    linear = NES(np.zeros(2), 1.0, seed=12, jacobi=False)
    linear.dist.point = SpectralPoint(
        torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 1.0 + 1e-6], dtype=torch.float64)
    )
    linear.dist.fast = fast
    Y = linear.ask()
    linear.tell(Y, Y[:, 0] * Y[:, 1])
    assert abs(abs(float(linear.dist.point.B[0, 0])) - 1.0) < 1e-3  # turned by ~pi: no mixing
