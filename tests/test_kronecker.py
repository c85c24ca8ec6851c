"""KroneckerSpectralSPD against autograd, the paper's update boxes and dense references.

``S = alpha (S_L kron S_R)``, ``S_l = B_l Diag(d_l) B_l^T``, ``det S_l = 1`` (DESIGN.md
section 3). The references are computed here from definitions, independently of the package:
the Fisher matrix of the chart by autograd (``F = J^T (1/2 S^-1 kron S^-1) J``), the exact RGD
step as ``pinv(F)`` times the autograd chart gradient, the bottom box of Fig. 1 and the
practical scheme of Fig. 6 (right) written out below, dense matrix powers by ``eigh``, and the
nearest Kronecker product by an SVD of the Van Loan-Pitsianis rearrangement. float64 unless
said; row-major ``vec`` (torch's ``flatten``) throughout.
"""

from __future__ import annotations

import math

import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.diagnostics import (
    autograd_fisher,
    autograd_local_gradient,
    check_metric,
    check_natural_gradient,
)
from manifold_spectral.linalg import cayley_exact, cayley_neumann, orthogonality_error, skew
from manifold_spectral.manifolds.kronecker import sum_zero_metric, sum_zero_metric_inverse

DT = torch.float64
SHAPES = [(2, 3), (3, 4), (4, 2)]
KINDS = ["random", "near-repeated", "repeated", "origin"]

# The autograd reference forms C_ij ~ 4 delta^2 by cancellation, so a near-repeated pair
# (relative gap delta = 3e-5) costs it ~eps / delta^2 relative accuracy in that coordinate;
# REF_RTOL loosens the comparison for that kind only (elsewhere 1e-10 or tighter).
REF_RTOL = {"near-repeated": 1e-5}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_point(a: int, b: int, kind: str, seed: int = 0):
    """A point of ``KroneckerSpectralSPD(a, b)``: random (distinct eigenvalues), with a
    near-repeated or an exactly repeated eigenvalue pair in each factor, or the origin."""
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT)
    if kind == "origin":
        return K, K.origin()
    x = K.random(gen(seed))
    if kind == "random":
        return K, x
    dL, dR = x.left.d.clone(), x.right.d.clone()
    if kind == "near-repeated":
        dL[1] = dL[0] * (1 + 1e-4)
        dR[1] = dR[0] * (1 + 3e-5)
    else:  # repeated: a pair in the left factor, a pair (or triple) in the right one
        dL[1] = dL[0]
        dR[1:3] = dR[0]
    return K, K.normalize(x.alpha, ms.SpectralPoint(x.left.B, dL), ms.SpectralPoint(x.right.B, dR))


def random_sym(n: int, seed: int) -> torch.Tensor:
    A = torch.randn(n, n, generator=gen(seed), dtype=DT)
    return A + A.T


