"""Claim 4: the Fisher-Rao metric is diagonal in the spectral local chart.

Setting.  S = B Diag(d) B^T (B orthogonal, d > 0) is the precision of a Gaussian; its
Fisher-Rao metric is <dS, dS>_S = 1/2 tr(S^{-1} dS S^{-1} dS).  In the local chart
eta = (m, M) around (B, d),

    S(eta) = B(M) Diag(d * exp(m)) B(M)^T,   B(M) = B Cayley(M - M^T),

the metric at eta = 0 is F = J^T (1/2 S^{-1} kron S^{-1}) J with J = d vec(S)/d eta.

Derived here (by differentiating S(eta) symbolically; nothing is assumed about J):

    F = blockdiag( 1/2 I_n ,  diag_{i>j} C_ij ),   C_ij = 4 (d_i - d_j)^2 / (d_i d_j),

with every cross term (m-m, m-M, M-M) equal to zero.  C_ij vanishes when d_i = d_j, so
the metric is then singular and the Moore-Penrose inverse is used (see
claim4_natural_gradient.py).

Checked symbolically in d_i for n = 2 and n = 3 at B = I, and for a generic rotation B
(n = 2: rotation by a symbolic angle; n = 3: B = Cayley of a skew matrix with exact
rational entries, an exact rotation in SO(3)) to show the metric does not depend on B.  The
trace form 1/2 tr(S^{-1} dS_a S^{-1} dS_b) is cross-checked against the kron form.

The package: the F derived for n = 3 (symbolic in d) is evaluated at random rational d and
compared with SpectralSPD.metric at a point with those eigenvalues and a random rational
rotation B (the metric does not depend on B).

Run:  python derivations/claim4_fisher_metric.py
"""

import sympy as sp
from _common import (
    cayley,
    chart,
    check,
    check_close,
    coords,
    distinct_positive,
    fisher_at_origin,
    is_zero_matrix,
    jacobian_at_origin,
    lower_pairs,
    lower_symbols,
    package,
    rational_rotation,
    sample_rng,
    skew,
    to_tensor,
)

RATIONAL_POINT = (sp.Rational(2, 3), sp.Rational(-5, 7), sp.Rational(3, 11))


def expected_fisher(d):
    n = len(d)
    C = [4 * (d[i] - d[j]) ** 2 / (d[i] * d[j]) for i, j in lower_pairs(n)]
    return sp.diag(*([sp.Rational(1, 2)] * n + C))


def fisher(B, d):
    S, m, M = chart(B, d)
    eta = coords(m, M)
    S0inv = B * sp.diag(*[1 / di for di in d]) * B.T  # inverse of S(0) = B Diag(d) B^T
    return S, eta, S0inv, fisher_at_origin(S, eta, S0inv)


def main():
    for n in (2, 3):
        d = sp.symbols(f"d1:{n + 1}", positive=True)
        print(f"n = {n}, B = I:")
        S, eta, S0inv, F = fisher(sp.eye(n), d)
        F = F.applyfunc(sp.factor)
        check(F.is_diagonal(), "F is diagonal (all cross terms vanish)")
        check(
            is_zero_matrix(F - expected_fisher(d), sp.cancel),
            "F_mm = 1/2 I and F_{M_ij} = 4 (d_i - d_j)^2 / (d_i d_j) for i > j",
        )
        print("  F =", sp.simplify(F.diagonal()))
        derived = (d, F)

        # Cross-check: trace form F_ab = 1/2 tr(S^-1 dS_a S^-1 dS_b).
        J = jacobian_at_origin(S, eta)
        dS = [J[:, a].reshape(n, n).T for a in range(len(eta))]  # undo column-major vec
        A = [S0inv * dSa for dSa in dS]
        Ftr = sp.Matrix([[(Aa * Ab).trace() / 2 for Ab in A] for Aa in A])
        check(is_zero_matrix(Ftr - F, sp.cancel), "trace form equals kron form")

        # Rotation invariance: the same F at a generic B.
        if n == 2:
            th = sp.Symbol("theta", real=True)
            B = sp.Matrix([[sp.cos(th), -sp.sin(th)], [sp.sin(th), sp.cos(th)]])
            label = "rotation by symbolic angle theta"

            def simp(x):
                return sp.simplify(sp.trigsimp(x))

        else:
            # Cayley of an exact rational skew matrix: an exact rational rotation in SO(3)
            # (a fully symbolic B is too slow here; d stays symbolic).
            c = lower_symbols("c", n)
            vals = dict(zip([c[i, j] for i, j in lower_pairs(n)], RATIONAL_POINT, strict=True))
            B = cayley(skew(c)).xreplace(vals)
            label = f"B = Cayley(skew(c)) at c = {RATIONAL_POINT}"
            simp = sp.cancel
        check(is_zero_matrix(B.T * B - sp.eye(n), simp), f"{label} is orthogonal")
        _, _, _, FB = fisher(B, d)
        check(
            is_zero_matrix(FB - expected_fisher(d), simp),
            f"same F at generic B ({label}): metric is rotation invariant",
        )
    check_package(*derived)
    print("Claim 4 (Fisher metric in the spectral chart is diagonal): derived for n = 2, 3.")


def check_package(d, F):
    """The derived metric ``F`` (symbolic in ``d``) at random rational ``d`` against
    ``SpectralSPD.metric``."""
    ms = package()
    rng = sample_rng("claim4_fisher_metric")
    n = len(d)
    vals = distinct_positive(rng, n)
    M = ms.SpectralSPD(n, dtype=to_tensor(0).dtype)
    x = ms.SpectralPoint(to_tensor(rational_rotation(rng, n)), to_tensor(vals))
    print(f"n = {n}, the package at d = {vals}, a random rational rotation B:")
    check_close(
        F.xreplace(dict(zip(d, vals, strict=True))),
        M.to_vector(M.metric(x)).diag(),
        "SpectralSPD.metric = the derived F",
    )


if __name__ == "__main__":
    main()
