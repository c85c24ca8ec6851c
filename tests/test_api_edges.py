"""Public helpers at their edges, found by an outside tester: the gradient checker on small
and constant objectives, the Neumann map's bound, random_spd's spectrum, the shape checks of
nearest_kronecker_factors and the diagnostics, integer padded sizes."""

from __future__ import annotations

import math

import pytest
import torch

from manifold_spectral import SpectralSPD, diagnostics, linalg
from manifold_spectral.manifolds import KroneckerSpectralSPD
from manifold_spectral.solvers import check, spd

DT = torch.float64


def _logdet(scale: float) -> spd.Objective:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=DT)
    Q = A @ A.T / 4 + torch.eye(4, dtype=DT)
    return spd.Objective(
        lambda S: scale * ((S * Q).sum() - torch.logdet(S)),
        4,
        grad=lambda S: scale * (Q - torch.linalg.inv(S)),
    )


@pytest.mark.parametrize("scale", [1.0, 1e-11, 1e-13])
def test_check_gradient_passes_a_right_gradient_at_any_scale(scale):
    assert check.check_gradient(_logdet(scale)).ok


def test_check_gradient_fails_a_wrong_gradient_at_a_small_scale():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=DT)
    Q = A @ A.T / 4 + torch.eye(4, dtype=DT)
    wrong = spd.Objective(
        lambda S: 1e-13 * ((S * Q).sum() - torch.logdet(S)),
        4,
        grad=lambda S: 2e-13 * (Q - torch.linalg.inv(S)),  # twice the gradient
    )
    assert not check.check_gradient(wrong).ok


def test_check_gradient_passes_a_constant_objective_and_checks_window():
    assert check.check_gradient(spd.Objective(lambda S: 0 * S.sum() + 3.0, 4)).ok
    for bad in (0, 1, 2, -1, 2.5):
        with pytest.raises(ValueError, match="^window:"):
            check.check_gradient(_logdet(1.0), window=bad)


@pytest.mark.parametrize("bad", [-0.25, 0.0, math.nan, math.inf])
def test_cayley_neumann_refuses_a_bound_that_is_not_positive(bad):
    N = linalg.skew(torch.randn(5, 5, dtype=DT) * 0.1)
    with pytest.raises(ValueError, match="^max_norm:"):
        linalg.cayley_neumann(N, max_norm=bad)


def test_random_spd_keeps_its_spectrum_and_checks_decades():
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(linalg.random_spd(1, 3.0, g), torch.ones(1, 1, dtype=DT))
    for bad in (math.nan, -2.0, math.inf):
        with pytest.raises(ValueError, match="^decades:"):
            linalg.random_spd(3, bad, g)


def test_shapes_are_named_by_the_helpers_and_diagnostics():
    with pytest.raises(ValueError, match=r"^S: expected shape \(8, 8\)"):
        linalg.nearest_kronecker_factors(torch.eye(6, dtype=DT), 2, 4)
    M = SpectralSPD(4, DT)
    x = M.random(torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="^x: not a point"):
        diagnostics.check_metric(M, SpectralSPD(5, DT).origin())
    with pytest.raises(ValueError, match="^egrad: expected shape"):
        diagnostics.check_natural_gradient(M, x, torch.eye(5, dtype=DT))


@pytest.mark.parametrize("sizes", [[(2.5, 3), (1, 1)], [(2, 3.9), (1, 1)], [(True, 3), (1, 1)]])
def test_padded_sizes_must_be_integers(sizes):
    with pytest.raises(ValueError, match="^sizes:"):
        KroneckerSpectralSPD(4, 3, DT, batch=2, sizes=sizes)
