"""``blocks.second_order_angles``: the rotation that turns ``B`` to the eigenvectors of the
first-order step ``D' + E`` up to third-order terms (Jacobi angles with the new gaps plus each
pair's coupling through the other eigenvectors)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manifold_spectral import RGD, KroneckerSpectralSPD, SpectralPoint, SpectralSPD
from manifold_spectral.linalg import cayley_exact_apply, skew
from manifold_spectral.manifolds import DiagonalSPD, blocks
from manifold_spectral.solvers import spd
from manifold_spectral.solvers.spd import make_problems

DT = torch.float64


def _first_order_target(d: torch.Tensor, G: torch.Tensor, lr: float):
    """The rotation coordinates of the RGD step at ``lr`` and the dense first-order target
    ``D' + E`` it stands for, in the eigenbasis (``E = -2 lr D G D`` off the diagonal)."""
    X = -2.0 * lr * d[:, None] * G * d[None, :]
    d_new = d * torch.exp(X.diagonal() / d)
    M = -lr * blocks.rotation_natural_grad(d, G, 1e-12)
    return M, d_new, torch.diag(d_new) + X - torch.diag(X.diagonal())


def _eigenvectors_near_identity(T: torch.Tensor) -> torch.Tensor:
    _, V = torch.linalg.eigh(T)  # reference only
    return V * torch.sign(V.diagonal())


def test_third_order_accurate_where_the_jacobi_step_is_second_order():
    """Error of the new eigenvectors against ``eigh(D' + E)``: halving the step divides the
    Jacobi rotation's error by ~4 and this one's by ~8."""
    g = torch.Generator().manual_seed(0)
    n = 7
    d = torch.linspace(1.0, 3.0, n, dtype=DT)
    G = torch.randn(n, n, generator=g, dtype=DT)
    G = G + G.T
    eye = torch.eye(n, dtype=DT)
    err1, err2 = [], []
    for lr in (1e-3, 5e-4, 2.5e-4, 1.25e-4):
        M, d_new, T = _first_order_target(d, G, lr)
        V = _eigenvectors_near_identity(T)
        B1 = cayley_exact_apply(eye, skew(blocks.jacobi_angles(M)))
        B2 = cayley_exact_apply(eye, blocks.second_order_angles(d, d_new, M))
        err1.append(float((B1 - V).abs().max()))
        err2.append(float((B2 - V).abs().max()))
    for a, b in zip(err1[:-1], err1[1:], strict=True):
        assert 3.5 < a / b < 4.5, err1
    for a, b in zip(err2[:-1], err2[1:], strict=True):
        assert 7.0 < a / b < 9.0, err2
    assert err2[-1] < 0.05 * err1[-1]


@pytest.mark.parametrize("gap", [1.0, 1e-3, 0.0])
@pytest.mark.parametrize("off", [1e-3, 0.5])
def test_2x2_exact_with_the_new_gap(gap, off):
    """Two eigenvalues: no third eigenvector to couple through, and the angle uses the gap of
    the new eigenvalues, so ``D' + E`` is diagonalised (to float32 rounding) for any gap, also 0."""
    d = torch.tensor([1.5, 1.0], dtype=DT)
    d_new = torch.tensor([1.0 + gap, 1.0], dtype=DT)
    # M_10 encodes E_10 = 2 N_10 (d_0 - d_1) with N = Skew(M).
    M = torch.tensor([[0.0, 0.0], [off / (2 * 0.5), 0.0]], dtype=DT)
    E = skew(M) * (d[None, :] - d[:, None]) * 2
    T = torch.diag(d_new) + E
    B = cayley_exact_apply(torch.eye(2, dtype=DT), blocks.second_order_angles(d, d_new, M))
    R = B.T @ T @ B
    assert abs(float(R[0, 1])) < 1e-7 * float(T.abs().max())  # the angles are float32


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([0.5, 1.0, 1.0 + 1e-9, 2.0, 1e3]), min_size=2, max_size=7),
    st.floats(-8.0, 8.0),
    st.integers(0, 2**31 - 1),
)
def test_skew_finite_bounded_for_any_spectrum(values, log_scale, seed):
    """Repeated and far-apart eigenvalues, huge and tiny steps: the coordinates are exactly
    skew and finite, and every pair turns by at most pi/4 + the second-order bound."""
    n = len(values)
    g = torch.Generator().manual_seed(seed)
    d = torch.tensor(values, dtype=DT)
    G = torch.randn(n, n, generator=g, dtype=DT)
    G = G + G.T
    lr = 10.0**log_scale
    M = -lr * blocks.rotation_natural_grad(d, G, blocks.default_eig_tol(DT))
    d_new = d * torch.exp(-2 * lr * d * G.diagonal()).clamp(1e-300, 1e300)
    N = blocks.second_order_angles(d, d_new, M)
    assert torch.isfinite(N).all()
    assert torch.equal(N, -N.T)
    angle = 2 * torch.atan(N)
    assert float(angle.abs().max()) <= math.pi / 4 + blocks.SECOND_ORDER_MAX_ANGLE + 1e-12


