"""Claim 2: the spectral GOP step agrees with the default scheme to first order in beta2.

Spectral step (Gaussian precision S = B Diag(d) B^T, gradient g, gamma in {0, 1}):

    q     = B^T g
    d_new = d * exp(beta2 / d * (-gamma d + q*q))                      (elementwise)
    U_ij  = -q_i q_j / (d_i - d_j)  for i > j,  U strictly lower-triangular
    N     = U - U^T,   B_new = B Cayley(beta2/2 N)
    S_new = B_new Diag(d_new) B_new^T

Default scheme:  S_default = (1 - gamma beta2) S + beta2 g g^T.

Derived: the Taylor coefficients of S_new in beta2 of order 0 and 1 (computed by
differentiating S_new symbolically and setting beta2 = 0) equal those of S_default, i.e.
S_new - S_default = O(beta2^2).  The same holds for the truncated variant
d_new = (1 - gamma beta2) d + beta2 q*q.  The second-order coefficient is shown to be
non-zero at a sample point, so the agreement is genuinely first-order only.

Symbolic in d_i, g_i, gamma (so gamma = 0 and gamma = 1 are both covered), n = 2 and 3,
at B = I.  This is no loss of generality (rotation equivariance): with q = B^T g,
S_new = B S'_new B^T where S'_new is the B = I step for (d, q), and
S_default = B [(1 - gamma beta2) Diag(d) + beta2 q q^T] B^T is the B = I default scheme
for (d, q) conjugated by the same B.  The n = 2 case is also checked at a generic
rotation B = Cayley([[0, -t], [t, 0]]) with symbolic t.

The package: the step's factors (B_new, d_new) at random rationals (n = 3, a rational
rotation B, gamma = 0 and 1, both variants) are compared with those of
Gaussian(SpectralSPD(3), beta2=beta2, gamma=gamma).precision_step(x, GOP(g)).

Run:  python derivations/claim2_gop_step.py
"""

import sympy as sp
from _common import (
    cayley,
    check,
    check_close,
    distinct_positive,
    is_zero_matrix,
    lower_pairs,
    package,
    random_rational,
    rational_rotation,
    sample_rng,
    to_tensor,
)

beta2, gamma = sp.symbols("beta2 gamma", real=True)


def spectral_step(B, d, g, truncated=False):
    B_new, d_new = spectral_factors(B, d, g, truncated)
    return B_new * sp.diag(*d_new) * B_new.T


def spectral_factors(B, d, g, truncated=False):
    """``(B_new, d_new)`` of the spectral step."""
    n = len(d)
    q = B.T * g
    if truncated:
        d_new = [(1 - gamma * beta2) * d[i] + beta2 * q[i] ** 2 for i in range(n)]
    else:
        d_new = [d[i] * sp.exp(beta2 / d[i] * (-gamma * d[i] + q[i] ** 2)) for i in range(n)]
    U = sp.zeros(n, n)
    for i, j in lower_pairs(n):
        U[i, j] = -q[i] * q[j] / (d[i] - d[j])
    N = U - U.T
    return B * cayley(beta2 / 2 * N), d_new


def default_step(B, d, g):
    S = B * sp.diag(*d) * B.T
    return (1 - gamma * beta2) * S + beta2 * g * g.T


def taylor_coeff(S, k):
    """k-th Taylor coefficient in beta2 at 0, by differentiation."""
    return S.diff(beta2, k).xreplace({beta2: 0}) / sp.factorial(k)


def first_order_agreement(B, d, g, truncated, simp):
    S_new, S_def = spectral_step(B, d, g, truncated), default_step(B, d, g)
    return all(
        is_zero_matrix(taylor_coeff(S_new, k) - taylor_coeff(S_def, k), simp) for k in (0, 1)
    )


def main():
    for n in (2, 3):
        d = sp.symbols(f"d1:{n + 1}", positive=True)
        g = sp.Matrix(sp.symbols(f"g1:{n + 1}", real=True))
        print(f"n = {n}, B = I, symbolic d, g, gamma:")
        S1 = taylor_coeff(spectral_step(sp.eye(n), d, g), 1).applyfunc(sp.cancel)
        print("  d S_new / d beta2 at 0 =", S1.tolist())
        for truncated, label in (
            (False, "exp"),
            (True, "truncated (1 - gamma beta2) d + beta2 q*q"),
        ):
            check(
                first_order_agreement(sp.eye(n), d, g, truncated, sp.cancel),
                f"{label} variant: S_new = S_default + O(beta2^2) (orders 0 and 1 agree)",
            )

    # Not exact: the beta2^2 coefficients differ (n = 2, gamma = 1, sample point).
    d, g = (sp.Integer(3), sp.Integer(1)), sp.Matrix([sp.Rational(1, 2), 2])
    diff2 = taylor_coeff(spectral_step(sp.eye(2), d, g) - default_step(sp.eye(2), d, g), 2)
    diff2 = diff2.xreplace({gamma: 1}).applyfunc(sp.simplify)
    check(
        not is_zero_matrix(diff2),
        f"beta2^2 coefficient of S_new - S_default is {diff2.tolist()} != 0",
    )

    # Rotation equivariance, checked directly for n = 2 at a generic rotation
    # B = Cayley([[0, -t], [t, 0]]) = [[1 - t^2, -2t], [2t, 1 - t^2]] / (1 + t^2), which is
    # every rotation except by pi (rational in t, so no trig simplification is needed).
    t = sp.Symbol("t", real=True)
    B = cayley(sp.Matrix([[0, -t], [t, 0]]))
    d = sp.symbols("d1:3", positive=True)
    g = sp.Matrix(sp.symbols("g1:3", real=True))
    print("n = 2, B = Cayley([[0, -t], [t, 0]]), symbolic t (a generic rotation):")
    check(is_zero_matrix(B.T * B - sp.eye(2), sp.cancel), "B is orthogonal")
    check(
        first_order_agreement(B, d, g, False, sp.cancel),
        "exp variant: S_new = S_default + O(beta2^2) at generic B",
    )
    check_package()
    print("Claim 2 (spectral GOP step = default scheme to first order in beta2): derived.")


def check_package(n=3):
    """The step's closed form at random rationals against ``Gaussian.precision_step``."""
    ms = package()
    rng = sample_rng("claim2_gop_step")
    B, d = rational_rotation(rng, n), distinct_positive(rng, n)
    g = sp.Matrix([random_rational(rng, -3, 3) for _ in range(n)])
    M = ms.SpectralSPD(n, dtype=to_tensor(0).dtype)
    x = ms.SpectralPoint(to_tensor(B), to_tensor(d))
    for gam in (0, 1):
        for truncated in (False, True):
            label = f"gamma = {gam}, {'truncated' if truncated else 'exp'}"
            point = {beta2: sp.Rational(1, 10), gamma: gam}
            B_new, d_new = spectral_factors(B, d, g, truncated)
            B_new, d_new = B_new.xreplace(point), [di.xreplace(point) for di in d_new]
            gauss = ms.Gaussian(
                M, beta2=0.1, gamma=gam, exponential="truncated" if truncated else "exact"
            )
            y = gauss.precision_step(x, ms.GOP(to_tensor(g).reshape(n)))
            check_close(list(d_new), y.d, f"{label}: precision_step's d_new")
            check_close(B_new, y.B, f"{label}: precision_step's B_new")


if __name__ == "__main__":
    main()
