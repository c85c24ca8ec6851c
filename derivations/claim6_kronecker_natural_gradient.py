"""Claim 6 (continued): local gradients and the natural gradient in the Kronecker chart.

Let f(S) be smooth with symmetric Euclidean gradient E = df/dS (ab x ab), on the Kronecker
chart S(eta) = alpha exp(n) (S_L(eta_L) kron S_R(eta_R)) of claim6_kronecker_metric.py.
By the chain rule df/deta_u = tr(E dS/deta_u), so it suffices to take the linear
f = tr(E S(eta)) with a generic symbolic symmetric E (entries e_ij).  Contract E against
the other factor (row-major pairs, E[(i, j), (l, k)] = E[i b + j, l b + k]):

    E_L[i, l] = sum_{j,k} S_R[j, k] E[(i, j), (l, k)],
    E_R[j, k] = sum_{i,l} S_L[i, l] E[(i, j), (l, k)],
    G_l = B_l^T E_l B_l,   kappa_L = b,  kappa_R = a.

Derived at eta = 0 (differentiating the chart; free m coordinates, m_l,last = -sum):

    df/dn      = alpha tr((S_L kron S_R) E),
    df/dm_l,k  = alpha (d_k G_l,kk - d_last G_l,last,last),
    df/dM_l,ij = 4 alpha (d_j - d_i) G_l,ij                           (i > j),

and, solving F v = grad with F recomputed from the chart (distinct eigenvalues, so F is
invertible), the natural gradient

    v_n    = (2 / (a b)) alpha tr((S_L kron S_R) E),
    v_m_l  = (2 / kappa_l) center(alpha d_l * diag(G_l))   (full sum-zero vector: the free
             coordinates are its first entries and the last is minus their sum),
    v_M_l  = -alpha d_i d_j G_l,ij / (kappa_l (d_i - d_j))               (i > j).

Checked symbolically in alpha, d (det constraint imposed, d_last = 1 / prod(others)) and
e_ij for (a, b) = (2, 2) and (2, 3) at B_L = B_R = I; and for (2, 2) at the exact rational
rotations B_l = Cayley([[0, -t_l], [t_l, 0]]), t_L = 1/2, t_R = -2/3 (so G_l = B_l^T E_l B_l
mixes all entries of E; symbolic angles work too but take ~30 s).

The package: the gradient and natural gradient derived for (2, 3) at B = I (symbolic in
alpha, d and E) are evaluated at random rationals and compared with
KroneckerSpectralSPD.local_gradient / natural_gradient at random rational rotations
Q_L, Q_R with the Euclidean gradient K E K^T, K = Q_L kron Q_R (the same G_l).

Run:  python derivations/claim6_kronecker_natural_gradient.py
"""

import sympy as sp
from _common import (
    cayley,
    check,
    check_close,
    fisher_trace_form,
    is_zero_matrix,
    kron_chart,
    kron_inverse_at_origin,
    lower_pairs,
    package,
    random_rational,
    sample_rng,
    tangents_at_origin,
    to_tensor,
    unit_det,
)


def sym_matrix(name, n):
    return sp.Matrix(n, n, lambda i, j: sp.Symbol(f"{name}{min(i, j) + 1}_{max(i, j) + 1}"))


def contract(E, SL, SR):
    """E_L (contracted against S_R) and E_R (contracted against S_L)."""
    a, b = SL.shape[0], SR.shape[0]
    L = [(i, l) for i in range(a) for l in range(a)]
    R = [(j, k) for j in range(b) for k in range(b)]

    def e(i, j, l, k):
        return E[i * b + j, l * b + k]

    EL = sp.Matrix(a, a, lambda i, l: sum(SR[j, k] * e(i, j, l, k) for j, k in R))
    ER = sp.Matrix(b, b, lambda j, k: sum(SL[i, l] * e(i, j, l, k) for i, l in L))
    return EL, ER


def closed_forms(alpha, BL, dL, BR, dR, E):
    """Closed-form (local gradient, natural gradient); the latter with m_l written in full."""
    SL, SR = BL * sp.diag(*dL) * BL.T, BR * sp.diag(*dR) * BR.T
    EL, ER = contract(E, SL, SR)
    GL, GR = BL.T * EL * BL, BR.T * ER * BR
    t = alpha * (sp.kronecker_product(SL, SR) * E).trace()
    grad, nat = [t], [2 * t / (len(dL) * len(dR))]
    for d, G, kappa in ((dL, GL, len(dR)), (dR, GR, len(dL))):
        n = len(d)
        w = [alpha * d[i] * G[i, i] for i in range(n)]
        grad += [w[k] - w[-1] for k in range(n - 1)]
        grad += [4 * alpha * (d[j] - d[i]) * G[i, j] for i, j in lower_pairs(n)]
        nat += [2 / kappa * (w[k] - sum(w) / n) for k in range(n)]  # center(w), in full
        nat += [-alpha * d[i] * d[j] * G[i, j] / (kappa * (d[i] - d[j])) for i, j in lower_pairs(n)]
    return sp.Matrix(grad), sp.Matrix(nat)