def test_origin_and_zero_step_give_zero():
    """All eigenvalues equal (the identity): the Moore-Penrose step has no rotation; neither
    has this map (no 0/0), with equal or different new eigenvalues."""
    d = torch.ones(5, dtype=DT)
    M = torch.zeros(5, 5, dtype=DT)
    for d_new in (d, torch.linspace(0.5, 2.0, 5, dtype=DT)):
        assert torch.equal(blocks.second_order_angles(d, d_new, M), torch.zeros(5, 5, dtype=DT))


def test_rgd_first_order_equal_on_every_manifold():
    """``RGD(second_order=True)`` takes the same step to first order; the diagonal manifold
    has no rotation; flags are checked."""
    g = torch.Generator().manual_seed(1)
    for M in (
        SpectralSPD(4, dtype=DT),
        KroneckerSpectralSPD(2, 3, dtype=DT),
        DiagonalSPD(3, dtype=DT),
    ):
        x = M.random(g)
        egrad = torch.randn(M.egrad_shape, generator=g, dtype=DT)
        egrad = 0.5 * (egrad + egrad.T) if egrad.ndim == 2 else egrad
        lin, so = RGD(M, 1e-8).step(x, egrad), RGD(M, 1e-8, second_order=True).step(x, egrad)
        for a, b, a0 in zip(lin.leaves(), so.leaves(), x.leaves(), strict=True):
            moved = float((a - a0).abs().max())
            assert float((a - b).abs().max()) < 1e-4 * moved  # the difference is O(lr^2)
    with pytest.raises(TypeError, match="second_order"):
        RGD(SpectralSPD(3), 0.1, second_order=1)
    with pytest.raises(TypeError, match="second_order"):
        M = SpectralSPD(3, dtype=DT)
        M.retr(M.origin(), M.zero_tangent(M.origin()), second_order="no")


def test_batched_equals_loop_and_low_precision_runs():
    g = torch.Generator().manual_seed(2)
    k, n = 3, 5
    d = torch.rand(k, n, generator=g, dtype=DT) + 0.5
    G = torch.randn(k, n, n, generator=g, dtype=DT)
    G = G + G.mT
    M = -0.05 * blocks.rotation_natural_grad(d, G, 1e-12)
    d_new = d * 1.01
    N = blocks.second_order_angles(d, d_new, M)
    for i in range(k):
        torch.testing.assert_close(N[i], blocks.second_order_angles(d[i], d_new[i], M[i]))
    low = blocks.second_order_angles(d.bfloat16(), d_new.bfloat16(), M.bfloat16())
    assert low.dtype == torch.bfloat16 and bool(torch.isfinite(low).all())
    man = SpectralSPD(n, dtype=torch.float32)
    x = man.random(g)
    E = torch.randn(n, n, generator=g).float()
    y = RGD(man, 0.1, second_order=True).step(x, E + E.T)
    assert man.check_point(y)[0]


def test_spd_log_det_in_no_more_iterations_than_geoopt():
    """The seeded d = 60 log-det problem (condition 10, close eigenvalue pairs): with the
    second-order rotation (default of ``spd.minimize``) the spectral solver reaches 1e-6 in
    no more iterations than geoopt's retraction RGD, and in fewer than with the Jacobi
    angles alone."""
    problems, S0 = make_problems(60, seed=0, batch_size=20)
    p = problems["logdet"]
    x0 = SpectralSPD(60, dtype=DT).from_matrix(S0)
    runs = {
        "second": spd.minimize(p, "spectral", 0.05, 300, x0=x0, tol=1e-6),
        "jacobi": spd.minimize(p, "spectral", 0.05, 300, x0=x0, tol=1e-6, second_order=False),
        "geoopt": spd.minimize(p, "retraction", 0.05, 300, x0=S0, tol=1e-6),
    }
    assert all(r.success for r in runs.values())
    assert runs["second"].nit <= runs["geoopt"].nit
    assert runs["second"].nit < runs["jacobi"].nit
    with pytest.raises(ValueError, match="second_order"):
        spd.minimize(p, "spectral", 0.05, 2, jacobi=False)
    with pytest.raises(TypeError, match="second_order"):
        spd.minimize(p, "spectral", 0.05, 2, second_order="yes")
    assert isinstance(runs["second"].point, SpectralPoint)
