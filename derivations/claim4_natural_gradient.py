"""Claim 4 (continued): local Euclidean gradients and the natural gradient in the chart.

Let f(S) be smooth with symmetric Euclidean gradient E = df/dS, and G = B^T E B.  Along
the chart S(eta) of claim4_fisher_metric.py, df/deta_a = tr(E dS/deta_a) by the chain rule.
Differentiating with a generic symbolic symmetric E (entries e_ij) gives, at eta = 0,

    df/dm_i  = d_i G_ii,
    df/dM_ij = 4 (d_j - d_i) G_ij          (i > j).

With the diagonal Fisher metric F of claim 4 (F_mm = 1/2, F_{M_ij} = 4 (d_i - d_j)^2 /
(d_i d_j)), solving F v = grad for distinct d_i gives the natural gradient

    v_{m_i}  = 2 d_i G_ii,
    v_{M_ij} = -d_i d_j G_ij / (d_i - d_j)   (i > j),

and for repeated eigenvalues d_i = d_j the Moore-Penrose solution v = F^+ grad has
v_{M_ij} = 0 (both F_{M_ij} and df/dM_ij vanish there).

Checked symbolically in d_i and e_ij for n = 2, 3 at B = I and for n = 2 at a rotation
B by a symbolic angle (through G = B^T E B).  F is recomputed from the chart here, not
typed in.

The package: the gradient and natural gradient derived for n = 3 (symbolic in d and E) are
evaluated at random rationals and compared with SpectralSPD.local_gradient and
natural_gradient at B = Q, a random rational rotation, with the Euclidean gradient Q E Q^T
(so that B^T egrad B = E).

Run:  python derivations/claim4_natural_gradient.py
"""

import sympy as sp
from _common import (
    chart,
    check,
    check_close,
    coords,
    distinct_positive,
    fisher_at_origin,
    is_zero_matrix,
    jacobian_at_origin,
    lower_pairs,
    package,
    random_rational,
    rational_rotation,
    sample_rng,
    to_tensor,
)


def sym_matrix(name, n):
    return sp.Matrix(n, n, lambda i, j: sp.Symbol(f"{name}{min(i, j) + 1}{max(i, j) + 1}"))


def local_gradient(B, d, E):
    """grad_a = tr(E dS/deta_a) at eta = 0, derived from the chart."""
    n = len(d)
    S, m, M = chart(B, d)
    eta = coords(m, M)
    J = jacobian_at_origin(S, eta)
    dS = [J[:, a].reshape(n, n).T for a in range(len(eta))]  # undo column-major vec
    grad = sp.Matrix([(E * dSa).trace() for dSa in dS])
    S0inv = B * sp.diag(*[1 / di for di in d]) * B.T
    return grad, fisher_at_origin(S, eta, S0inv)


def expected_gradient(d, G):
    n = len(d)
    return sp.Matrix(
        [d[i] * G[i, i] for i in range(n)]
        + [4 * (d[j] - d[i]) * G[i, j] for i, j in lower_pairs(n)]
    )


def expected_natural_gradient(d, G):
    n = len(d)
    return sp.Matrix(
        [2 * d[i] * G[i, i] for i in range(n)]
        + [-d[i] * d[j] * G[i, j] / (d[i] - d[j]) for i, j in lower_pairs(n)]
    )


def main():
    for n in (2, 3):
        d = sp.symbols(f"d1:{n + 1}", positive=True)
        E = sym_matrix("e", n)
        print(f"n = {n}, B = I, generic symmetric E:")
        grad, F = local_gradient(sp.eye(n), d, E)
        G = E  # B = I
        check(
            is_zero_matrix(grad - expected_gradient(d, G), sp.expand),
            "df/dm_i = d_i G_ii and df/dM_ij = 4 (d_j - d_i) G_ij",
        )
        print("  grad =", list(sp.factor(g) for g in grad))

        v = F.LUsolve(grad)  # distinct d_i: F is invertible
        check(
            is_zero_matrix(v - expected_natural_gradient(d, G), sp.cancel),
            "F^{-1} grad: m-part 2 d_i G_ii, M-part -d_i d_j G_ij / (d_i - d_j)",
        )
        print("  natural gradient =", list(sp.factor(x) for x in v))
        derived = (d, E, grad, v)

        # Repeated eigenvalue d_1 = d_2: F is singular, use the Moore-Penrose inverse.
        rep = {d[1]: d[0]}
        F_rep, grad_rep = F.xreplace(rep), grad.xreplace(rep)
        k = n  # index of coordinate M_21 in eta = (m, M_21, ...)
        check(
            F_rep[k, k] == 0 and sp.expand(grad_rep[k]) == 0,
            "d_1 = d_2: F_{M_21} = 0 and df/dM_21 = 0",
        )
        v_rep = F_rep.pinv() * grad_rep
        expected_rep = expected_natural_gradient(d, G).xreplace(rep)
        expected_rep[k] = 0
        check(
            is_zero_matrix(v_rep - expected_rep, sp.cancel),
            "d_1 = d_2: F^+ grad has M_21 component 0, other components unchanged",
        )

    # Generic rotation B (n = 2): the same formulas hold with G = B^T E B.
    th = sp.Symbol("theta", real=True)
    B = sp.Matrix([[sp.cos(th), -sp.sin(th)], [sp.sin(th), sp.cos(th)]])
    d = sp.symbols("d1:3", positive=True)
    E = sym_matrix("e", 2)
    grad, _ = local_gradient(B, d, E)
    print("n = 2, B = rotation by symbolic angle theta:")
    check(
        is_zero_matrix(grad - expected_gradient(d, B.T * E * B), sp.trigsimp),
        "local gradients hold with G = B^T E B",
    )
    check_package(*derived)
    print("Claim 4 (local gradients and natural gradient in the chart): derived for n = 2, 3.")


def check_package(d, E, grad, v):
    """The derived local and natural gradients at random rationals against ``SpectralSPD``."""
    ms = package()
    rng = sample_rng("claim4_natural_gradient")
    n = len(d)
    point = dict(zip(d, distinct_positive(rng, n), strict=True))
    point.update({e: random_rational(rng) for e in E.free_symbols})
    Q = rational_rotation(rng, n)
    M = ms.SpectralSPD(n, dtype=to_tensor(0).dtype)
    x = ms.SpectralPoint(to_tensor(Q), to_tensor([point[di] for di in d]))
    egrad = to_tensor(Q * E.xreplace(point) * Q.T)
    print(f"n = {n}, the package at random rational d, E and a rational rotation B:")
    check_close(
        grad.xreplace(point),
        M.to_vector(M.local_gradient(x, egrad)),
        "SpectralSPD.local_gradient = the derived gradient",
    )
    check_close(
        v.xreplace(point),
        M.to_vector(M.natural_gradient(x, egrad)),
        "SpectralSPD.natural_gradient = the derived F^-1 grad",
        rtol=1e-10,
    )


if __name__ == "__main__":
    main()
