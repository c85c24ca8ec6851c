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


# --- Kronecker chart (Claims 5-6) -------------------------------------------------------


def unit_det(name, n):
    """Symbols d_1..d_{n-1} > 0 and d_n = 1 / (d_1 ... d_{n-1}), so that prod(d) = 1."""
    free = list(sp.symbols(f"{name}1:{n}", positive=True))
    return free + [1 / sp.Mul(*free)]


def factor_chart(B, d, tag):
    """Chart of one unit-determinant factor around (B, d): returns (S_l(eta_l), eta_l).

    S_l = B(M) Diag(d * exp(m)) B(M)^T with B(M) = B Cayley(Skew(M)) and a sum-zero m whose
    free coordinates are m_1..m_{n-1} (m_n = -(m_1 + ... + m_{n-1})); eta_l lists the free
    m's, then M_ij (i > j) row-major.  Symbols are named m<tag>k and M<tag>ij.
    """
    n = len(d)
    m_free = list(sp.symbols(f"m{tag}1:{n}"))
    m = m_free + [-sp.Add(*m_free)]
    M = lower_symbols(f"M{tag}", n)
    BM = B * cayley(skew(M))
    S = BM * sp.diag(*[d[i] * sp.exp(m[i]) for i in range(n)]) * BM.T
    return S, m_free + [M[i, j] for i, j in lower_pairs(n)]


def kron_chart(alpha, BL, dL, BR, dR):
    """Kronecker chart S(eta) = alpha exp(n) (S_L(eta_L) kron S_R(eta_R)).

    sympy's kronecker_product is the row-major-pair convention,
    kron(S_L, S_R)[(i, j), (l, k)] = S_L[i, l] S_R[j, k] with (i, j) -> i * b + j.
    Returns (S, eta, blocks): eta = (n, free m_L, M_L, free m_R, M_R) and blocks maps
    "n", "m_L", "M_L", "m_R", "M_R" to the index ranges of eta.
    """
    nu = sp.Symbol("n")
    SL, etaL = factor_chart(BL, dL, "L")
    SR, etaR = factor_chart(BR, dR, "R")
    a, b = len(dL), len(dR)
    sizes = [
        ("n", 1),
        ("m_L", a - 1),
        ("M_L", a * (a - 1) // 2),
        ("m_R", b - 1),
        ("M_R", b * (b - 1) // 2),
    ]
    blocks, start = {}, 0
    for name, size in sizes:
        blocks[name] = range(start, start + size)
        start += size
    S = alpha * sp.exp(nu) * sp.kronecker_product(SL, SR)
    return S, [nu] + etaL + etaR, blocks


def kron_inverse_at_origin(alpha, BL, dL, BR, dR):
    """S(0)^{-1} = (S_L^{-1} kron S_R^{-1}) / alpha, with S_l^{-1} = B_l Diag(1/d_l) B_l^T."""
    SLinv = BL * sp.diag(*[1 / x for x in dL]) * BL.T
    SRinv = BR * sp.diag(*[1 / x for x in dR]) * BR.T
    return sp.kronecker_product(SLinv, SRinv) / alpha


def tangents_at_origin(S, eta):
    """The matrices dS/deta_u at eta = 0 (the columns of jacobian_at_origin, un-vec'd)."""
    N = S.shape[0]
    J = jacobian_at_origin(S, eta)
    return [J[:, u].reshape(N, N).T for u in range(len(eta))]  # undo column-major vec


def fisher_trace_form(dS, S0inv):
    """F_uv = 1/2 tr(S^{-1} dS_u S^{-1} dS_v), the trace form of fisher_at_origin's metric.

    Computed with sympy's DomainMatrix over the field of rational functions of the entries'
    symbols, which stays fast where plain Matrix arithmetic with cancel() blows up (e.g. at
    a rotated B with symbolic d).
    """
    from sympy.polys.matrices import DomainMatrix

    gens = sorted(set().union(S0inv.free_symbols, *(X.free_symbols for X in dS)), key=str)
    field = sp.QQ.frac_field(*gens) if gens else sp.QQ

    def dm(X):
        return DomainMatrix.from_Matrix(X).convert_to(field)

    Sinv = dm(S0inv)
    A = [Sinv * dm(X) for X in dS]
    return sp.Matrix([[(Au * Av).to_Matrix().trace() / 2 for Av in A] for Au in A])


# --- The package's implementation at sample points ---------------------------------------
#
# A derivation proves a closed form; these helpers evaluate that proven form at random
# rational points and compare it with the function of manifold_spectral that implements it,
# so that a code change which breaks a proven formula makes the derivation fail.


def package():
    """``manifold_spectral`` of this checkout (the folder above derivations/), with torch."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    import manifold_spectral

    return manifold_spectral


def sample_rng(name):
    """A ``random.Random`` seeded by the script's name (fixed points, reproducible runs)."""
    import random
    import zlib

    return random.Random(zlib.crc32(name.encode()))


def random_rational(rng, lo=-9, hi=9, den=7):
    """A random rational ``p / q`` with ``lo <= p / q <= hi``-ish small numerator and
    denominator (never zero)."""
    while True:
        q = rng.randint(1, den)
        p = rng.randint(lo * q, hi * q)
        if p != 0:
            return sp.Rational(p, q)


def distinct_positive(rng, n):
    """``n`` distinct positive rationals (spectral charts need distinct eigenvalues)."""
    out = []
    while len(out) < n:
        x = random_rational(rng, 1, 6)
        if x not in out:
            out.append(x)
    return out


def rational_rotation(rng, n):
    """An exact rational rotation ``Cayley(skew(c))`` with random rational ``c``."""
    c = lower_symbols("_c", n)
    vals = {c[i, j]: random_rational(rng, -2, 2) for i, j in lower_pairs(n)}
    return cayley(skew(c)).xreplace(vals)


def to_tensor(X):
    """A sympy matrix / list / number (exact) as a float64 torch tensor."""
    import torch

    if isinstance(X, sp.MatrixBase):
        return torch.tensor(
            [[float(sp.N(x, 30)) for x in row] for row in X.tolist()], dtype=torch.float64
        )
    if isinstance(X, (list, tuple)):
        return torch.tensor([float(sp.N(x, 30)) for x in X], dtype=torch.float64)
    return torch.tensor(float(sp.N(X, 30)), dtype=torch.float64)


def check_close(expected, actual, msg, rtol=1e-11):
    """``check`` that the package's float64 ``actual`` equals the proven ``expected`` (sympy,
    exact) to ``rtol`` relative to the largest entry."""
    import torch

    want = to_tensor(expected).reshape(actual.shape)
    scale = max(float(want.abs().max()), 1e-300)
    err = float((actual.detach().to(torch.float64) - want).abs().max()) / scale
    check(err <= rtol, f"package: {msg} (relative error {err:.1e})")
