"""Claims 5-6: the Fisher-Rao metric is block diagonal in the Kronecker chart.

Setting.  The precision is S = alpha (S_L kron S_R) with S_L = B_L Diag(d_L) B_L^T (a x a),
S_R = B_R Diag(d_R) B_R^T (b x b), det S_L = det S_R = 1 (sum log d_l = 0) and alpha > 0
(Claim 5: this makes the factorisation unique).  Row-major pairs:
kron(S_L, S_R)[(i, j), (l, k)] = S_L[i, l] S_R[j, k].  The chart around (alpha, B_l, d_l) is

    alpha(n) = alpha exp(n),   d_l(m_l) = d_l * exp(m_l) with sum(m_l) = 0,
    B_l(M_l) = B_l Cayley(Skew(M_l)),   M_l strictly lower-triangular,

with free coordinates eta = (n, m_L,1..m_L,a-1, M_L, m_R,1..m_R,b-1, M_R), where
m_l,last = -(sum of the others).  The metric at eta = 0 is F = J^T (1/2 S^-1 kron S^-1) J,
i.e. F_uv = 1/2 tr(S^-1 dS_u S^-1 dS_v).

Derived here (by differentiating S(eta); nothing is assumed about J), with kappa_L = b and
kappa_R = a (the size of the *other* factor) and C_ij = 4 (d_i - d_j)^2 / (d_i d_j):

    F = blockdiag( a b / 2,
                   (kappa_L / 2)(I_{a-1} + 1 1^T),  diag_{i>j} kappa_L C_L,ij,
                   (kappa_R / 2)(I_{b-1} + 1 1^T),  diag_{i>j} kappa_R C_R,ij ),

so every cross term (n-m, n-M, m-M, m_L-m_R, M_L-M_R, ...) vanishes.  The sum-zero block
is (kappa/2) I on sum-zero vectors written in free coordinates (m = P m_free,
P = [I; -1^T], P^T P = I + 1 1^T).  Its inverse is
((kappa/2)(I_{a-1} + 1 1^T))^{-1} = (2/kappa)(I - 1 1^T / a), shown for a = 2, 3, 4.

Checked symbolically in alpha and d with the det constraint imposed
(d_last = 1 / prod(others)) for (a, b) = (2, 2) and (2, 3) at B_L = B_R = I; the trace
form is cross-checked against the kron form.  Rotation invariance: (2, 3) again at exact
rational rotations B_L = Cayley(skew(1/2)), B_R = Cayley(skew(c)), d still symbolic (there
via the trace form, computed over sympy's rational-function field; the kron form with
plain Matrix arithmetic takes ~40 s at a rotated B).

The package: the F derived for (2, 3) (symbolic in alpha and d) is evaluated at random
rationals and compared with KroneckerSpectralSPD.metric_matrix at a point with those values
and random rational rotations B_L, B_R.

Run:  python derivations/claim6_kronecker_metric.py
"""

import sympy as sp
from _common import (
    cayley,
    check,
    check_close,
    fisher_at_origin,
    fisher_trace_form,
    is_zero_matrix,
    kron_chart,
    kron_inverse_at_origin,
    lower_pairs,
    lower_symbols,
    package,
    random_rational,
    rational_rotation,
    sample_rng,
    skew,
    tangents_at_origin,
    to_tensor,
    unit_det,
)

RATIONAL_POINT = (sp.Rational(2, 3), sp.Rational(-5, 7), sp.Rational(3, 11))


def sum_zero_block(kappa, n):
    """(kappa / 2)(I + 1 1^T), the metric on the n - 1 free coordinates of a sum-zero m."""
    return kappa / 2 * (sp.eye(n - 1) + sp.ones(n - 1, n - 1))


def expected_fisher(dL, dR):
    a, b = len(dL), len(dR)

    def C(d):
        return [4 * (d[i] - d[j]) ** 2 / (d[i] * d[j]) for i, j in lower_pairs(len(d))]

    return sp.diag(
        sp.Rational(a * b, 2),
        sum_zero_block(b, a),
        sp.diag(*[b * c for c in C(dL)]),
        sum_zero_block(a, b),
        sp.diag(*[a * c for c in C(dR)]),
    )