def full_m(v, a, b):
    """Free coordinates -> eta with each m_l written out in full (last = -sum of the rest)."""
    v, out, pos = list(v), [v[0]], 1
    for n in (a, b):
        m = v[pos : pos + n - 1]
        out += m + [-sum(m)] + v[pos + n - 1 : pos + n - 1 + n * (n - 1) // 2]
        pos += n - 1 + n * (n - 1) // 2
    return sp.Matrix(out)


def derive(alpha, BL, dL, BR, dR):
    a, b = len(dL), len(dR)
    E = sym_matrix("e", a * b)
    S, eta, _ = kron_chart(alpha, BL, dL, BR, dR)
    dS = tangents_at_origin(S, eta)
    grad = sp.Matrix([(E * X).trace() for X in dS])
    S0inv = kron_inverse_at_origin(alpha, BL, dL, BR, dR)
    F = fisher_trace_form(dS, S0inv).applyfunc(sp.cancel)  # = J^T (1/2 S^-1 kron S^-1) J
    grad_cf, nat_cf = closed_forms(alpha, BL, dL, BR, dR, E)
    check(
        is_zero_matrix(grad - grad_cf, sp.cancel),
        "df/dn = alpha tr((S_L kron S_R) E), df/dm_l,k = alpha (d_k G_kk - d_last G_last), "
        "df/dM_l,ij = 4 alpha (d_j - d_i) G_l,ij",
    )
    v = F.LUsolve(grad)  # distinct eigenvalues: F is invertible
    check(
        is_zero_matrix(full_m(v, a, b) - nat_cf, sp.cancel),
        "F^-1 grad: v_n = 2/(ab) alpha tr((S_L kron S_R) E), v_m_l = (2/kappa_l) "
        "center(alpha d_l diag(G_l)), v_M_l = -alpha d_i d_j G_ij / (kappa_l (d_i - d_j))",
    )
    return E, grad, v


def main():
    alpha = sp.Symbol("alpha", positive=True)
    for a, b in ((2, 2), (2, 3)):
        dL, dR = unit_det("p", a), unit_det("q", b)
        print(f"(a, b) = ({a}, {b}), B_L = B_R = I, d_L = {dL}, d_R = {dR}, generic symmetric E:")
        E, grad, v = derive(alpha, sp.eye(a), dL, sp.eye(b), dR)
        if (a, b) == (2, 2):
            print("  natural gradient (free coordinates) =", [sp.factor(x) for x in v])

    # Rotated factors: exact rational rotations (symbolic angles take ~30 s; d, E stay symbolic).
    tL, tR = sp.Rational(1, 2), sp.Rational(-2, 3)
    BL, BR = (cayley(sp.Matrix([[0, -t], [t, 0]])) for t in (tL, tR))
    print(f"(a, b) = (2, 2), B_l = Cayley([[0, -t_l], [t_l, 0]]) at t_L = {tL}, t_R = {tR}:")
    derive(alpha, BL, unit_det("p", 2), BR, unit_det("q", 2))
    check_package(alpha, dL, dR, E, grad, v)
    print("Claim 6 (local gradients and natural gradient in the Kronecker chart): derived.")


def check_package(alpha, dL, dR, E, grad, v):
    """The derived (free-coordinate) gradient and natural gradient at random rationals
    against ``KroneckerSpectralSPD``."""
    from claim6_kronecker_metric import random_point

    ms = package()
    a, b = len(dL), len(dR)
    rng = sample_rng("claim6_kronecker_natural_gradient")
    point, x, (QL, QR) = random_point(rng, alpha, dL, dR)
    point.update({e: random_rational(rng) for e in sorted(E.free_symbols, key=str)})
    K = sp.kronecker_product(QL, QR)
    egrad = to_tensor(K * E.xreplace(point) * K.T)
    M = ms.KroneckerSpectralSPD(a, b, dtype=to_tensor(0).dtype)
    print(f"(a, b) = ({a}, {b}), the package at random rationals and rational rotations:")
    check_close(
        grad.xreplace(point),
        M.covector_to_vector(M.local_gradient(x, egrad)),
        "local_gradient = the derived gradient (free coordinates)",
    )
    check_close(
        v.xreplace(point),
        M.to_vector(M.natural_gradient(x, egrad)),
        "natural_gradient = the derived F^-1 grad (free coordinates)",
        rtol=1e-10,
    )


if __name__ == "__main__":
    main()
