"""One property suite for every spectral manifold (geoopt-style case generators).

Each manifold enters through a :class:`Case` in ``CASES``: how to build it for a size ``n``,
a dtype and a Cayley variant, and how to read its rotation factors (orthogonal) and eigenvalue
factors (positive) out of a point. Every property below runs over every case; adding
``KroneckerSpectralSPD`` is one more ``Case`` (its ``build`` picks ``a x b`` factors from ``n``
with ``kronecker_sizes``, ``rotations`` returns ``[x.left.B, x.right.B]``, ``positives``
``[x.alpha.reshape(1), x.left.d, x.right.d]``).

Random points, gradients and tangents come from ``torch.Generator`` seeds drawn by hypothesis,
so failures are reproducible from the printed seed.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _invariants import (
    CASES,
    F64,
    FAST,
    ROTATION_CASES,
    SLOW,
    assert_valid,
    dense_size,
    neumann_defect_bound,
    objective,
    random_egrad,
    random_spd,
    random_tangent,
    seeds,
    setup,
    sizes,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import manifold_spectral as ms
from manifold_spectral.linalg import orthogonality_error

# One retraction step ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@FAST
@given(
    n=sizes,
    seed=seeds,
    lr=st.floats(1e-3, 1.0),
    scale=st.floats(1e-2, 10.0),
)
def test_natural_gradient_step_is_a_point(case, cayley, n, seed, lr, scale):
    manifold, x, gen = setup(case, n, seed, cayley=cayley)
    egrad = random_egrad(manifold, gen, scale)
    nat = manifold.natural_gradient(x, egrad)
    x_new = manifold.retr(x, -nat, lr)
    # The full check_point tolerance (~1e-10 in float64) is documented to need a
    # reorthogonalisation after Neumann steps; the update paths' probe must accept them.
    assert_valid(manifold, case, x_new, fast=cayley == "neumann")
    for B_old, B in zip(case.rotations(x), case.rotations(x_new), strict=True):
        err = float(orthogonality_error(B))
        if cayley == "exact":
            # The LU solve's rounding grows like eps * ||N||: 1e-12 holds for every step with
            # ||Skew(lr M)||_F up to ~100; huge rotations (a close eigenvalue pair hit by a
            # large step) get the proportional bound.
            norms = [float(torch.linalg.matrix_norm(lr * t)) for t in case.rotation_steps(nat)]
            assert err < max(1e-12, 1e-15 * dense_size(manifold, x) * max(norms, default=0.0))
        else:
            # Cayley(N)(I - N^6): defect <= 2 rho^6 + rho^12 on top of the old one.
            old = float(orthogonality_error(B_old))
            assert err <= old + neumann_defect_bound(manifold) + 1e-13
    if cayley == "neumann":
        assert_valid(manifold, case, manifold.reorthogonalize(x_new, steps=2))


# Many RGD steps ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@SLOW
@given(n=sizes, seed=seeds)
def test_many_rgd_steps_keep_orthogonality(case, cayley, n, seed):
    """Default RGD (``reorthogonalize_every="auto"``: with Neumann, a Newton-Schulz step every
    ``opt.reorthogonalize_every`` steps)."""
    manifold, x, gen = setup(case, n, seed, cayley=cayley)
    Q = random_spd(dense_size(manifold, x), gen)
    opt = ms.RGD(manifold, lr=0.1)
    f0, _ = objective(manifold, x, Q)
    steps = 200
    for _ in range(steps):
        _, egrad = objective(manifold, x, Q)
        x = opt.step(x, egrad)
        # Drift never exceeds one reorthogonalisation period's worth of Neumann defects.
        for B in case.rotations(x):
            err = float(orthogonality_error(B))
            if cayley == "exact":
                assert err < 1e-12
            else:
                period = opt.reorthogonalize_every
                assert err <= (period + 1) * neumann_defect_bound(manifold)
    assert_valid(manifold, case, x, fast=cayley == "neumann")
    assert objective(manifold, x, Q)[0] < f0
    x = manifold.reorthogonalize(x, steps=3)
    assert_valid(manifold, case, x)
    assert all(float(orthogonality_error(B)) < 1e-12 for B in case.rotations(x))


@pytest.mark.parametrize("case", ROTATION_CASES, ids=str)
@SLOW
@given(n=st.integers(2, 8), seed=seeds)
def test_neumann_drift_is_bounded_and_reorthogonalize_restores(case, n, seed):
    """Chart steps by ``retr`` only (no point validation in between): the drift after k
    Neumann steps is at most k (2 rho^6 + rho^12), and Newton-Schulz removes it."""
    manifold, x, gen = setup(case, n, seed, cayley="neumann")
    Q = random_spd(dense_size(manifold, x), gen)
    steps = 200
    for _ in range(steps):
        _, egrad = objective(manifold, x, Q)
        # lr = 0.1: large rotation steps early on (clipped to rho), so the drift is visible;
        # lr = 0.2 overshot this objective into overflow on a Kronecker draw (n = 6, seed 156:
        # a NaN gradient at step 2), lr >= 0.5 on many.
        x = manifold.retr(x, -manifold.natural_gradient(x, egrad), 0.1)
    assert x.is_finite()
    for B in case.rotations(x):
        assert float(orthogonality_error(B)) <= steps * neumann_defect_bound(manifold)
    # Newton-Schulz squares the defect each step: four steps from any drift below ~0.1.
    x = manifold.reorthogonalize(x, steps=4)
    assert_valid(manifold, case, x)
    for B in case.rotations(x):
        assert float(orthogonality_error(B)) < 1e-12


# Chart, vectors, metric --------------------------------------------------------------------


def assert_same_point(x: Any, y: Any, atol: float = 0.0) -> None:
    for a, b in zip(x.leaves(), y.leaves(), strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=str)
@FAST
@given(n=sizes, seed=seeds)
def test_chart_origin_vectors_and_metric(case, n, seed):
    manifold, x, gen = setup(case, n, seed)
    assert_same_point(manifold.chart(x)(manifold.zero_tangent(x)), x, atol=1e-15)

    vec = torch.randn(manifold.dim, generator=gen, dtype=F64)
    torch.testing.assert_close(manifold.to_vector(manifold.from_vector(vec)), vec, rtol=0, atol=0)
    nat = manifold.natural_gradient(x, random_egrad(manifold, gen))
    scale = max(float(t.abs().max()) for t in nat.leaves())
    atol = 4 * torch.finfo(F64).eps * scale if case.sum_zero_m else 0.0
    assert_same_point(manifold.from_vector(manifold.to_vector(nat)), nat, atol=atol)
    assert manifold.to_vector(nat).shape == (manifold.dim,)

    u = random_tangent(manifold, gen)
    assert float(manifold.inner(x, u, u)) >= 0.0
    # F^+ grad: <grad, F^+ grad> (Euclidean, in the chart) = <F^+ grad, F^+ grad>_F.
    egrad = random_egrad(manifold, gen)
    nat = manifold.natural_gradient(x, egrad)
    loc = manifold.local_gradient(x, egrad)
    # A covector pairs with a vector through ``covector_to_vector`` (the Kronecker chart's
    # sum-zero ``m`` makes the free components ``g_i - g_last``; elsewhere it is ``to_vector``).
    dot = manifold.covector_to_vector(loc) @ manifold.to_vector(nat)
    torch.testing.assert_close(manifold.inner(x, nat, nat), dot, rtol=1e-10, atol=1e-12)


# Descent -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@FAST
@given(n=sizes, seed=seeds)
def test_small_rgd_step_decreases_logdet_objective(case, n, seed):
    """f(S) = tr(S Q) - logdet S decreases by ~ lr <grad, F^+ grad> for a small step."""
    manifold, x, gen = setup(case, n, seed)
    Q = random_spd(dense_size(manifold, x), gen)
    f0, egrad = objective(manifold, x, Q)
    nat = manifold.natural_gradient(x, egrad)
    loc = manifold.covector_to_vector(manifold.local_gradient(x, egrad))
    slope = float(loc @ manifold.to_vector(nat))
    assert slope >= 0.0
    # Chart step of size <= 1e-4 in every coordinate.
    lr = 1e-4 / (1.0 + float(manifold.to_vector(nat).abs().max()))
    x_new = ms.RGD(manifold, lr=lr).step(x, egrad)
    f1, _ = objective(manifold, x_new, Q)
    decrease = float(f0 - f1)
    assert decrease > 0.0
    assert math.isclose(decrease, lr * slope, rel_tol=0.05, abs_tol=1e-12)


# Dense matrix functions ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@FAST
@given(
    n=sizes,
    seed=seeds,
    a=st.floats(-1.5, 1.5),
    b=st.floats(-1.5, 1.5),
    k=st.integers(1, 3),
)
def test_matrix_functions(case, n, seed, a, b, k):
    manifold, x, gen = setup(case, n, seed)
    S = manifold.to_matrix(x)
    size = S.shape[-1]
    torch.testing.assert_close(S, S.T, rtol=0, atol=1e-12 * float(S.abs().max()))
    assert float(torch.linalg.eigvalsh(0.5 * (S + S.T)).min()) > 0.0

    Pa, Pb, Pab = manifold.power(x, a), manifold.power(x, b), manifold.power(x, a + b)
    scale = float(torch.linalg.matrix_norm(Pa, 2) * torch.linalg.matrix_norm(Pb, 2))
    torch.testing.assert_close(Pa @ Pb, Pab, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(manifold.power(x, 1.0), S, rtol=1e-12, atol=1e-12)

    for v in (
        torch.randn(size, generator=gen, dtype=F64),
        torch.randn(size, k, generator=gen, dtype=F64),
    ):
        torch.testing.assert_close(
            manifold.apply_power(x, v, a), Pa @ v, rtol=1e-10, atol=1e-12 * (1 + scale)
        )
    torch.testing.assert_close(manifold.logdet(x), torch.logdet(S), rtol=1e-10, atol=1e-10)


# Gaussian -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("root", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
@settings(max_examples=5, deadline=None)
@given(n=sizes, seed=seeds, beta2=st.floats(1e-3, 0.5))
def test_gaussian_gop_step_keeps_a_point(case, gamma, root, exponential, n, seed, beta2):
    manifold, x, gen = setup(case, n, seed)
    size = dense_size(manifold, x)
    mu = torch.randn(size, generator=gen, dtype=F64)
    g = torch.randn(size, generator=gen, dtype=F64)
    mu0, x0, g0 = mu.clone(), x.clone(), g.clone()
    family = ms.Gaussian(
        manifold, beta1=0.1, beta2=beta2, gamma=gamma, root=root, exponential=exponential
    )
    mu_new, x_new = family.step(mu, x, g)
    assert_valid(manifold, case, x_new)
    assert bool(torch.isfinite(mu_new).all())
    # Inputs are not modified.
    assert torch.equal(mu, mu0) and torch.equal(g, g0)
    assert_same_point(x, x0)
    # Mean step uses the new precision: mu - beta1 S_new^(-1/p) g.
    torch.testing.assert_close(
        mu_new, mu - 0.1 * manifold.power(x_new, -1.0 / root) @ g, rtol=1e-10, atol=1e-12
    )
    if exponential == "truncated" and len(case.rotations(x)) <= 1:
        # Paper Fig. 5 (single-factor manifolds):
        # d <- (1 - gamma beta2) d + beta2 diag(B^T g g^T B) (> 0).
        d = case.positives(x)[-1]
        q = case.rotations(x)[0].T @ g if case.rotations(x) else g
        expected = (1 - gamma * beta2) * d + beta2 * q * q
        torch.testing.assert_close(case.positives(x_new)[-1], expected, rtol=1e-10, atol=1e-14)


# Low precision ------------------------------------------------------------------------------