def main():
    alpha = sp.Symbol("alpha", positive=True)
    X, Y = sp.Matrix(2, 2, sp.symbols("x:4")), sp.Matrix(3, 3, sp.symbols("y:9"))
    K, idx = sp.kronecker_product(X, Y), [(i, j) for i in range(2) for j in range(3)]
    check(
        all(K[i * 3 + j, l * 3 + k] == X[i, l] * Y[j, k] for i, j in idx for l, k in idx),
        "kronecker_product is the row-major-pair convention kron[(i,j),(l,k)] = X_il Y_jk",
    )
    for a, b in ((2, 2), (2, 3)):
        dL, dR = unit_det("p", a), unit_det("q", b)
        print(f"(a, b) = ({a}, {b}), B_L = B_R = I, d_L = {dL}, d_R = {dR}:")
        S, eta, blocks = kron_chart(alpha, sp.eye(a), dL, sp.eye(b), dR)
        S0inv = kron_inverse_at_origin(alpha, sp.eye(a), dL, sp.eye(b), dR)
        F = fisher_at_origin(S, eta, S0inv).applyfunc(sp.cancel)
        block = {u: name for name, us in blocks.items() for u in us}
        off = [F[u, v] for u in block for v in block if block[u] != block[v]]
        check(all(x == 0 for x in off), f"F is block diagonal over {list(blocks)} (cross terms 0)")
        check(
            is_zero_matrix(F - expected_fisher(dL, dR), sp.cancel),
            f"F_nn = ab/2, m-blocks (kappa/2)(I + 11^T), M-blocks kappa C_ij; kappa_L = {b}, "
            f"kappa_R = {a}",
        )
        for name, us in blocks.items():
            print(f"  F_{name} =", F.extract(list(us), list(us)).applyfunc(sp.factor).tolist())
        derived = (alpha, dL, dR, F)

        # Cross-check: trace form F_uv = 1/2 tr(S^-1 dS_u S^-1 dS_v).
        Ftr = fisher_trace_form(tangents_at_origin(S, eta), S0inv)
        check(is_zero_matrix(Ftr - F, sp.cancel), "trace form equals kron form")

    # Rotation invariance at exact rational rotations, d still symbolic (a symbolic B is too
    # slow; the kron form is slow here too, so the trace form, equal to it above, is used).
    c = lower_symbols("c", 3)
    c_vals = dict(zip([c[i, j] for i, j in lower_pairs(3)], RATIONAL_POINT, strict=True))
    BR = cayley(skew(c)).xreplace(c_vals)
    BL = cayley(sp.Matrix([[0, -sp.Rational(1, 2)], [sp.Rational(1, 2), 0]]))
    dL, dR = unit_det("p", 2), unit_det("q", 3)
    print(f"(a, b) = (2, 3), B_L = Cayley(skew(1/2)), B_R = Cayley(skew(c)), c = {RATIONAL_POINT}:")
    check(BL.T * BL == sp.eye(2) and BR.T * BR == sp.eye(3), "B_L and B_R are exact rotations")
    S, eta, _ = kron_chart(alpha, BL, dL, BR, dR)
    F = fisher_trace_form(tangents_at_origin(S, eta), kron_inverse_at_origin(alpha, BL, dL, BR, dR))
    check(
        is_zero_matrix(F - expected_fisher(dL, dR), sp.cancel),
        "same block-diagonal F at rotated B_l: metric is rotation invariant",
    )

    # Inverse of the sum-zero block.
    kappa = sp.Symbol("kappa", positive=True)
    for n in (2, 3, 4):
        inv = 2 / kappa * (sp.eye(n - 1) - sp.ones(n - 1, n - 1) / n)
        check(
            sum_zero_block(kappa, n).inv().applyfunc(sp.cancel) == inv,
            f"n = {n}: ((kappa/2)(I_{n - 1} + 11^T))^-1 = (2/kappa)(I - 11^T/{n})",
        )
    check_package(*derived)
    print("Claims 5-6 (Kronecker chart: block-diagonal Fisher metric): derived for (2,2), (2,3).")


def random_point(rng, alpha, dL, dR):
    """Random positive rationals for ``alpha`` and the free eigenvalues of ``dL``, ``dR``
    (distinct), as a substitution, the package's ``KroneckerSpectralPoint`` with random
    rational rotations, and the two rotations (exact)."""
    ms = package()
    free = sorted(set().union(*(sp.sympify(x).free_symbols for x in (*dL, *dR))), key=str)
    while True:
        point = {s: abs(random_rational(rng, 1, 4)) for s in [alpha, *free]}
        vL, vR = ([sp.sympify(x).xreplace(point) for x in d] for d in (dL, dR))
        if len(set(vL)) == len(vL) and len(set(vR)) == len(vR):
            break
    QL, QR = rational_rotation(rng, len(dL)), rational_rotation(rng, len(dR))
    x = ms.manifolds.kronecker.KroneckerSpectralPoint(
        to_tensor(point[alpha]),
        ms.SpectralPoint(to_tensor(QL), to_tensor(vL)),
        ms.SpectralPoint(to_tensor(QR), to_tensor(vR)),
    )
    return point, x, (QL, QR)


def check_package(alpha, dL, dR, F):
    """The derived metric at random rationals against ``KroneckerSpectralSPD.metric_matrix``."""
    ms = package()
    a, b = len(dL), len(dR)
    point, x, _ = random_point(sample_rng("claim6_kronecker_metric"), alpha, dL, dR)
    M = ms.KroneckerSpectralSPD(a, b, dtype=to_tensor(0).dtype)
    print(f"(a, b) = ({a}, {b}), the package at random rationals and rational rotations:")
    check_close(F.xreplace(point), M.metric_matrix(x), "metric_matrix = the derived F")


if __name__ == "__main__":
    main()
