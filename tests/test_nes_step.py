"""``nes_step.spectral_update`` (the fast path of ``SpectralSearch.update``) is bitwise the
layered Gaussian / RGD update it replaces, over whole runs that visit every DX-NES state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral.solvers import functions
from manifold_spectral.solvers.nes import NES


def _runs(f, n: int, gens: int, **options):
    fast = NES(np.full(n, 2.0), 1.0, seed=11, **options)
    slow = NES(np.full(n, 2.0), 1.0, seed=11, **options)
    assert fast.dist.fast
    slow.dist.fast = False  # the layered path: REINFORCE -> Gaussian -> RGD -> retr
    phases = set()
    for _ in range(gens):
        X = fast.ask()
        assert np.array_equal(X, slow.ask())
        values = f(X)
        fast.tell(X, values)
        slow.tell(X, values)
        phases.add(fast.phase)
        assert torch.equal(fast.mean, slow.mean)
        assert torch.equal(fast.dist.point.d, slow.dist.point.d)
        assert torch.equal(fast.dist.point.B, slow.dist.point.B)
    return phases


@pytest.mark.parametrize(
    "n, states",
    [(3, {"moving", "stagnating", "converging"}), (12, {"moving", "stagnating"})],
)
def test_fast_update_is_bitwise_the_layered_one(n, states):
    assert _runs(functions.rosenbrock, n, 150) == states


def test_fast_update_is_bitwise_without_the_rank_one_term_and_with_fixed_rates():
    ell = functions.RotatedEllipsoid(6, cond=1e3)
    _runs(lambda X: ell(X), 6, 60, rank_one=False, adaptive_rates=False, distance_weights=False)


def test_fast_update_applies_only_where_it_is_bitwise():
    assert not NES(np.zeros(3), 1.0, dtype=torch.float32).dist.fast  # periodic re-orthogonalisation
    assert not NES(np.zeros(3), 1.0, cayley="neumann").dist.fast


def test_a_non_finite_fast_step_raises_and_commits_nothing():
    from manifold_spectral.solvers.nes_step import spectral_update

    es = NES(np.zeros(4), 1.0, seed=1)
    x, mu = es.dist.point, es.mean
    delta = torch.randn(8, 4, dtype=torch.float64)
    u = torch.tensor([1e308, -1e308] * 4, dtype=torch.float64)
    with pytest.raises(FloatingPointError):
        spectral_update(es.dist.manifold, x, mu, delta, u, 1.0, 1.0, 0.1)
    assert es.dist.point is x and torch.equal(x.B, torch.eye(4, dtype=torch.float64))
