"""Tests that fail when SpectralKron's preconditioner is wrong (identity, frozen curvature, a
sign, a factor): (a) an ill-conditioned Kronecker least-squares problem whose loss after T
steps is far below what any identity-preconditioned or curvature-frozen run can reach (a
bound proved below, computed in plain torch); (b) steps checked against the practical scheme
of paper Fig. 6 (right) written out here in plain torch; (c) the learned B turns to the known
eigenbasis of the gradient covariance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)
DT = torch.float64


def orthogonal(n: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))  # test data only
    return q * torch.sign(torch.diagonal(r))


# (a) Ill-conditioned Kronecker least squares -------------------------------------------------

A_ROWS, B_COLS, STEPS, LR, DECAY, MOM = 6, 12, 200, 0.1, 0.99, 0.9
LRS = [LR * DECAY**t for t in range(STEPS)]


def least_squares():
    """``f(W) = 1/(2n) ||(W - W*) X||^2`` with inputs of covariance eigenvalues 1 .. 1e-4
    (Hessian ``I kron Sigma``, condition 1e4), full-batch gradients ``(W - W*) Sigma``, a start
    error of the same size in every direction: the first gradient's curvature
    ``S_R ~ Sigma E^T E Sigma + c I`` is flat (``c``) along the slow directions."""
    g = torch.Generator().manual_seed(0)
    Q = orthogonal(B_COLS, g)
    lam = torch.logspace(0, -4, B_COLS, dtype=DT)
    Sigma = (Q * lam) @ Q.T
    W_star = torch.randn(A_ROWS, B_COLS, generator=g, dtype=DT)
    E0 = torch.randn(A_ROWS, B_COLS, generator=g, dtype=DT) @ Q.T
    return Sigma, W_star, W_star + E0


def loss_of(E: torch.Tensor, Sigma: torch.Tensor) -> float:
    return 0.5 * float(torch.trace(E @ Sigma @ E.T))


def lower_bound(P_L: torch.Tensor, P_R: torch.Tensor, Sigma: torch.Tensor, E0: torch.Tensor):
    """Least loss after ``STEPS`` steps of ``W <- W - lr_t s_t P_L V_t P_R`` (any ``s_t`` in
    [0, 1], heavy ball ``V_t = mom V_{t-1} + grad_t``) with a *fixed* preconditioner
    ``P = P_L kron P_R`` (row-major vec). In ``z = P^(-1/2) vec(E)`` the iteration is
    ``z <- z - lr_t s_t M v_t`` with ``M = P^(1/2) H P^(1/2)``, decoupled along M's
    eigenvectors. Along one of eigenvalue mu, ``|v_t| <= mu max|z| / (1 - mom)``, so the drift
    D after T steps obeys ``D <= c (|z_0| + D)`` with ``c = mu sum(lr_t) / (1 - mom)``:
    ``|z_T| >= |z_0| (1 - 2c) / (1 - c)`` where ``c < 1/2``. And ``f = sum mu z^2 / 2``."""

    def sqrt_psd(S):
        w, V = torch.linalg.eigh(S)
        return (V * w.sqrt()) @ V.T, (V * w.rsqrt()) @ V.T

    (_, PLih), (PRh, PRih) = sqrt_psd(P_L), sqrt_psd(P_R)
    M = torch.kron(P_L, PRh @ Sigma @ PRh)  # P^1/2 (I kron Sigma) P^1/2, row-major vec
    mu, U = torch.linalg.eigh(M)
    z = U.T @ (PLih @ E0 @ PRih).reshape(-1)
    c = mu * sum(LRS) / (1 - MOM)
    keep = c < 0.5
    shrink = (1 - 2 * c[keep]) / (1 - c[keep])
    return float(0.5 * (mu[keep] * (z[keep] * shrink) ** 2).sum())


def warm_start_preconditioner(G: torch.Tensor, damping: float, p: float):
    """The documented warm start ``S0 = s (S_L kron S_R)``, ``S_L = G G^T / b + c I``,
    ``S_R = G^T G / a + c I``, ``c = mean(G^2) + damping``, ``tr(S0) / (ab) = c``, and its
    preconditioner ``S0^(-1/p)`` as two factors (the root of ``s`` folded into the left)."""
    a, b = G.shape
    c = (G * G).mean() + damping
    S_L = G @ G.T / b + c * torch.eye(a, dtype=DT)
    S_R = G.T @ G / a + c * torch.eye(b, dtype=DT)
    s = c * a * b / (torch.trace(S_L) * torch.trace(S_R))

    def root(S):
        w, V = torch.linalg.eigh(S)
        return (V * w.pow(-1.0 / p)) @ V.T

    return s ** (-1.0 / p) * root(S_L), root(S_R)


def test_learned_curvature_beats_any_identity_or_frozen_preconditioner():
    Sigma, W_star, W0 = least_squares()
    W = nn.Parameter(W0.clone())
    opt = SpectralKron([W], lr=LR, momentum=MOM, beta2=0.05, damping=1e-10)
    for lr in LRS:
        opt.param_groups[0]["lr"] = lr
        W.grad = (W.detach() - W_star) @ Sigma
        opt.step()
    E0 = W0 - W_star
    f0, fT = loss_of(E0, Sigma), loss_of(W.detach() - W_star, Sigma)
    eye_a, eye_b = torch.eye(A_ROWS, dtype=DT), torch.eye(B_COLS, dtype=DT)
    identity = lower_bound(eye_a, eye_b, Sigma, E0)
    frozen = lower_bound(*warm_start_preconditioner(E0 @ Sigma, 1e-10, 2.0), Sigma, E0)
    assert identity > 1e-4 * f0 and frozen > 1e-4 * f0  # both bounds are far from 0
    assert fT < identity / 5, (fT, identity, f0)
    assert fT < frozen / 5, (fT, frozen, f0)


# (b) One step of Fig. 6 (right), written out ------------------------------------------------


def cayley(N: torch.Tensor) -> torch.Tensor:
    I = torch.eye(N.shape[0], dtype=N.dtype)
    return torch.linalg.solve(I - N, I + N)


def fig6_step(
    st: dict, G: torch.Tensor, beta2: float, lam: float, gamma: float = 1.0, c: float = 1.0
):
    """Paper Fig. 6 (right), truncated exponential, exact Cayley; DESIGN.md section 3:
    ``W_L = Z Diag(1/d_R) Z^T``, ``W_R = Z^T Diag(1/d_L) Z`` with ``Z = B_L^T G B_R``;
    ``n_l = (1 - gamma beta2) d_l + beta2 / (alpha kappa_l) (diag W_l + lambda_l)``,
    ``lambda_L = lambda kappa_L mean(1/d_R)``, ``lambda_R = lambda kappa_R mean(1/d_L)``;
    ``U_ij = -W_ij / (d_i - d_j)``, ``B_l <- B_l Cayley(beta2 / (2 alpha kappa_l)
    Skew(Tril U_l))``; ``d_l <- n_l / geomean(n_l)``,
    ``alpha <- alpha sqrt(geomean(n_L) geomean(n_R))``; ``c``: ``basis_scale``, the Cayley
    argument's step ``c beta2``."""
    a, b = G.shape
    al, BL, dL, BR, dR = st["alpha"], st["B_L"], st["d_L"], st["B_R"], st["d_R"]
    Z = BL.T @ G @ BR
    W = {"L": Z @ torch.diag(1 / dR) @ Z.T, "R": Z.T @ torch.diag(1 / dL) @ Z}
    kappa = {"L": float(b), "R": float(a)}
    lam_l = {"L": lam * b * (1 / dR).mean(), "R": lam * a * (1 / dL).mean()}
    out, logs = {}, {}
    for s, B, d in (("L", BL, dL), ("R", BR, dR)):
        n = (1 - gamma * beta2) * d + beta2 / (al * kappa[s]) * (torch.diagonal(W[s]) + lam_l[s])
        diff = d[:, None] - d[None, :]
        U = torch.where(diff.abs() > 0, -W[s] / torch.where(diff == 0, 1.0, diff), 0.0)
        T = torch.tril(U, -1)
        out["B_" + s] = B @ cayley(c * beta2 / (2 * al * kappa[s]) * (T - T.T))
        logs[s] = torch.log(n)
        out["d_" + s] = torch.exp(logs[s] - logs[s].mean())
    out["alpha"] = al * torch.exp(logs["L"].mean() / 2 + logs["R"].mean() / 2)
    return out


