"""Small sympy helpers shared by the derivation scripts (not a derivation itself).

Notation follows the paper: a point is S = B Diag(d) B^T with B orthogonal and d > 0;
the local chart around (B, d) has coordinates eta = (m, M), m in R^n and M strictly
lower-triangular, with

    d(m) = d * exp(m),   B(M) = B Cayley(Skew(M)),   S(eta) = B(M) Diag(d(m)) B(M)^T,

where Skew(M) = M - M^T and Cayley(N) = (I + N)(I - N)^{-1}.
"""

import sympy as sp


def skew(M):
    """Skew(M) = M - M^T."""
    return M - M.T


def lower_symbols(name, n):
    """Strictly lower-triangular n x n matrix of symbols name_ij (i > j); zeros elsewhere."""
    return sp.Matrix(n, n, lambda i, j: sp.Symbol(f"{name}{i + 1}{j + 1}") if i > j else 0)


def lower_pairs(n):
    """Index pairs (i, j), i > j, of the strictly lower triangle (row-major order)."""
    return [(i, j) for i in range(n) for j in range(i)]


def cayley(N):
    """Cayley(N) = (I + N)(I - N)^{-1} for a skew-symmetric N.

    The inverse is computed once for a generic skew matrix (adjugate / determinant,
    a cheap closed form) and N's entries are then substituted in; this keeps the
    expressions small when N itself has complicated entries.
    """
    n = N.shape[0]
    if (N + N.T).applyfunc(sp.simplify) != sp.zeros(n, n):
        raise ValueError("cayley() expects a skew-symmetric matrix")
    A = lower_symbols("_a", n)
    X = skew(A)
    I = sp.eye(n)
    generic = ((I + X) * (I - X).adjugate() / (I - X).det()).applyfunc(sp.cancel)
    return generic.xreplace({A[i, j]: N[i, j] for i, j in lower_pairs(n)})


def vec(X):
    """Column-major vectorisation, as in vec(A X B) = (B^T kron A) vec(X)."""
    n, k = X.shape
    return sp.Matrix([X[i, j] for j in range(k) for i in range(n)])


def chart(B, d):
    """Return (S(eta), m, M) for the chart around (B, d); d is a list of symbols."""
    n = len(d)
    m = sp.Matrix(sp.symbols(f"m1:{n + 1}"))
    M = lower_symbols("M", n)
    BM = B * cayley(skew(M))
    S = BM * sp.diag(*[d[i] * sp.exp(m[i]) for i in range(n)]) * BM.T
    return S, m, M


def coords(m, M):
    """Flat list of chart coordinates: m_1..m_n, then M_ij (i > j) row-major."""
    n = m.shape[0]
    return list(m) + [M[i, j] for i, j in lower_pairs(n)]


def at_origin(expr, eta):
    """Evaluate expr at eta = 0."""
    return expr.xreplace({e: 0 for e in eta})


def jacobian_at_origin(S, eta):
    """J = d vec(S) / d eta at eta = 0 (an n^2 x dim(eta) matrix, entries expanded).

    Column a is the partial derivative along coordinate eta_a, so the other coordinates
    are set to 0 before differentiating (same result, much smaller expressions).
    """
    v = vec(S)
    cols = []
    for e in eta:
        along = v.xreplace({o: 0 for o in eta if o != e})
        cols.append(along.diff(e).xreplace({e: 0}).applyfunc(sp.expand))
    return sp.Matrix.hstack(*cols)


def fisher_at_origin(S, eta, S0inv):
    """F = J^T (1/2 S^{-1} kron S^{-1}) J at eta = 0: the Fisher-Rao metric of a Gaussian
    with precision S, <dS, dS>_S = 1/2 tr(S^{-1} dS S^{-1} dS), pulled back to the chart."""
    J = jacobian_at_origin(S, eta)
    K = (sp.kronecker_product(S0inv, S0inv) / 2).applyfunc(sp.expand)
    return (J.T * (K * J).applyfunc(sp.expand)).applyfunc(sp.expand)


def is_zero_matrix(X, simplify=sp.simplify):
    return all(simplify(x) == 0 for x in X)


def check(cond, msg):
    """Exit non-zero with a message if a derivation check fails; otherwise print it."""
    if not cond:
        print(f"FAILED: {msg}")
        raise SystemExit(1)
    print(f"  ok: {msg}")
