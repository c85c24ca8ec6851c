"""Closed-form chart geometry of SpectralSPD against autograd (float64).

The reference Fisher matrix is computed from its definition: with J = d vec S(eta) / d eta at
eta = 0 (autograd through the chart), F = J^T (1/2 S^-1 kron S^-1) J, i.e.
F_ab = 1/2 tr(S^-1 J_a S^-1 J_b). The reference natural gradient is pinv(F) @ grad_eta f.
"""

from __future__ import annotations

import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.diagnostics import (
    autograd_fisher,
    autograd_local_gradient,
    check_metric,
    check_natural_gradient,
)
from manifold_spectral.linalg import cayley_exact, skew

DT = torch.float64


def rotation(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    return Q * torch.sign(torch.diagonal(R))


POINTS = {
    "distinct": torch.tensor([0.3, 0.9, 1.7, 4.0, 11.0, 25.0], dtype=DT),
    "near-repeated": torch.tensor([1.0, 1.0 + 1e-4, 2.0, 2.0 * (1 + 3e-5), 5.0, 7.0], dtype=DT),
    "repeated": torch.tensor([1.0, 1.0, 2.0, 3.0, 3.0, 3.0], dtype=DT),
    "identity": torch.ones(6, dtype=DT),
}


# The autograd reference forms C_ij ~ 4 delta^2 by cancellation, so near-repeated eigenvalues
# (relative gap delta = 3e-5) cost it ~eps / delta^2 relative accuracy in that coordinate.
REF_RTOL = {"near-repeated": 1e-5}


def make_point(kind: str, seed: int = 0) -> tuple[ms.SpectralSPD, ms.SpectralPoint]:
    d = POINTS[kind]
    n = d.numel()
    B = torch.eye(n, dtype=DT) if kind == "identity" else rotation(n, seed)
    return ms.SpectralSPD(n, dtype=DT), ms.SpectralPoint(B, d.clone())


def random_sym(n, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=DT)
    return A + A.T


@pytest.mark.parametrize("kind", list(POINTS))
def test_metric_matches_autograd_fisher(kind):
    M, x = make_point(kind)
    F = autograd_fisher(M, x)
    closed = torch.diag(M.to_vector(M.metric(x)))
    scale = F.abs().max()
    err = (F - closed).abs().max() / scale
    assert err < 1e-12, f"largest metric mismatch {err:.2e} relative to max entry"
    # The m block is exactly 1/2 I and off-diagonal entries vanish (Claim 4).
    off = F - torch.diag(torch.diagonal(F))
    assert off.abs().max() < 1e-12 * scale


@pytest.mark.parametrize("kind", list(POINTS))
def test_local_gradient_matches_autograd(kind):
    M, x = make_point(kind, seed=1)
    E = random_sym(M.n, 3)
    ref = autograd_local_gradient(M, x, E)
    ours = M.to_vector(M.local_gradient(x, E))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", list(POINTS))
def test_natural_gradient_is_pinv_fisher_times_gradient(kind):
    M, x = make_point(kind, seed=2)
    E = random_sym(M.n, 4)
    F = autograd_fisher(M, x)
    ref = torch.linalg.pinv(F, hermitian=True, rtol=1e-13) @ autograd_local_gradient(M, x, E)
    ours = M.to_vector(M.natural_gradient(x, E))
    torch.testing.assert_close(ours, ref, rtol=REF_RTOL.get(kind, 1e-7), atol=1e-10)
    assert torch.isfinite(ours).all()


def test_public_diagnostics_report_small_mismatches():
    M, x = make_point("distinct", seed=3)
    assert check_metric(M, x) < 1e-12
    assert check_natural_gradient(M, x, random_sym(M.n, 9)) < 1e-9
    D = ms.DiagonalSPD(4, dtype=DT)
    xd = D.random(torch.Generator().manual_seed(4))
    assert check_metric(D, xd) < 1e-14
    assert check_natural_gradient(D, xd, torch.randn(4, dtype=DT)) < 1e-12


def test_natural_gradient_is_metric_inverse_times_local_gradient():
    M, x = make_point("distinct", seed=5)
    E = random_sym(M.n, 6)
    ratio = M.to_vector(M.local_gradient(x, E)) / M.to_vector(M.metric(x))
    torch.testing.assert_close(M.to_vector(M.natural_gradient(x, E)), ratio, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["distinct", "near-repeated", "repeated", "identity"])
def test_rgd_step_is_exact_pinv_fisher_step_in_the_chart(kind):
    M, x = make_point(kind, seed=7)
    E = random_sym(M.n, 8)
    lr = 0.05
    F = autograd_fisher(M, x)
    eta = -lr * torch.linalg.pinv(F, hermitian=True, rtol=1e-13) @ autograd_local_gradient(M, x, E)
    ref = M.to_matrix(M.chart(x)(M.from_vector(eta)))
    ours = M.to_matrix(ms.RGD(M, lr=lr).step(x, E))
    rtol = REF_RTOL.get(kind, 1e-9)
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * 1e-2)