def factor(B: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return (B * d) @ B.T


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


# 1. Metric (Claim 6) --------------------------------------------------------------------------


def block_slices(a: int, b: int) -> dict[str, slice]:
    """Index ranges of ``to_vector``: ``[n, m_L[:a-1], M_L[tril], m_R[:b-1], M_R[tril]]``."""
    sizes = [("n", 1), ("m_L", a - 1), ("M_L", a * (a - 1) // 2)]
    sizes += [("m_R", b - 1), ("M_R", b * (b - 1) // 2)]
    out, i = {}, 0
    for name, s in sizes:
        out[name] = slice(i, i + s)
        i += s
    return out


def rotation_block(d: torch.Tensor, kappa: float) -> torch.Tensor:
    """``kappa C_ij = 4 kappa (d_i - d_j)^2 / (d_i d_j)`` for i > j in ``tril_indices`` order."""
    i, j = torch.tril_indices(d.numel(), d.numel(), -1)
    return torch.diag(4 * kappa * (d[i] - d[j]) ** 2 / (d[i] * d[j]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("a, b", SHAPES)
def test_metric_matches_autograd_fisher(a, b, kind):
    """The closed-form metric is the autograd Fisher to rounding, relative to its largest
    entry, in each of these 12 cases."""
    K, x = make_point(a, b, kind, seed=10 * a + b)
    F = autograd_fisher(K, x)
    scale = float(F.abs().max())
    assert check_metric(K, x) < 1e-12
    torch.testing.assert_close(K.metric_matrix(x), F, rtol=0, atol=1e-12 * scale)

    # The blocks written out from DESIGN.md: kappa_L = b, kappa_R = a.
    sl = block_slices(a, b)
    ones = {s: torch.ones(s - 1, s - 1, dtype=DT) for s in (a, b)}
    eyes = {s: torch.eye(s - 1, dtype=DT) for s in (a, b)}
    expected = {
        "n": torch.full((1, 1), a * b / 2, dtype=DT),
        "m_L": b / 2 * (eyes[a] + ones[a]),
        "M_L": rotation_block(x.left.d, b),
        "m_R": a / 2 * (eyes[b] + ones[b]),
        "M_R": rotation_block(x.right.d, a),
    }
    mask = torch.zeros_like(F, dtype=torch.bool)
    for name, s in sl.items():
        torch.testing.assert_close(F[s, s], expected[name], rtol=0, atol=1e-12 * scale)
        mask[s, s] = True
    off = F.masked_fill(mask, 0.0)
    assert float(off.abs().max()) < 1e-12 * scale, "off-block Fisher entries do not vanish"
    # Exactly repeated eigenvalues give exactly zero rotation entries (a singular metric).
    if kind in ("repeated", "origin"):
        assert float(K.metric(x).left.M[1, 0]) == 0.0
        assert float(K.metric(x).right.M[1, 0]) == 0.0


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("kappa", [1.0, 3.0, 7.0])
def test_sum_zero_metric_inverse(size, kappa):
    F = sum_zero_metric(size, kappa, dtype=DT)
    Finv = sum_zero_metric_inverse(size, kappa, dtype=DT)
    eye = torch.eye(size - 1, dtype=DT)
    torch.testing.assert_close(F @ Finv, eye, rtol=0, atol=1e-14)
    torch.testing.assert_close(Finv @ F, eye, rtol=0, atol=1e-14)
    # The block is (kappa/2) I on sum-zero m = P m_free, P = [I; -1^T]: (kappa/2) P^T P.
    P = torch.cat([eye, -torch.ones(1, size - 1, dtype=DT)])
    torch.testing.assert_close(F, kappa / 2 * P.T @ P, rtol=0, atol=1e-14)


# 2. Natural gradient and the RGD step -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("a, b", SHAPES)
def test_natural_gradient_is_pinv_fisher_times_gradient(a, b, kind):
    K, x = make_point(a, b, kind, seed=20 + a + b)
    E = random_sym(a * b, 3)
    ref_grad = autograd_local_gradient(K, x, E)
    # covector_to_vector: free components of the chart gradient (m part g_i - g_last).
    ours_grad = K.covector_to_vector(K.local_gradient(x, E))
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-12, atol=1e-12 * ref_grad.abs().max())

    rtol = REF_RTOL.get(kind, 1e-10)
    assert check_natural_gradient(K, x, E) < rtol
    F = autograd_fisher(K, x)
    ref = torch.linalg.pinv(F, hermitian=True, rtol=1e-13) @ ref_grad
    ours = K.to_vector(K.natural_gradient(x, E))
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))
    # The eigenvalue steps are sum-zero (they keep det S_l = 1).
    nat = K.natural_gradient(x, E)
    for m in (nat.left.m, nat.right.m):
        assert abs(float(m.sum())) < 1e-13 * (1 + float(m.abs().max()))


def test_natural_gradient_sees_only_the_symmetric_part():
    K, x = make_point(3, 4, "random", seed=5)
    A = torch.randn(12, 12, generator=gen(6), dtype=DT)
    nat_a = K.to_vector(K.natural_gradient(x, A))
    nat_s = K.to_vector(K.natural_gradient(x, 0.5 * (A + A.T)))
    torch.testing.assert_close(nat_a, nat_s, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("a, b", SHAPES)
def test_rgd_step_is_exact_pinv_fisher_step_in_the_chart(a, b, kind):
    K, x = make_point(a, b, kind, seed=30 + a)
    E = random_sym(a * b, 8)
    lr = 0.05
    F = autograd_fisher(K, x)
    eta = -lr * torch.linalg.pinv(F, hermitian=True, rtol=1e-13) @ autograd_local_gradient(K, x, E)
    ref = K.to_matrix(K.chart(x)(K.from_vector(eta)))
    y = ms.RGD(K, lr=lr).step(x, E)
    rtol = REF_RTOL.get(kind, 1e-11)
    torch.testing.assert_close(K.to_matrix(y), ref, rtol=rtol, atol=rtol * float(ref.abs().max()))
    assert K.check_point(y)[0]


# 3. The GOP update: dense path, Fig. 1 bottom box, Fig. 6 practical scheme ---------------------


def gradient_matrices(a: int, b: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(k, a, b, generator=gen(seed), dtype=DT)


def curvature_statistics(x, G: torch.Tensor):
    """``W_L = mean_i B_L^T G_i S_R^-1 G_i^T B_L`` and ``W_R = mean_i B_R^T G_i^T S_L^-1 G_i B_R``,
    with the factor inverses formed densely here (the package never forms them)."""
    BL, BR = x.left.B, x.right.B
    SLinv = torch.linalg.inv(factor(BL, x.left.d))
    SRinv = torch.linalg.inv(factor(BR, x.right.d))
    W_L = (BL.T @ G @ SRinv @ G.transpose(-1, -2) @ BL).mean(0)
    W_R = (BR.T @ G.transpose(-1, -2) @ SLinv @ G @ BR).mean(0)
    return W_L, W_R


def rotation_update(B, d, W, scale):
    """``B Cayley(scale Skew(Tril U))`` with ``U_ij = -W_ij / (d_i - d_j)`` (0 where equal)."""
    diff = d[:, None] - d[None, :]
    U = torch.where(diff == 0, torch.zeros_like(diff), -W / torch.where(diff == 0, 1.0, diff))
    return B @ cayley_exact(scale * skew(torch.tril(U, -1)))


def fig1_bottom_box(x, G: torch.Tensor, beta2: float, gamma: float):
    """Fig. 1 (bottom box), written out from DESIGN.md section 3 (kappa_L = b, kappa_R = a)."""
    a, b = G.shape[-2:]
    W_L, W_R = curvature_statistics(x, G)
    out, means = [], []
    for p, W, kappa in ((x.left, W_L, b), (x.right, W_R, a)):
        m = (1 / p.d) * (-gamma * p.d + torch.diagonal(W) / (x.alpha * kappa))
        d = p.d * torch.exp(beta2 * (m - m.mean()))
        B = rotation_update(p.B, p.d, W, beta2 / (2 * x.alpha * kappa))
        out.append(ms.SpectralPoint(B, d))
        means.append(m.mean())
    alpha = x.alpha * torch.exp(beta2 / 2 * (means[0] + means[1]))
    return ms.KroneckerSpectralPoint(alpha, *out)


def practical_scheme(x, G: torch.Tensor, beta2: float, gamma: float, lam: float):
    """Fig. 6 (right), the truncated exponential, written out from DESIGN.md section 3."""
    a, b = G.shape[-2:]
    W_L, W_R = curvature_statistics(x, G)
    lam_l = {"L": lam * b * (1 / x.right.d).mean(), "R": lam * a * (1 / x.left.d).mean()}
    out, logmeans = [], []
    for side, p, W, kappa in (("L", x.left, W_L, b), ("R", x.right, W_R, a)):
        n = (1 - gamma * beta2) * p.d + beta2 / (x.alpha * kappa) * (
            torch.diagonal(W) + lam_l[side]
        )
        log_n = torch.log(n)
        d = torch.exp(log_n - log_n.mean())
        B = rotation_update(p.B, p.d, W, beta2 / (2 * x.alpha * kappa))
        out.append(ms.SpectralPoint(B, d))
        logmeans.append(log_n.mean())
    alpha = x.alpha * torch.exp(logmeans[0] / 2 + logmeans[1] / 2)
    return ms.KroneckerSpectralPoint(alpha, *out)


def assert_same_point(y, ref, rtol: float = 1e-12) -> None:
    torch.testing.assert_close(y.alpha, ref.alpha, rtol=rtol, atol=0)
    for p, q in ((y.left, ref.left), (y.right, ref.right)):
        torch.testing.assert_close(p.d, q.d, rtol=rtol, atol=0)
        torch.testing.assert_close(p.B, q.B, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("damping", [0.0, 0.3])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_gop_path_equals_dense_curvature_path(gamma, exponential, damping):
    """The GOP path and the dense-curvature path give the same point, to rounding on S and
    on the factors."""
    K, x = make_point(3, 4, "random", seed=40)
    G = gradient_matrices(3, 4, 1, seed=41)[0]
    g = G.reshape(-1)
    family = ms.Gaussian(K, beta2=0.02, gamma=gamma, exponential=exponential)
    y = family.precision_step(x, ms.GOP(g, damping=damping))
    H = torch.outer(g, g) + damping * torch.eye(12, dtype=DT)
    ref = family.precision_step(x, ms.DenseCurvature(H))
    assert_same_point(y, ref, rtol=1e-12)
    torch.testing.assert_close(K.to_matrix(y), K.to_matrix(ref), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("kind", ["random", "repeated"])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_exact_gop_step_is_fig1_bottom_box(gamma, kind, k):
    """The exact GOP step is the Fig. 1 bottom box written out, to rounding in alpha, d and
    B."""
    K, x = make_point(3, 4, kind, seed=50)
    G = gradient_matrices(3, 4, k, seed=51)
    y = ms.Gaussian(K, beta2=0.03, gamma=gamma).precision_step(x, ms.GOP(G.reshape(k, -1)))
    assert_same_point(y, fig1_bottom_box(x, G, 0.03, gamma))


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("damping", [0.0, 0.3])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_truncated_gop_step_is_practical_scheme(gamma, damping, k):
    K, x = make_point(3, 4, "random", seed=52)
    G = gradient_matrices(3, 4, k, seed=53)
    family = ms.Gaussian(K, beta2=0.03, gamma=gamma, exponential="truncated")
    y = family.precision_step(x, ms.GOP(G.reshape(k, -1), damping=damping))
    assert_same_point(y, practical_scheme(x, G, 0.03, gamma, damping))


# 4. Rates ----------------------------------------------------------------------------------------


def precision_egrad(K, x, H: torch.Tensor, gamma: float) -> torch.Tensor:
    """``dL/dS = -1/2 S^-1 (H - gamma S) S^-1`` (dense)."""
    S = K.to_matrix(x)
    Sinv = torch.linalg.inv(S)
    E = -0.5 * Sinv @ (H - gamma * S) @ Sinv
    return 0.5 * (E + E.T)


@pytest.mark.parametrize("damping", [0.0, 0.3])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_gop_steps_against_exact_pinv_fisher_rgd_step(gamma, damping):
    """Exact scheme: the exact RGD step (to rounding). Practical scheme: O(beta2^2) away, so
    its error falls about 100x per decade of beta2."""
    K, x = make_point(3, 4, "random", seed=60)
    g = gradient_matrices(3, 4, 1, seed=61).reshape(-1)
    H = torch.outer(g, g) + damping * torch.eye(12, dtype=DT)
    nat = torch.linalg.pinv(autograd_fisher(K, x), hermitian=True, rtol=1e-13) @ (
        autograd_local_gradient(K, x, precision_egrad(K, x, H, gamma))
    )
    errs: dict[str, list[float]] = {"exact": [], "truncated": []}
    for beta2 in (1e-2, 1e-3, 1e-4):
        ref = K.to_matrix(K.chart(x)(K.from_vector(-beta2 * nat)))
        for exponential, e in errs.items():
            family = ms.Gaussian(K, beta2=beta2, gamma=gamma, exponential=exponential)
            y = family.precision_step(x, ms.GOP(g, damping=damping))
            e.append(rel(K.to_matrix(y), ref))
    assert max(errs["exact"]) < 1e-13, errs["exact"]
    t = errs["truncated"]
    rates = [t[0] / t[1], t[1] / t[2]]
    for r in rates:
        assert 70 < r < 130, f"expected ~100x per decade of beta2, got {rates} (errors {t})"


def kronecker_tangent_basis(S_L: torch.Tensor, S_R: torch.Tensor) -> torch.Tensor:
    """Columns ``vec(X kron S_R)``, ``vec(S_L kron Y)`` for symmetric unit ``X``, ``Y``: they
    span the tangent space of {A kron B} at ``S_L kron S_R`` (one redundant direction)."""
    cols = []
    for n, other, left in ((S_L.shape[0], S_R, True), (S_R.shape[0], S_L, False)):
        for i in range(n):
            for j in range(i + 1):
                X = torch.zeros(n, n, dtype=DT)
                X[i, j] = X[j, i] = 1.0
                cols.append((torch.kron(X, other) if left else torch.kron(other, X)).reshape(-1))
    return torch.stack(cols, 1)


def nearest_kronecker_product(S: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Van Loan-Pitsianis: ``R[(i,l),(j,k)] = S[(i,j),(l,k)]``, best rank-1 ``R`` by an SVD."""
    R = torch.empty(a * a, b * b, dtype=S.dtype)
    for i in range(a):
        for l in range(a):
            R[i * a + l] = S[i * b : (i + 1) * b, l * b : (l + 1) * b].reshape(-1)
    U, s, Vh = torch.linalg.svd(R)
    return s[0] * torch.kron(U[:, 0].reshape(a, a), Vh[0].reshape(b, b))


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_first_order_term_is_the_fisher_projection_not_the_nearest_kronecker_product(gamma):
    """Our step is ``S + beta2 P_F(D) + O(beta2^2)``, ``D = g g^T - gamma S`` the default
    scheme's direction and ``P_F`` the Fisher-orthogonal (``W = 1/2 S^-1 kron S^-1``)
    projection onto the tangent space of Kronecker products (the remainder falls about 100x
    per decade of beta2).

    The Frobenius-nearest Kronecker product of the default scheme is NOT the same to first
    order: its first-order term is the Frobenius projection, so the difference shrinks only
    about 10x per decade; at the origin too, where the
    eigenvalues are all equal and the chart's rotation coordinates are degenerate (the first
    step moves only eigenvalues, as for SpectralSPD).
    """
    a, b = 3, 4
    K, x = make_point(a, b, "random", seed=70)
    g = gradient_matrices(a, b, 1, seed=71).reshape(-1)
    S = K.to_matrix(x)
    Sinv = torch.linalg.inv(S)
    T = kronecker_tangent_basis(K.left.to_matrix(x.left), K.right.to_matrix(x.right))
    W = 0.5 * torch.kron(Sinv, Sinv)
    D = (torch.outer(g, g) - gamma * S).reshape(-1)
    P_F = (T @ torch.linalg.pinv(T.T @ W @ T, hermitian=True) @ (T.T @ W @ D)).reshape(S.shape)
    proj_errs, nkp_errs = [], []
    for beta2 in (1e-2, 1e-3, 1e-4):
        y = K.to_matrix(ms.Gaussian(K, beta2=beta2, gamma=gamma).precision_step(x, ms.GOP(g)))
        proj_errs.append(float(torch.linalg.matrix_norm(y - S - beta2 * P_F)))
        S_default = (1 - gamma * beta2) * S + beta2 * torch.outer(g, g)
        nkp_errs.append(
            float(torch.linalg.matrix_norm(y - nearest_kronecker_product(S_default, a, b)))
        )
    for errs, lo, hi in ((proj_errs, 70, 130), (nkp_errs, 7, 13)):
        rates = [errs[0] / errs[1], errs[1] / errs[2]]
        assert all(lo < r < hi for r in rates), (rates, errs)


# 5. Unit determinants over many steps ------------------------------------------------------------


@pytest.mark.parametrize("exponential, gamma", [("exact", 1.0), ("truncated", 0.0)])
def test_many_gop_steps_keep_unit_determinants_and_orthogonality(exponential, gamma):
    """500 GOP steps (beta2 = 0.05, damping 1e-3): ``|sum log d_l|`` and
    ``||B_l^T B_l - I||_F`` stay at rounding level, without re-orthogonalisation."""
    a, b = 3, 4
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT)
    x = K.random(gen(80), log_scale=0.3)
    g = gen(81)
    L = torch.randn(a, a, generator=g, dtype=DT) / math.sqrt(a)
    R = torch.randn(b, b, generator=g, dtype=DT) / math.sqrt(b)
    Gs = L @ torch.randn(500, a, b, generator=g, dtype=DT) @ R
    family = ms.Gaussian(K, beta2=0.05, gamma=gamma, exponential=exponential)
    worst_det = worst_ortho = 0.0
    for G in Gs:
        x = family.precision_step(x, ms.GOP(G.reshape(-1), damping=1e-3))
        for p in (x.left, x.right):
            worst_det = max(worst_det, abs(float(torch.log(p.d).sum())))
            worst_ortho = max(worst_ortho, float(orthogonality_error(p.B)))
        assert float(x.alpha) > 0
    assert worst_det < 1e-12
    assert worst_ortho < 1e-12
    assert K.check_point(x) == (True, None)


# 6. Matrix functions and nearest Kronecker products -------------------------------------------


@pytest.mark.parametrize("r", [-1.0, -0.5, -0.25, 1.0, 2.0])
def test_apply_power_matches_dense_and_eigh_references(r):
    a, b = 3, 4
    K, x = make_point(a, b, "random", seed=90)
    w, V = torch.linalg.eigh(K.to_matrix(x))
    ref = (V * w.pow(r)) @ V.T
    P = K.power(x, r)
    torch.testing.assert_close(P, ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    G = torch.randn(5, a, b, generator=gen(91), dtype=DT)
    V_cols = G.reshape(5, -1).T  # (ab, k): columns are row-major vecs
    tol = dict(rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    torch.testing.assert_close(
        K.apply_power(x, G[0], r), (P @ G[0].reshape(-1)).reshape(a, b), **tol
    )
    torch.testing.assert_close(
        K.apply_power(x, G[0], r), (ref @ G[0].reshape(-1)).reshape(a, b), **tol
    )
    torch.testing.assert_close(K.apply_power(x, G[0].reshape(-1), r), ref @ G[0].reshape(-1), **tol)
    torch.testing.assert_close(K.apply_power(x, V_cols, r), ref @ V_cols, **tol)
    # Batched matrices (..., a, b) through apply_power_matrix.
    torch.testing.assert_close(
        K.apply_power_matrix(x, G, r), (ref @ V_cols).T.reshape(5, a, b), **tol
    )


@pytest.mark.parametrize("root", [1.0, 2.0, 4.0])
def test_mean_step_is_alpha_root_times_factor_roots(root):
    """``Mat(mu) <- Mat(mu) - beta1 alpha^(-1/p) S_L^(-1/p) G S_R^(-1/p)`` (Fig. 1 bottom box)."""
    a, b = 3, 4
    K, x = make_point(a, b, "random", seed=92)
    G = torch.randn(a, b, generator=gen(93), dtype=DT)
    mu = torch.randn(a * b, generator=gen(94), dtype=DT)
    family = ms.Gaussian(K, beta1=0.1, beta2=1e-3, root=root)

    def factor_root(p):
        return factor(p.B, p.d.pow(-1 / root))

    step = x.alpha.pow(-1 / root) * factor_root(x.left) @ G @ factor_root(x.right)
    ref = mu - 0.1 * step.reshape(-1)
    torch.testing.assert_close(family.mean_step(mu, x, G.reshape(-1)), ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("a, b", SHAPES)
def test_logdet_and_from_matrix_roundtrip(a, b):
    K, x = make_point(a, b, "random", seed=100 + a)
    S = K.to_matrix(x)
    torch.testing.assert_close(K.logdet(x), torch.logdet(S), rtol=1e-12, atol=1e-12)
    y = K.from_matrix(S)
    assert K.check_point(y) == (True, None)
    torch.testing.assert_close(K.to_matrix(y), S, rtol=1e-11, atol=1e-12 * float(S.abs().max()))
    # The normalised factorisation is unique (Claim 5): same alpha, same factor matrices.
    torch.testing.assert_close(y.alpha, x.alpha, rtol=1e-11, atol=0)
    for p, q, man in ((y.left, x.left, K.left), (y.right, x.right, K.right)):
        torch.testing.assert_close(man.to_matrix(p), man.to_matrix(q), rtol=1e-11, atol=1e-11)
    # from_kronecker normalises arbitrary SPD factors.
    S_L, S_R = 3.0 * K.left.to_matrix(x.left), K.right.to_matrix(x.right) / 7.0
    z = K.from_kronecker(S_L, S_R)
    assert K.check_point(z) == (True, None)
    torch.testing.assert_close(K.to_matrix(z), torch.kron(S_L, S_R), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_from_matrix_roundtrip_in_low_precision(dtype):
    """``to_matrix`` in float32 / bf16 is symmetric only to rounding; ``from_matrix`` must
    take back what ``to_matrix`` gives, as ``SpectralSPD.from_matrix`` does (its tolerance is
    ``sqrt(eps(dtype))``), and recover S to a few eps(dtype) relative."""
    K = ms.KroneckerSpectralSPD(3, 4, dtype=dtype)
    x = K.random(gen(140))
    S = K.to_matrix(x)
    y = K.from_matrix(S)
    assert K.check_point(y) == (True, None)
    assert rel(K.to_matrix(y).double(), S.double()) < 20 * torch.finfo(dtype).eps


@pytest.mark.parametrize("a, b", SHAPES)
def test_from_matrix_is_the_nearest_kronecker_product(a, b):
    n = a * b
    A = torch.randn(n, n, generator=gen(110 + n), dtype=DT)
    S = A @ A.T / n + 0.5 * torch.eye(n, dtype=DT)  # SPD, not a Kronecker product
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT)
    x = K.from_matrix(S)
    assert K.check_point(x) == (True, None)
    P = K.to_matrix(x)
    torch.testing.assert_close(P, nearest_kronecker_product(S, a, b), rtol=1e-10, atol=1e-12)
    # Stationarity: the residual is Frobenius-orthogonal to every tangent direction
    # X kron S_R and S_L kron Y, i.e. its partial contractions with the factors vanish.
    res = (S - P).reshape(a, b, a, b)
    S_L, S_R = K.left.to_matrix(x.left), K.right.to_matrix(x.right)
    scale = float(torch.linalg.matrix_norm(S))
    assert float(torch.einsum("ijlk,jk->il", res, S_R).abs().max()) < 1e-12 * scale
    assert float(torch.einsum("ijlk,il->jk", res, S_L).abs().max()) < 1e-12 * scale
    # No random perturbation of the factors gets closer (global, not just stationary).
    best = float(torch.linalg.matrix_norm(S - P))
    g = gen(120)
    for _ in range(20):
        dA = 0.01 * torch.randn(a, a, generator=g, dtype=DT)
        dB = 0.01 * torch.randn(b, b, generator=g, dtype=DT)
        Q = x.alpha * torch.kron(S_L + dA, S_R + dB)
        assert float(torch.linalg.matrix_norm(S - Q)) >= best


# 7. Neumann vs exact Cayley -----------------------------------------------------------------------


def gop_trajectory(cayley: str, beta2: float, steps: int = 200) -> torch.Tensor:
    a, b = 3, 4
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT, cayley=cayley)
    x = K.random(gen(130), log_scale=0.5)
    g = gen(131)
    L = torch.randn(a, a, generator=g, dtype=DT) / math.sqrt(a)
    R = torch.randn(b, b, generator=g, dtype=DT) / math.sqrt(b)
    Gs = L @ torch.randn(steps, a, b, generator=g, dtype=DT) @ R
    family = ms.Gaussian(K, beta2=beta2, gamma=1.0)
    for G in Gs:
        x = family.precision_step(x, ms.GOP(G.reshape(-1)))
    return K.to_matrix(x)


def test_neumann_and_exact_cayley_trajectories_agree_for_small_steps():
    """beta2 = 1e-3, 200 steps (Neumann with the default Newton-Schulz step every 10 updates).
    Steps this small keep the rotation arguments ``||Skew(beta2 M_l)||_F`` below the clip
    rho = 0.25, so only the truncation ``Cayley(X)(I - X^6)`` differs and the trajectories
    agree closely. (At beta2 = 1e-2 the arguments pass the clip, which changes the steps, and
    the trajectories part.)"""
    S_exact = gop_trajectory("exact", 1e-3)
    S_neumann = gop_trajectory("neumann", 1e-3)
    assert rel(S_neumann, S_exact) < 1e-10


def test_neumann_rotation_argument_is_clipped_per_factor():
    """Each factor's Neumann argument ``X_l = Skew(lr M_l)`` is rescaled on its own (a large
    right step does not shrink a small left one): first to Frobenius norm
    ``<= neumann_max_norm sqrt(n)``, then so that ``||X^4||_F^(1/4) <= neumann_max_norm``
    (a bound of its spectral norm); eigenvalues and alpha do not depend on the Cayley map."""
    a, b = 3, 4
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT, cayley="neumann")
    x = K.random(gen(150))
    rho = K.neumann_max_norm
    M_L = torch.tril(torch.randn(a, a, generator=gen(151), dtype=DT), -1)
    M_R = torch.tril(torch.randn(b, b, generator=gen(152), dtype=DT), -1)
    lr = 0.5
    M_L *= 0.5 * rho / float(torch.linalg.matrix_norm(skew(lr * M_L)))  # ||X_L|| = rho / 2
    M_R *= 12.0 * rho / float(torch.linalg.matrix_norm(skew(lr * M_R)))  # ||X_R|| = 12 rho
    t = K.from_vector(torch.randn(K.dim, generator=gen(153), dtype=DT))
    t = ms.KroneckerSpectralTangent(
        t.n, ms.SpectralTangent(t.left.m, M_L), ms.SpectralTangent(t.right.m, M_R)
    )
    y = K.retr(x, t, lr)
    y_exact = K.retr(x, t, lr, cayley="exact")
    torch.testing.assert_close(y.alpha, y_exact.alpha, rtol=0, atol=0)
    for p, q, qe, M in (
        (x.left, y.left, y_exact.left, M_L),
        (x.right, y.right, y_exact.right, M_R),
    ):
        X = skew(lr * M)
        X = X * min(1.0, rho * len(X) ** 0.5 / float(torch.linalg.matrix_norm(X)))
        X = X * min(
            1.0, rho / float(torch.linalg.matrix_norm(torch.linalg.matrix_power(X, 4))) ** 0.25
        )
        assert float(torch.linalg.matrix_norm(X, ord=2)) <= rho + 1e-12
        torch.testing.assert_close(q.B, p.B @ cayley_neumann(X), rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(q.d, qe.d, rtol=0, atol=0)
        assert float(orthogonality_error(q.B)) <= 2 * rho**6 + rho**12 + 1e-14
    # The unclipped left factor is the exact Cayley map up to the truncation Cayley(X)(I - X^6).
    torch.testing.assert_close(y.left.B, y_exact.left.B, rtol=0, atol=2 * (rho / 2) ** 6)


# 8. bfloat16 --------------------------------------------------------------------------------------


def test_bfloat16_practical_gop_stream_with_neumann_cayley():
    """2000 practical GOP steps on an (8, 12) Kronecker manifold in bfloat16 (Neumann Cayley,
    default auto re-orthogonalisation every 10 steps, beta2 = 0.05, damping 1e-3, gamma = 1).
    The point stays usable: ``B_l`` inside the Newton-Schulz basin, ``d`` and ``alpha``
    positive, ``log det S_l`` near 0; and the stream is still learned: the relative error to
    the fixed point ``E[g g^T] = (L L^T) kron (R^T R)`` at the end is that of the sampling
    noise at this beta2 (float64 on the same stream is as far), not a bf16 stall (a smaller
    beta2 stalls bf16 above float64's error)."""
    a, b, steps = 8, 12, 2000
    bf16 = torch.bfloat16
    K = ms.KroneckerSpectralSPD(a, b, dtype=bf16, cayley="neumann")
    x = K.origin()
    g = gen(3)
    L = torch.randn(a, a, generator=g, dtype=DT) / math.sqrt(a)
    R = torch.randn(b, b, generator=g, dtype=DT) / math.sqrt(b)
    Gs = (L @ torch.randn(steps, a, b, generator=g, dtype=DT) @ R).to(bf16)
    family = ms.Gaussian(K, beta2=0.05, gamma=1.0, exponential="truncated")
    worst_ortho, worst_det = 0.0, 0.0
    alphas = []
    for G in Gs:
        x = family.precision_step(x, ms.GOP(G.reshape(-1), damping=1e-3))
        for p in (x.left, x.right):
            worst_ortho = max(worst_ortho, float(orthogonality_error(p.B)))
            worst_det = max(worst_det, abs(float(torch.log(p.d.float()).sum())))
        alphas.append(float(x.alpha))
    assert x.is_finite() and all(t.dtype == bf16 for t in x.leaves())
    assert bool((x.left.d > 0).all()) and bool((x.right.d > 0).all())
    assert min(alphas) > 0 and all(math.isfinite(v) for v in alphas)
    assert worst_ortho < 0.3
    assert worst_det < 0.25
    assert K.check_point(x, fast=True) == (True, None)
    y = K.reorthogonalize(x, steps=2)
    for p in (y.left, y.right):
        assert float(orthogonality_error(p.B)) < 5e-2
    S_star = torch.kron(L @ L.T, R.T @ R)
    assert rel(K.to_matrix(x).double(), S_star) < 0.35


def test_bf16_normalize_of_many_equal_eigenvalues_stays_a_point():
    """Regression: 128 equal eigenvalues all round the same way in bf16, so |log det| reaches
    ~s eps / 2 (here 0.28) after ``normalize``; the 16-bit det tolerance is s eps."""
    a, b = 192, 64
    K = ms.KroneckerSpectralSPD(a, b, dtype=torch.bfloat16)
    d = torch.ones(a, dtype=torch.float64)
    d[:64] = torch.logspace(0, 3, 64, dtype=torch.float64)
    d[64:] = 1.0 + 3.0 / 512
    eye = lambda n: torch.eye(n, dtype=torch.bfloat16)  # noqa: E731
    x = K.normalize(
        torch.tensor(1.0, dtype=torch.bfloat16),
        ms.SpectralPoint(eye(a), d.to(torch.bfloat16)),
        ms.SpectralPoint(eye(b), torch.ones(b, dtype=torch.bfloat16)),
    )
    assert abs(float(torch.log(x.left.d.float()).sum())) > 0.25
    assert K.check_point(x, fast=True) == (True, None)


def test_bf16_from_matrix_accepts_large_well_conditioned_matrices():
    """Regression: the positive-definiteness floor was n eps max, >= max once n >= 128."""
    M = ms.SpectralSPD(256, dtype=torch.bfloat16)
    x = M.from_matrix(torch.eye(256, dtype=torch.bfloat16))
    assert bool((x.d == 1).all())


@pytest.mark.parametrize("batch", [None, 3])
def test_gop_from_rotated_is_the_gop_in_the_eigenbasis(batch):
    """``gop_from_rotated(B_L^T G B_R)`` is ``gop_eigenbasis(x, vec(G))``: the same ``Z`` and
    damping, with the one-gradient axis added; a wrong shape is refused by name."""
    a, b = 3, 4
    man = ms.KroneckerSpectralSPD(a, b, dtype=torch.float64, batch=batch)
    g = torch.Generator().manual_seed(5)
    bs = () if batch is None else (batch,)
    L = torch.linalg.qr(torch.randn(*bs, a, a, generator=g, dtype=torch.float64))[0]
    R = torch.linalg.qr(torch.randn(*bs, b, b, generator=g, dtype=torch.float64))[0]
    x = ms.KroneckerSpectralPoint(
        torch.full(bs, 2.0, dtype=torch.float64),
        ms.SpectralPoint(L, torch.ones(*bs, a, dtype=torch.float64)),
        ms.SpectralPoint(R, torch.ones(*bs, b, dtype=torch.float64)),
    )
    G = torch.randn(*bs, a, b, generator=g, dtype=torch.float64)
    ref = man.gop_eigenbasis(x, G.reshape(*bs, a * b, 1), damping=0.1)
    got = man.gop_from_rotated(L.mT @ G @ R, damping=0.1)
    torch.testing.assert_close(got.Z, ref.Z, rtol=1e-12, atol=1e-14)
    assert got.Z.shape == (*bs, 1, a, b) and float(got.damping) == 0.1
    with pytest.raises(ValueError, match="Z"):
        man.gop_from_rotated(torch.zeros(*bs, b, a, dtype=torch.float64))
