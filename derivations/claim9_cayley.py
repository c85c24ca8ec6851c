"""Claim 9: the Cayley map sends skew matrices into SO(n); defect of its Neumann truncation.

(a) For skew N (N^T = -N), Cayley(N) = (I + N)(I - N)^{-1} satisfies
    Cayley(N)^T Cayley(N) = I and det Cayley(N) = 1, so Cayley(N) is in SO(n).
    Checked for a fully symbolic skew N, n = 2 and n = 3.

(b) Replacing (I - X)^{-1} by its truncated Neumann series (I + X)(I + X^2 + X^4)
    = I + X + ... + X^5 gives T(X) = (I + X)^2 (I + X^2 + X^4).  As polynomials,
        (1 + x)^2 (1 + x^2 + x^4)(1 - x) = (1 + x)(1 - x^6),
    and since X commutes with its own powers this lifts to matrices:
        T(X) = Cayley(X)(I - X^6).
    For skew X, X^6 is symmetric and commutes with Cayley(X), so by (a)
        T^T T - I = (I - X^6)^2 - I = -2 X^6 + X^12,
    i.e. the orthogonality defect is O(|X|^6).  Checked for the polynomial identity in x,
    and for the matrix identities with a fully symbolic skew X, n = 2 and n = 3.

Run:  python derivations/claim9_cayley.py
"""

import sympy as sp
from _common import (
    cayley,
    check,
    check_close,
    is_zero_matrix,
    lower_pairs,
    lower_symbols,
    package,
    random_rational,
    rational_rotation,
    sample_rng,
    skew,
    to_tensor,
)


def main():
    x = sp.Symbol("x")
    check(
        sp.expand((1 + x) ** 2 * (1 + x**2 + x**4) * (1 - x) - (1 + x) * (1 - x**6)) == 0,
        "(1+x)^2 (1+x^2+x^4)(1-x) = (1+x)(1-x^6) as polynomials",
    )
    for n in (2, 3):
        print(f"n = {n}, generic symbolic skew matrix:")
        N = skew(lower_symbols("a", n))
        I = sp.eye(n)
        C = cayley(N)
        check(is_zero_matrix(C.T * C - I, sp.cancel), "Cayley(N)^T Cayley(N) = I")
        check(sp.cancel(C.det()) == 1, "det Cayley(N) = 1, so Cayley(N) is in SO(n)")

        X = N
        X2 = (X * X).applyfunc(sp.expand)
        X4 = (X2 * X2).applyfunc(sp.expand)
        X6 = (X2 * X4).applyfunc(sp.expand)
        X12 = (X6 * X6).applyfunc(sp.expand)
        T = ((I + X) * (I + X) * (I + X2 + X4)).applyfunc(sp.expand)
        check(
            is_zero_matrix(T * (I - X) - (I + X) * (I - X6), sp.expand),
            "T(X) (I - X) = (I + X)(I - X^6)",
        )
        check(is_zero_matrix(T - C * (I - X6), sp.cancel), "T(X) = Cayley(X)(I - X^6)")
        check(
            is_zero_matrix(T.T * T - I - (-2 * X6 + X12), sp.expand),
            "T^T T - I = (I - X^6)^2 - I = -2 X^6 + X^12",
        )
    check_package()
    print("Claim 9 (Cayley(skew) in SO(n); Neumann-truncation defect -2X^6 + X^12): derived.")


def check_package(n=4):
    """The package's Cayley maps against the proven closed forms at a random rational point."""
    linalg = package().linalg
    rng = sample_rng("claim9")
    c = lower_symbols("c", n)
    X = skew(c).xreplace(
        {c[i, j]: random_rational(rng, -3, 3, den=9) / 8 for i, j in lower_pairs(n)}
    )
    B = rational_rotation(rng, n)
    I = sp.eye(n)
    C = cayley(X)
    X6 = X**6
    print(f"n = {n}, the package at a random rational skew X:")
    Xt = to_tensor(X)
    check_close(C, linalg.cayley_exact(Xt), "linalg.cayley_exact(X) = Cayley(X)")
    check_close(
        B * C, linalg.cayley_exact_apply(to_tensor(B), Xt), "cayley_exact_apply = B Cayley(X)"
    )
    check_close(C * (I - X6), linalg.cayley_neumann(Xt), "cayley_neumann(X) = Cayley(X)(I - X^6)")
    defect = sp.sqrt(sum(x**2 for x in (-2 * X6 + X6 * X6)))
    check_close(
        defect,
        linalg.orthogonality_error(linalg.cayley_neumann(Xt)),
        "orthogonality_error(cayley_neumann(X)) = ||-2 X^6 + X^12||_F",
        rtol=1e-6,
    )


if __name__ == "__main__":
    main()
