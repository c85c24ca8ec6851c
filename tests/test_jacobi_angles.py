"""``blocks.jacobi_angles``: the retraction that turns each eigenvector pair by its exact 2 x 2
Jacobi angle (first-order equal to the chart step, bounded at near-repeated eigenvalues)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manifold_spectral import RGD, KroneckerSpectralSPD, SpectralPoint, SpectralSPD
from manifold_spectral.manifolds import DiagonalSPD, blocks

DT = torch.float64
BOUND = math.tan(math.pi / 8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=12))
def test_odd_increasing_bounded(values):
    x = torch.tensor(sorted(values), dtype=DT)
    y = blocks.jacobi_angles(x)
    assert torch.all(y.abs() <= BOUND + 1e-15)
    torch.testing.assert_close(blocks.jacobi_angles(-x), -y, rtol=0, atol=0)
    assert torch.all(torch.diff(y) >= 0)


def test_first_order_identity():
    """``J(M) = M - 5 M^3 + O(M^5)`` near 0: the same RGD direction as the chart step."""
    for h in (1e-2, 1e-3, 1e-4):
        x = torch.tensor(h, dtype=DT)
        err = float(blocks.jacobi_angles(x) - x)
        assert abs(err + 5 * h**3) < 100 * h**5
    x = torch.tensor(0.0, dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(blocks.jacobi_angles(x), x)
    assert float(g) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("gap", [1.0, 1e-2, 1e-6])
@pytest.mark.parametrize("off", [1e-3, 0.3, 5.0])
def test_2x2_step_diagonalises_the_first_order_update(gap, off):
    """On a 2 x 2 block the Jacobi step's new eigenvectors diagonalise ``S + V`` exactly (``V``
    the first-order update, off-diagonal ``-2 lr d_1 d_2 e``), whatever the gap; the linearised
    Cayley step does so only while ``|c| << gap``."""
    M = SpectralSPD(2, dtype=DT)
    d = torch.tensor([1.0 + gap, 1.0], dtype=DT)
    x = SpectralPoint(torch.eye(2, dtype=DT), d)
    lr = 0.1
    e = off / (2 * lr * float(d[0] * d[1]))
    E = torch.tensor([[0.0, e], [e, 0.0]], dtype=DT)
    target = torch.diag(d) + torch.tensor([[0.0, -off], [-off, 0.0]], dtype=DT)
    B = RGD(M, lr, jacobi=True).step(x, E).B
    R = B.T @ target @ B
    assert abs(float(R[0, 1])) < 1e-12 * float(target.abs().max())
    if off / gap > 1:
        B_lin = RGD(M, lr).step(x, E).B
        assert abs(float((B_lin.T @ target @ B_lin)[0, 1])) > 1e-3 * off


def test_flag_on_every_manifold():
    """RGD passes ``jacobi`` to every manifold's ``retr``; the diagonal one has no rotation."""
    g = torch.Generator().manual_seed(0)
    for M in (
        SpectralSPD(4, dtype=DT),
        KroneckerSpectralSPD(2, 3, dtype=DT),
        DiagonalSPD(3, dtype=DT),
    ):
        x = M.random(g)
        egrad = torch.randn(M.egrad_shape, generator=g, dtype=DT)
        egrad = 0.5 * (egrad + egrad.T) if egrad.ndim == 2 else egrad
        lin, jac = RGD(M, 1e-6).step(x, egrad), RGD(M, 1e-6, jacobi=True).step(x, egrad)
        for a, b in zip(lin.leaves(), jac.leaves(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)  # first-order equal
    with pytest.raises(TypeError, match="jacobi"):
        RGD(SpectralSPD(3), 0.1, jacobi=1)
    with pytest.raises(TypeError, match="jacobi"):
        M = SpectralSPD(3, dtype=DT)
        M.retr(M.origin(), M.zero_tangent(M.origin()), jacobi="no")


def test_neumann_rgd_converges_where_the_clipped_linear_angle_cycled():
    """f(S) = tr(SQ) - log det S from a random start with two close eigenvalues on the way:
    the Neumann map's trust radius turned the linearised angle ~ 1 / gap into the same
    overshooting rotation every step (f - f* stuck at 3.3e-2 after 600 steps at lr 0.1);
    RGD's default with the Neumann map takes the Jacobi angles and converges like the exact
    map. Explicit jacobi=False keeps the paper's chart step."""
    torch.manual_seed(0)
    n = 6
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    Q = A @ A.T / n + 0.5 * torch.eye(n, dtype=torch.float64)
    M = SpectralSPD(n, dtype=torch.float64)
    x0 = M.random(gen)
    f_star = n + float(torch.logdet(Q))
    for cayley in ("exact", "neumann"):
        opt, x = RGD(M, lr=0.1, cayley=cayley), x0
        for _ in range(300):
            x = opt.step(x, Q - M.power(x, -1.0))
        gap = float((M.to_matrix(x) * Q).sum() - M.logdet(x)) - f_star
        assert abs(gap) < 1e-10, (cayley, gap)
    assert RGD(M, lr=0.1, cayley="neumann").jacobi and not RGD(M, lr=0.1).jacobi
    assert not RGD(M, lr=0.1, cayley="neumann", jacobi=False).jacobi
