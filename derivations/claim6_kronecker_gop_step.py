"""The Kronecker GOP step (Fig. 1 bottom box, with damping) is the natural-gradient step.

For the Gaussian objective with precision S = alpha (S_L kron S_R) and GOP curvature
H = g g^T + lambda I, g = vec(G) (row-major, G is a x b), the descent direction of
L(S) has the Euclidean gradient

    E = -dL/dS = 1/2 S^-1 (-gamma S + g g^T + lambda I) S^-1.

Solving F v = tr(E dS/deta) in the Kronecker chart of claim6_kronecker_metric.py gives the
closed form the package implements (DESIGN.md section 3), with Z = B_L^T G B_R:

    W_L = B_L^T G S_R^-1 G^T B_L = Z D_R^-1 Z^T,   W_R = B_R^T G^T S_L^-1 G B_R = Z^T D_L^-1 Z,
    lambda_L = lambda kappa_L mean(1/d_R),        lambda_R = lambda kappa_R mean(1/d_L),
    m_l   = (1/d_l) (-gamma d_l + (diag(W_l) + lambda_l) / (alpha kappa_l)),
    v     = ( (mean m_L + mean m_R)/2,  center(m_l),  -W_l,ij / (2 alpha kappa_l (d_i - d_j)) ).

Checked symbolically in alpha, gamma, lambda, the entries of G and d (det constraint
imposed) for (a, b) = (2, 3) at B_L = B_R = I (rotations act by conjugation and are covered
by claim6_kronecker_natural_gradient.py).

The package: the derived F^-1 grad (symbolic in alpha, gamma, lambda, G and d) at random
rationals is compared with the package's GOP path, precision_egrad_eigenbasis of
gop_eigenbasis(V, damping=lambda) followed by natural_gradient_eigenbasis (the direction of
Gaussian.precision_step), at random rational rotations Q_L, Q_R with Mat(v) = Q_L G Q_R^T
(so that Z = G).

Run:  python derivations/claim6_kronecker_gop_step.py
"""

import sympy as sp
from _common import (
    check,
    check_close,
    fisher_trace_form,
    is_zero_matrix,
    kron_chart,
    lower_pairs,
    package,
    random_rational,
    sample_rng,
    tangents_at_origin,
    to_tensor,
    unit_det,
)
from claim6_kronecker_natural_gradient import full_m

alpha, gamma, lam = sp.symbols("alpha gamma lambda", positive=True)


def derive(a, b):
    BL, BR = sp.eye(a), sp.eye(b)
    dL, dR = unit_det("p", a), unit_det("q", b)
    G = sp.Matrix(a, b, lambda i, j: sp.Symbol(f"g{i + 1}{j + 1}"))
    g = sp.Matrix([G[i, j] for i in range(a) for j in range(b)])
    SLi, SRi = sp.diag(*[1 / x for x in dL]), sp.diag(*[1 / x for x in dR])
    S0 = alpha * sp.kronecker_product(sp.diag(*dL), sp.diag(*dR))
    S0i = sp.kronecker_product(SLi, SRi) / alpha
    check(
        is_zero_matrix(S0i * g - sp.Matrix([x for x in SLi * G * SRi]) / alpha, sp.cancel),
        "S^-1 vec(X) = vec(S_L^-1 X S_R^-1) / alpha (row-major vec)",
    )
    E = S0i * (-gamma * S0 + g * g.T + lam * sp.eye(a * b)) * S0i / 2
    S, eta, _ = kron_chart(alpha, BL, dL, BR, dR)
    dS = tangents_at_origin(S, eta)
    grad = sp.Matrix([(E * X).trace() for X in dS])
    F = fisher_trace_form(dS, S0i).applyfunc(sp.cancel)
    v_free = F.LUsolve(grad)
    v = full_m(v_free, a, b)

    Z = BL.T * G * BR
    WL, WR = Z * SRi * Z.T, Z.T * SLi * Z
    check(
        is_zero_matrix(WL - BL.T * G * SRi * G.T * BL, sp.cancel)
        and is_zero_matrix(WR - BR.T * G.T * SLi * G * BR, sp.cancel),
        "W_L = Z D_R^-1 Z^T and W_R = Z^T D_L^-1 Z",
    )
    lam_L = lam * b * sum(1 / x for x in dR) / b
    lam_R = lam * a * sum(1 / x for x in dL) / a
    means, parts = [], []
    for d, W, kappa, lam_l in ((dL, WL, b, lam_L), (dR, WR, a, lam_R)):
        n = len(d)
        m = [(-gamma * d[i] + (W[i, i] + lam_l) / (alpha * kappa)) / d[i] for i in range(n)]
        mean = sum(m) / n
        means.append(mean)
        rot = [-W[i, j] / (2 * alpha * kappa * (d[i] - d[j])) for i, j in lower_pairs(n)]
        parts += [mi - mean for mi in m] + rot
    expected = sp.Matrix([(means[0] + means[1]) / 2] + parts)
    diff = (v - expected).applyfunc(sp.cancel)
    check(
        diff == sp.zeros(*diff.shape),
        f"(a, b) = ({a}, {b}): the GOP box with damping lambda_l is F^-1 grad of the "
        "Gaussian objective",
    )
    return dL, dR, G, v_free


def main():
    check_package(*derive(2, 3))
    print("claim6_kronecker_gop_step: all checks passed")


def check_package(dL, dR, G, v):
    """The derived natural-gradient direction at random rationals against the package."""
    from claim6_kronecker_metric import random_point

    ms = package()
    a, b = len(dL), len(dR)
    rng = sample_rng("claim6_kronecker_gop_step")
    point, x, (QL, QR) = random_point(rng, alpha, dL, dR)
    point.update({s: abs(random_rational(rng, 1, 3)) for s in (gamma, lam)})
    point.update({s: random_rational(rng, -3, 3) for s in sorted(G.free_symbols, key=str)})
    Gx = QL * G.xreplace(point) * QR.T
    V = to_tensor([Gx[i, j] for i in range(a) for j in range(b)]).reshape(a * b, 1)
    M = ms.KroneckerSpectralSPD(a, b, dtype=V.dtype)
    Ht = M.gop_eigenbasis(x, V, float(point[lam]))
    step = M.natural_gradient_eigenbasis(
        x, M.precision_egrad_eigenbasis(x, Ht, float(point[gamma]))
    )
    print(f"(a, b) = ({a}, {b}), the package at random rationals and rational rotations:")
    check_close(
        v.xreplace(point),
        -M.to_vector(step),
        "natural_gradient_eigenbasis(precision_egrad_eigenbasis(gop_eigenbasis(V))) = -F^-1 grad",
        rtol=1e-10,
    )


if __name__ == "__main__":
    main()
