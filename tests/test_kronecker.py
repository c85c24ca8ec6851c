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

import pytest
import torch
from _kronecker import (
    DT,
    KINDS,
    REF_RTOL,
    SHAPES,
    factor,
    gen,
    make_point,
    nearest_kronecker_product,
    random_sym,
    rel,
)

import manifold_spectral as ms
from manifold_spectral.diagnostics import (
    autograd_fisher,
    autograd_local_gradient,
    check_metric,
    check_natural_gradient,
)
from manifold_spectral.linalg import cayley_exact, skew
from manifold_spectral.manifolds.kronecker import sum_zero_metric, sum_zero_metric_inverse

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