@pytest.mark.parametrize("c", [1.0, 2.0])  # basis_scale: the paper's 1, the default 2
def test_steps_equal_fig6_right_written_out(c):
    a, b, beta2, lam, lr, p = 4, 5, 0.1, 1e-3, 0.05, 2.0
    g = torch.Generator().manual_seed(3)
    W = nn.Parameter(torch.randn(a, b, generator=g, dtype=DT))
    opt = SpectralKron(
        [W], lr=lr, beta2=beta2, damping=lam, root=p, momentum=0.0, cayley="exact",
        jacobi=False, gap_damping=0.0, warm_start=False, eigenvalue_correction=False,
        updated_gaps=False, basis_scale=c,
    )  # fmt: skip
    st = {"alpha": torch.tensor(1.0, dtype=DT), "B_L": torch.eye(a, dtype=DT),
          "d_L": torch.ones(a, dtype=DT), "B_R": torch.eye(b, dtype=DT),
          "d_R": torch.ones(b, dtype=DT)}  # fmt: skip
    ref_W = W.detach().clone()
    for _ in range(4):  # from the identity: the first step has no rotation, the next ones do
        G = torch.randn(a, b, generator=g, dtype=DT)
        W.grad = G.clone()
        opt.step()
        st = fig6_step(st, G, beta2, lam, c=c)
        SL = (st["B_L"] * st["d_L"].pow(-1 / p)) @ st["B_L"].T
        SR = (st["B_R"] * st["d_R"].pow(-1 / p)) @ st["B_R"].T
        ref_W = ref_W - lr * st["alpha"] ** (-1 / p) * SL @ G @ SR
        mine = opt.state[W]
        for key in ("alpha", "d_L", "d_R"):
            torch.testing.assert_close(mine["pc_" + key], st[key], rtol=1e-12, atol=1e-14)
        for s in "LR":  # the factor matrices (B is defined up to column signs)
            got = (mine["pc_B_" + s] * mine["pc_d_" + s]) @ mine["pc_B_" + s].T
            want = (st["B_" + s] * st["d_" + s]) @ st["B_" + s].T
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(W.detach(), ref_W, rtol=1e-12, atol=1e-13)
    assert float((st["B_L"] - torch.eye(a, dtype=DT)).abs().max()) > 1e-3  # B did rotate


