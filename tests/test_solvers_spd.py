"""SPD solvers (paper Sec. 4.2): problems, gradients, the three methods' convergence and
agreement, SPD iterates under indefinite gradients.

Small seeded problems (d <= 12, float64) keep the file fast; the d = 60 reproduction is
``manifold-spectral reproduce spd`` and tests/test_examples.py runs examples/spd_solver.py;
the result type, bad inputs and the CLI are in ``test_solvers_spd_contract.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _spd import (
    DT,
    gen,
    one_thread,  # noqa: F401  (autouse fixture: one torch thread here)
    small_problem,
    sym,
)

from manifold_spectral import RGD, SpectralSPD
from manifold_spectral.baselines.cholesky_rgd import CholeskyRGD, cholesky_h
from manifold_spectral.baselines.retraction_rgd import GEOOPT_LR_FACTOR, RetractionRGD
from manifold_spectral.linalg import random_spd
from manifold_spectral.solvers import spd

# Problems: values, gradients, optima ---------------------------------------------------------


def test_logdet_value_gradient_and_optimum():
    Q, S0 = small_problem(6)
    p = spd.LogDet(Q)
    S_star = torch.linalg.inv(Q)
    torch.testing.assert_close(p.x_star, S_star)
    assert p.f_star == pytest.approx(float(p.value(S_star)), abs=1e-12)
    assert p.f_star == pytest.approx(6 + float(torch.logdet(Q)), abs=1e-12)
    Sv = S0.clone().requires_grad_(True)
    ((Sv * Q).sum() - torch.logdet(Sv)).backward()
    torch.testing.assert_close(p.egrad(S0), 0.5 * (Sv.grad + Sv.grad.T))
    assert p.egrad(S_star).abs().max() < 1e-12
    # The gradient is indefinite away from the optimum: the curvature information is not PSD.
    ev = torch.linalg.eigvalsh(p.egrad(S0))
    assert ev.min() < 0 < ev.max()


def test_metric_nearness_gradient_matches_autograd_on_the_batch():
    Q, S0 = small_problem(7)
    X = torch.randn(40, 7, generator=gen(3), dtype=DT)
    p = spd.MetricNearness(Q, X, batch_size=5)
    batch = p.sample(gen(4))
    Xb, Yb = batch
    torch.testing.assert_close(Yb, Xb @ Q)
    Sv = S0.clone().requires_grad_(True)
    f = 0.5 * ((Sv @ Q @ Xb.T - Xb.T) ** 2).sum() / Xb.shape[0]  # 1/(2m) ||S Q X - X||_F^2
    f.backward()
    torch.testing.assert_close(p.egrad(S0, batch), 0.5 * (Sv.grad + Sv.grad.T))
    # The brief's column form: Sym((S Q X - X)(Q X)^T) / m with X of shape (d, m).
    R = S0 @ Q @ Xb.T - Xb.T
    torch.testing.assert_close(p.egrad(S0, batch), 0.5 * (R @ (Q @ Xb.T).T + (Q @ Xb.T) @ R.T) / 5)
    # Full objective, optimum and a gradient that vanishes at S* on every batch.
    ref = 0.5 * ((S0 @ Q @ X.T - X.T) ** 2).sum() / 40
    assert float(p.value(S0)) == pytest.approx(float(ref), rel=1e-12)
    assert p.f_star == 0.0
    assert float(p.value(p.x_star)) < 1e-24
    assert p.egrad(p.x_star, batch).abs().max() < 1e-12


def test_congruence_gradient_equals_rotated_dense_gradient():
    """``congruence_grad(A, w) = A^T egrad(A Diag(w) A^T) A`` for spectral, Cholesky and
    generic invertible factors (the products-only fast path is the same gradient)."""
    Q, _ = small_problem(8)
    problems = [spd.LogDet(Q), spd.MetricNearness(Q, batch_size=6)]
    M = SpectralSPD(8, dtype=DT)
    x = M.random(gen(5))
    L = torch.tril(torch.randn(8, 8, generator=gen(6), dtype=DT), -1) + torch.diag(
        torch.rand(8, generator=gen(7), dtype=DT) + 0.5
    )
    A = torch.randn(8, 8, generator=gen(8), dtype=DT) + 3 * torch.eye(8, dtype=DT)
    w = torch.rand(8, generator=gen(9), dtype=DT) + 0.2
    ones = torch.ones(8, dtype=DT)
    for p in problems:
        batch = p.sample(gen(10))
        for F, ww in ((x.B, x.d), (L, ones), (A, w)):
            S = (F * ww) @ F.T
            ref = F.T @ p.egrad(S, batch) @ F
            torch.testing.assert_close(p.congruence_grad(F, ww, batch), ref, rtol=1e-10, atol=1e-10)
        # Spectral factors: the orthogonal shortcut (half the products) is the same gradient.
        torch.testing.assert_close(
            p.congruence_grad(x.B, x.d, batch, orthogonal=True),
            x.B.T @ p.egrad(M.to_matrix(x), batch) @ x.B,
            rtol=1e-10,
            atol=1e-10,
        )


def test_fast_path_step_equals_generic_rgd_step():
    Q, S0 = small_problem(8)
    M = SpectralSPD(8, dtype=DT)
    x = M.from_matrix(S0)
    for p in (spd.LogDet(Q), spd.MetricNearness(Q, batch_size=4)):
        batch = p.sample(gen(1))
        fast = RGD(M, 0.05).step_eigenbasis(x, p.congruence_grad(x.B, x.d, batch))
        dense = RGD(M, 0.05).step(x, p.egrad(M.to_matrix(x), batch))
        torch.testing.assert_close(M.to_matrix(fast), M.to_matrix(dense), rtol=1e-11, atol=1e-12)


# Convergence of every method ----------------------------------------------------------------


CASES = {
    "logdet": (lambda Q: spd.LogDet(Q), 0.05, 400),
    "nearness": (lambda Q: spd.MetricNearness(Q, n_samples=100, batch_size=5), 0.02, 3000),
}


@pytest.mark.parametrize("method", spd.METHODS)
@pytest.mark.parametrize("case", list(CASES))
def test_each_method_reaches_1e6(method, case):
    make, lr, steps = CASES[case]
    Q, S0 = small_problem(10, seed=1)
    res = spd.minimize(make(Q), method, lr=lr, steps=steps, x0=S0, tol=1e-6)
    assert res.success, res.message
    assert res.gap < 1e-6 and res.history["gap"][-1] < 1e-6
    assert res.nit < steps
    torch.testing.assert_close(res.x, torch.linalg.inv(Q), rtol=0, atol=2e-2)
    # x and its spectral factors agree.
    torch.testing.assert_close((res.B * res.d) @ res.B.T, res.x, rtol=1e-9, atol=1e-9)


def test_the_three_methods_follow_the_same_curve():
    """Same lr, same start, same batches: the gap curves agree (same Riemannian flow)."""
    Q, S0 = small_problem(10, seed=2)
    for p, lr, k in ((spd.LogDet(Q), 0.01, 300), (spd.MetricNearness(Q, batch_size=5), 0.01, 300)):
        gaps = {m: spd.minimize(p, m, lr=lr, steps=k, x0=S0).history["gap"] for m in spd.METHODS}
        for m in ("spectral", "cholesky"):
            ratio = gaps[m][1:] / gaps["retraction"][1:]
            assert np.all((ratio > 0.7) & (ratio < 1.5)), (m, ratio.min(), ratio.max())


def test_user_objective_autograd_and_callable_gradient():
    """A user f(S) = ||S - A||_F^2 / 2 (minimiser A, f* = 0): autograd, a callable gradient
    and numpy callables."""
    target, S0 = small_problem(6, seed=3)

    def f(S):
        return 0.5 * ((S - target) ** 2).sum()

    runs = [
        spd.Objective(f, 6, f_star=0.0),
        spd.Objective(f, 6, grad=lambda S: S - target, f_star=0.0, x_star=target),
        spd.Objective(
            lambda S: 0.5 * float(((S - target.numpy()) ** 2).sum()),
            6,
            grad=lambda S: S - target.numpy(),
            f_star=0.0,
            numpy=True,
        ),
    ]
    for p in runs:
        res = spd.minimize(p, "spectral", lr=0.05, steps=3000, tol=1e-10, x0=S0)
        assert res.success, res.message
        assert isinstance(res.x, np.ndarray) == p.numpy
        np.testing.assert_allclose(np.asarray(res.x), target.numpy(), atol=1e-4)


# SPD under indefinite gradients -------------------------------------------------------------


def test_spectral_iterates_stay_spd_under_indefinite_gradients():
    Q, S0 = small_problem(8, seed=4)
    p = spd.LogDet(Q)
    M = SpectralSPD(8, dtype=DT)
    x = M.from_matrix(S0)
    opt = RGD(M, 0.3)
    for _ in range(30):
        E = p.egrad(M.to_matrix(x))
        x = opt.step(x, E)
        assert M.check_point(x) == (True, None)
        assert float(torch.linalg.eigvalsh(M.to_matrix(x)).min()) > 0
    # A large step with a strongly indefinite gradient: the Euclidean (and the first-order
    # Riemannian) step leaves the cone, the chart step cannot (d <- d exp(m), B orthogonal).
    E = 3.0 * sym(8, 11)
    assert float(torch.linalg.eigvalsh(E).min()) < 0 < float(torch.linalg.eigvalsh(E).max())
    S = M.to_matrix(x)
    lr = 0.5
    assert float(torch.linalg.eigvalsh(S - lr * E).min()) < 0
    assert float(torch.linalg.eigvalsh(S - 2 * lr * S @ E @ S).min()) < 0
    y = RGD(M, lr).step(x, E)
    assert M.check_point(y) == (True, None)
    assert float(torch.linalg.eigvalsh(M.to_matrix(y)).min()) > 0
    L = CholeskyRGD(8, lr, dtype=DT).step(torch.linalg.cholesky(S), E)
    assert float(torch.diagonal(L).min()) > 0  # h(M) keeps a positive diagonal


def test_large_lr_metric_nearness_keeps_spectral_spd():
    """Far from the optimum with a large lr the dense baselines blow up; the spectral
    iterate stays SPD and the run reports failure or success cleanly."""
    Q, S0 = small_problem(10, seed=5)
    p = spd.MetricNearness(Q, batch_size=5)
    res = spd.minimize(p, "spectral", lr=0.5, steps=50, x0=S0)
    assert np.isfinite(res.history["fun"]).all()
    assert float(torch.linalg.eigvalsh(res.x).min()) > 0
    bad = spd.minimize(p, "retraction", lr=5.0, steps=50, x0=S0)
    assert not bad.success and torch.isfinite(bad.x).all()


# The three steps agree to first order; the Cholesky natural gradient ------------------------


def _one_step(method: str, S0: torch.Tensor, E: torch.Tensor, lr: float) -> torch.Tensor:
    if method == "spectral":
        M = SpectralSPD(S0.shape[0], dtype=DT)
        return M.to_matrix(RGD(M, lr).step(M.from_matrix(S0), E))
    if method == "cholesky":
        opt = CholeskyRGD(S0.shape[0], lr, dtype=DT)
        return opt.to_matrix(opt.step(opt.from_matrix(S0), E))
    opt = RetractionRGD(S0, lr)
    return opt.step(E).clone()


def test_steps_agree_with_the_riemannian_gradient_step_to_second_order():
    """``S_method(lr) - (S - 2 lr S E S) = O(lr^2)`` for all three, so pairwise O(lr^2):
    halving lr divides the differences by ~4 (this also checks geoopt's lr mapping)."""
    _, S0 = small_problem(6, seed=6)
    E = sym(6, 12)
    first_order = lambda lr: S0 - 2 * lr * S0 @ E @ S0  # noqa: E731
    lrs = [1e-3, 5e-4, 2.5e-4]
    steps = {m: [_one_step(m, S0, E, lr) for lr in lrs] for m in spd.METHODS}

    def quartered(values):
        return all(3.5 < a / b < 4.5 for a, b in zip(values[:-1], values[1:], strict=True))

    for m in spd.METHODS:
        err = [
            float(torch.linalg.norm(s - first_order(lr)))
            for s, lr in zip(steps[m], lrs, strict=True)
        ]
        assert quartered(err), (m, err)
    for m in ("retraction", "cholesky"):
        diff = [
            float(torch.linalg.norm(a - b))
            for a, b in zip(steps["spectral"], steps[m], strict=True)
        ]
        assert quartered(diff), (m, diff)
    assert GEOOPT_LR_FACTOR == 2.0


def test_cholesky_natural_gradient_is_pinv_fisher_times_gradient():
    """The closed form ``2 Phi(L^T E L)`` against the autograd Fisher of the chart
    ``M -> L h(M) h(M)^T L^T`` (lower-triangular M), ``F_ab = 1/2 tr(S^-1 J_a S^-1 J_b)``."""
    n = 5
    S0 = random_spd(n, 1.0, gen(7))
    opt = CholeskyRGD(n, 0.1, dtype=DT)
    L = opt.from_matrix(S0)
    E = sym(n, 13)
    i, j = torch.tril_indices(n, n)

    def chart(v):
        Mv = torch.zeros(n, n, dtype=DT).index_put((i, j), v)
        H = cholesky_h(Mv)
        return L @ H @ H.T @ L.T

    zero = torch.zeros(i.numel(), dtype=DT)
    J = torch.autograd.functional.jacobian(chart, zero).permute(2, 0, 1)
    P = torch.linalg.solve(S0, J)
    F = 0.5 * torch.einsum("aij,bji->ab", P, P)
    grad = torch.einsum("aij,ij->a", J, E)
    ref = torch.linalg.solve(F, grad)
    ours = opt.natural_gradient(L.T @ E @ L)[i, j]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