def test_eig_tol_zeroes_only_pairs_within_tolerance():
    n = 4
    d = torch.tensor([1.0, 1.0 + 1e-10, 2.0, 2.0 + 1e-3], dtype=DT)
    M = ms.SpectralSPD(n, dtype=DT)
    x = ms.SpectralPoint(torch.eye(n, dtype=DT), d)
    G = torch.ones(n, n, dtype=DT)
    nat = M.natural_gradient_eigenbasis(x, G).M
    assert nat[1, 0] == 0  # gap 1e-10 < sqrt(eps) = 1.5e-8
    assert nat[3, 2] != 0  # gap 5e-4 > tol
    assert torch.isfinite(nat).all()
    assert ms.SpectralSPD(n, dtype=torch.float32).eig_tol == pytest.approx(
        torch.finfo(torch.float32).eps ** 0.5
    )


# Claim 2 and the Fig. 1 (top box) update --------------------------------------------------


def fig1_top_box(B, d, g, beta2, gamma):
    """The paper's Fig. 1 top box, written out independently of the package."""
    q = B.T @ g
    d_new = d * torch.exp(beta2 / d * (-gamma * d + q * q))
    diff = d[:, None] - d[None, :]
    U = torch.where(diff == 0, torch.zeros_like(diff), -torch.outer(q, q) / diff)
    N = skew(torch.tril(U, -1))
    return B @ cayley_exact(beta2 / 2 * N), d_new


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_gaussian_gop_step_is_fig1_top_box(gamma):
    M, x = make_point("distinct", seed=11)
    g = torch.randn(M.n, generator=torch.Generator().manual_seed(12), dtype=DT)
    y = ms.Gaussian(M, beta2=0.03, gamma=gamma).precision_step(x, ms.GOP(g))
    B_ref, d_ref = fig1_top_box(x.B, x.d, g, 0.03, gamma)
    torch.testing.assert_close(y.d, d_ref, rtol=1e-13, atol=0)
    torch.testing.assert_close(y.B, B_ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_gaussian_step_is_generic_rgd_on_dL_dS(gamma):
    """One formula, one place: the Gaussian step is RGD on egrad = -S^-1 (H - gamma S) S^-1 / 2."""
    M, x = make_point("distinct", seed=13)
    H = random_sym(M.n, 14)  # indefinite curvature is allowed with the exact exponential
    Sinv = M.power(x, -1.0)
    egrad = -0.5 * Sinv @ (H - gamma * M.to_matrix(x)) @ Sinv
    ref = ms.RGD(M, lr=0.02).step(x, egrad)
    ours = ms.Gaussian(M, beta2=0.02, gamma=gamma).precision_step(x, ms.DenseCurvature(H))
    torch.testing.assert_close(M.to_matrix(ours), M.to_matrix(ref), rtol=1e-12, atol=1e-12)


def test_dense_curvature_must_be_symmetric():
    """A non-symmetric ``H`` was silently replaced by ``Sym(H)`` (``H`` and ``H^T`` gave the
    same step). Asymmetry within rounding (relative ``sqrt(eps)``, as ``from_matrix``) is
    accepted, also in float32 and per element of a batch; the caller's ``H`` is untouched."""
    H = random_sym(4, 15)
    upper = torch.triu(torch.ones(4, 4, dtype=DT))
    batch = torch.stack([H, H + torch.triu(torch.ones(4, 4, dtype=DT), 1)])
    for bad in (upper, upper.float(), batch):
        before = bad.clone()
        with pytest.raises(ValueError, match="H: not symmetric"):
            ms.DenseCurvature(bad)
        assert torch.equal(bad, before)
    rounded = H.clone()
    rounded[0, 1] += 1e-14 * float(rounded[0, 1].abs())
    for ok in (rounded, rounded.float(), torch.stack([H, rounded])):
        assert ms.DenseCurvature(ok).H is ok


@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
def test_claim2_error_vs_default_scheme_shrinks_as_beta2_squared(gamma, exponential):
    M, x = make_point("distinct", seed=21)
    g = torch.randn(M.n, generator=torch.Generator().manual_seed(22), dtype=DT)
    S = M.to_matrix(x)
    errs = []
    for beta2 in (1e-2, 1e-3, 1e-4):
        gauss = ms.Gaussian(M, beta2=beta2, gamma=gamma, exponential=exponential)
        S_spec = M.to_matrix(gauss.precision_step(x, ms.GOP(g)))
        S_def = (1 - gamma * beta2) * S + beta2 * torch.outer(g, g)
        errs.append(float(torch.linalg.matrix_norm(S_spec - S_def)))
    rates = [errs[0] / errs[1], errs[1] / errs[2]]
    for r in rates:
        assert 70 < r < 130, f"expected ~100x per decade of beta2, got {rates} (errors {errs})"


def test_mean_step_uses_root_from_factors():
    M, x = make_point("distinct", seed=31)
    g = torch.randn(M.n, generator=torch.Generator().manual_seed(32), dtype=DT)
    mu = torch.zeros(M.n, dtype=DT)
    for p in (1.0, 2.0, 4.0, 0.5):
        gauss = ms.Gaussian(M, beta1=0.1, beta2=1e-3, root=p)
        evals, evecs = torch.linalg.eigh(M.to_matrix(x))
        ref = mu - 0.1 * (evecs * evals.pow(-1 / p)) @ evecs.T @ g
        torch.testing.assert_close(gauss.mean_step(mu, x, g), ref, rtol=1e-10, atol=1e-12)


def test_repeated_eigenvalues_from_identity_give_finite_correct_steps():
    M = ms.SpectralSPD(5, dtype=DT)
    x = M.origin()
    g = torch.randn(5, generator=torch.Generator().manual_seed(41), dtype=DT)
    y = ms.Gaussian(M, beta2=0.1).precision_step(x, ms.GOP(g))
    # All eigenvalues are equal: the rotation step is the Moore-Penrose zero, only d moves.
    torch.testing.assert_close(y.B, torch.eye(5, dtype=DT))
    torch.testing.assert_close(y.d, torch.exp(0.1 * (g * g - 1.0)))
    # After one step the eigenvalues are distinct and rotations start.
    z = ms.Gaussian(M, beta2=0.1).precision_step(y, ms.GOP(g.flip(0)))
    assert (z.B - torch.eye(5, dtype=DT)).abs().max() > 1e-6
    assert M.check_point(z)[0]


# power, logdet, apply_power -------------------------------------------------------------------


@pytest.mark.parametrize("r", [-1.0, -0.5, -0.25, 0.5, 1.0, 2.0, 1 / 3])
def test_power_matches_eigh_reference(r):
    M = ms.SpectralSPD(7, dtype=DT)
    x = M.random(torch.Generator().manual_seed(51))
    evals, evecs = torch.linalg.eigh(M.to_matrix(x))
    ref = (evecs * evals.pow(r)) @ evecs.T
    torch.testing.assert_close(M.power(x, r), ref, rtol=1e-10, atol=1e-12)
    v = torch.randn(7, 3, dtype=DT)
    torch.testing.assert_close(M.apply_power(x, v, r), ref @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(M.apply_power(x, v[:, 0], r), ref @ v[:, 0], rtol=1e-10, atol=1e-12)


def test_logdet_and_from_matrix_roundtrip():
    M = ms.SpectralSPD(6, dtype=DT)
    x = M.random(torch.Generator().manual_seed(52))
    S = M.to_matrix(x)
    torch.testing.assert_close(M.logdet(x), torch.logdet(S), rtol=1e-12, atol=1e-12)
    y = M.from_matrix(S)
    assert M.check_point(y)[0]
    torch.testing.assert_close(M.to_matrix(y), S, rtol=1e-12, atol=1e-12)


def test_diagonal_manifold_shares_the_eigenvalue_block():
    """DiagonalSPD is SpectralSPD with B = I: same eigenvalue step, no rotation."""
    n = 6
    d = POINTS["distinct"]
    D, S = ms.DiagonalSPD(n, dtype=DT), ms.SpectralSPD(n, dtype=DT)
    xd, xs = ms.DiagonalPoint(d.clone()), ms.SpectralPoint(torch.eye(n, dtype=DT), d.clone())
    E = torch.diag(torch.randn(n, generator=torch.Generator().manual_seed(61), dtype=DT))
    yd = ms.RGD(D, lr=0.1).step(xd, torch.diagonal(E).clone())
    ys = ms.RGD(S, lr=0.1).step(xs, E)
    torch.testing.assert_close(yd.d, ys.d, rtol=1e-14, atol=0)
    # RMSprop special case (Fig. 5 / App. A.1): truncated exponential, gamma = 1.
    g = torch.randn(n, generator=torch.Generator().manual_seed(62), dtype=DT)
    y = ms.Gaussian(D, beta2=0.1, exponential="truncated").precision_step(xd, ms.GOP(g))
    torch.testing.assert_close(y.d, 0.9 * d + 0.1 * g * g, rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", ["spectral", "kronecker"])
def test_retr_and_chart_read_only_the_strict_lower_triangle(kind: str) -> None:
    """A full ``M`` (entries on and above the diagonal too) is the coordinates' strictly lower
    triangle for ``retr`` as for ``chart``: both equal ``B (I - N)^-1 (I + N)``,
    ``N = L - L^T``, ``L = tril(lr M, -1)``, computed here by a dense solve (before, ``retr``
    turned by ``Skew(lr M)`` of the whole matrix and ``chart`` by its lower triangle)."""
    g = torch.Generator().manual_seed(7)
    lr = 0.3

    def reference(B: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        L = torch.tril(lr * M, -1)
        N = L - L.mT
        eye = torch.eye(B.shape[-1], dtype=DT)
        return B @ torch.linalg.solve(eye - N, eye + N)

    if kind == "spectral":
        man = ms.SpectralSPD(5, dtype=DT)
        x = ms.SpectralPoint(rotation(5, 3), torch.tensor([0.5, 1.0, 2.0, 3.0, 7.0], dtype=DT))
        eta = ms.SpectralTangent(
            0.1 * torch.randn(5, generator=g, dtype=DT), torch.randn(5, 5, generator=g, dtype=DT)
        )
        for y in (man.retr(x, eta, lr, cayley="exact"), man.chart(x)(eta.map(lambda t: lr * t))):
            torch.testing.assert_close(y.B, reference(x.B, eta.M), rtol=0, atol=1e-13)
            torch.testing.assert_close(y.d, x.d * torch.exp(lr * eta.m), rtol=1e-14, atol=0)
        return
    man = ms.KroneckerSpectralSPD(3, 4, dtype=DT)
    x = man.random(generator=g)
    sides = []
    for s in (3, 4):
        m = 0.1 * torch.randn(s, generator=g, dtype=DT)
        sides.append(ms.SpectralTangent(m - m.mean(), torch.randn(s, s, generator=g, dtype=DT)))
    eta = ms.KroneckerSpectralTangent(torch.tensor(0.2, dtype=DT), *sides)
    for y in (man.retr(x, eta, lr, cayley="exact"), man.chart(x)(eta.map(lambda t: lr * t))):
        for p, q, t in ((y.left, x.left, sides[0]), (y.right, x.right, sides[1])):
            torch.testing.assert_close(p.B, reference(q.B, t.M), rtol=0, atol=1e-13)