# (c) The learned basis turns to the gradient covariance's eigenbasis -------------------------


def off_diagonal_energy(B: torch.Tensor, C: torch.Tensor) -> float:
    """Share of ``||B^T C B||_F^2`` off the diagonal: 0 when B diagonalises C."""
    M = B.T @ C @ B
    return float((M - torch.diag(torch.diagonal(M))).pow(2).sum() / M.pow(2).sum())


@pytest.mark.parametrize("c, floor", [(1.0, 0.02), (2.0, 0.03)])
def test_learned_basis_rotates_to_the_gradient_covariance_eigenbasis(c, floor):
    """Gradients ``G = Q_L Diag(s_L) N Diag(s_R) Q_R^T`` (N iid normal): the Kronecker factors
    of ``E[vec G vec G^T]`` are ``Q_l Diag(s_l^2) Q_l^T`` up to scale. From the identity start
    (off-diagonal energy ~0.9), the learned ``B_l`` must turn to ``Q_l``. ``c``:
    ``basis_scale``; the basis then remembers about ``1 / (c beta2)`` one-sample targets, so
    its noise floor is higher (the larger of the two sides: 0.014 at ``c = 1``, 0.022 at 2)."""
    a, b = 6, 8
    g = torch.Generator().manual_seed(4)
    QL, QR = orthogonal(a, g), orthogonal(b, g)
    sL, sR = torch.logspace(0, -1.5, a, dtype=DT), torch.logspace(0, -1.5, b, dtype=DT)
    CL, CR = (QL * sL**2) @ QL.T, (QR * sR**2) @ QR.T
    W = nn.Parameter(torch.zeros(a, b, dtype=DT))
    opt = SpectralKron(
        [W], lr=0.0, beta2=0.05, damping=1e-8, warm_start=False, momentum=0.0, basis_scale=c
    )
    for _ in range(300):
        W.grad = QL @ (sL[:, None] * torch.randn(a, b, generator=g, dtype=DT) * sR) @ QR.T
        opt.step()
    # The direction of a last step (lr 1) is the whitened gradient C_L^-1/2 G C_R^-1/2 (up to
    # scale), which the raw gradient is not.
    opt.param_groups[0]["lr"] = 1.0
    G = QL @ (sL[:, None] * torch.randn(a, b, generator=g, dtype=DT) * sR) @ QR.T
    W.grad = G.clone()
    opt.step()
    ideal = (QL / sL) @ QL.T @ G @ (QR / sR) @ QR.T

    def cos(x, y):
        return float((x * y).sum() / (x.norm() * y.norm()))

    assert cos(-W.detach(), ideal) > 0.95 and cos(G, ideal) < 0.8, cos(-W.detach(), ideal)
    st = opt.state[W]
    start = [off_diagonal_energy(torch.eye(n, dtype=DT), C) for n, C in ((a, CL), (b, CR))]
    end = [off_diagonal_energy(st["pc_B_" + s], C) for s, C in (("L", CL), ("R", CR))]
    assert min(start) > 0.3, start
    assert max(end) < floor, (start, end)
    # and the eigenvalues follow the spectrum's order and spread (log-correlation)
    for s, sv in (("L", sL), ("R", sR)):
        B, d = st["pc_B_" + s], st["pc_d_" + s]
        order = torch.argmax((B.T @ (QL if s == "L" else QR)).abs(), dim=1)
        x, y = torch.log(d), torch.log(sv[order] ** 2)
        r = float(((x - x.mean()) * (y - y.mean())).sum() / (x.std() * y.std() * (len(x) - 1)))
        assert r > 0.95, (s, r)
    assert math.isfinite(float(st["pc_alpha"]))
