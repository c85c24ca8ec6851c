"""The Riemannian side against an outside tester's reports: the spectral method stalled at
the default start ``x0 = I`` when the gradient's diagonal was constant (``LogDet`` of a
correlation matrix returned ``S = I`` with ``success=True``); the geoopt adapter's exact
Cayley steps drifted from orthogonality in float32 without bound; ``power`` of the adapter
took a NaN exponent; an empty batch in ``from_matrix``; a spectral ``x0`` error named ``S``.
Expected values come from numpy/torch dense formulas, never from the code under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral import SpectralSPD as CoreSpectralSPD
from manifold_spectral.solvers import spd

geoopt = pytest.importorskip("geoopt")
from manifold_spectral.geoopt import SpectralSPD  # noqa: E402  (after geoopt's skip)

D = torch.float64


def _correlation(n: int = 5, seed: int = 0) -> np.ndarray:
    """A correlation matrix: unit diagonal, so ``LogDet``'s gradient at ``c I`` has a constant
    diagonal, the case in which the eigenvalue step cannot split the tie."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((500, n)) @ rng.standard_normal((n, n))
    return np.corrcoef(X.T)


# The spectral method from a tied start ------------------------------------------------------


@pytest.mark.parametrize("factored", [True, False])
def test_spectral_minimize_leaves_the_identity_on_a_correlation_matrix(factored):
    """From the default ``x0 = I`` the old code kept every eigenvalue tied (the gradient's
    diagonal is 1 - 1/c for all of them) and returned ``S = I``, gap 2.5, ``success=True``;
    the baselines reach ``C^-1``. ``factored=False`` runs the same objective through the
    dense ``egrad`` path (``Objective`` with autograd)."""
    C = _correlation()
    n = C.shape[0]
    f_star = n + float(np.linalg.slogdet(C)[1])
    if factored:
        problem = spd.LogDet(C)
    else:
        Ct = torch.tensor(C)
        problem = spd.Objective(lambda S: (S * Ct).sum() - torch.logdet(S), n, f_star=f_star)
    res = spd.minimize(problem, "spectral", lr=0.1, steps=1000, tol=1e-12)
    assert res.success, res.message
    np.testing.assert_allclose(np.asarray(res.x), np.linalg.inv(C), atol=1e-5)


def test_spectral_minimize_matches_the_baselines_at_a_199_fold_tie():
    """``Q = 2 I + 1 1^T / n``: the optimum ``Q^-1`` keeps a 199-fold eigenvalue; the old code
    stayed at scalar matrices (gap 0.09 after 200 steps) while the baselines converged in 21."""
    n = 200
    Q = 2.0 * torch.eye(n, dtype=D) + torch.ones(n, n, dtype=D) / n
    its = {}
    for method in spd.METHODS:
        res = spd.minimize(spd.LogDet(Q), method, lr=0.2, steps=100, tol=1e-8)
        assert res.success, (method, res.message)
        its[method] = res.nit
    assert abs(its["spectral"] - its["retraction"]) <= 2, its


def test_split_ties_diagonalises_a_stuck_cluster_and_keeps_S():
    """``S = diag(2, 2, 2, 5)`` with a gradient whose tied block has a constant diagonal: the
    cluster's basis becomes the block's eigenvectors (so ``G`` is diagonal there), ``S`` is
    unchanged, and the eigenvalue step then equals the first-order Riemannian gradient step
    ``S - 2 lr S E S`` (dense formula, textbook metric factor 1/2)."""
    M = CoreSpectralSPD(4, dtype=D)
    x = M.from_matrix(torch.diag(torch.tensor([2.0, 2.0, 2.0, 5.0], dtype=D)))
    E = torch.tensor(
        [[1.0, 0.3, -0.2, 0.1], [0.3, 1.0, 0.4, 0.0], [-0.2, 0.4, 1.0, 0.2], [0.1, 0.0, 0.2, 3.0]],
        dtype=D,
    )
    G = x.B.T @ E @ x.B
    y, Gy = M.split_ties(x, G, lr=0.01)
    S = M.to_matrix(x)
    torch.testing.assert_close(M.to_matrix(y), S, atol=1e-14, rtol=0)
    torch.testing.assert_close(Gy, y.B.T @ E @ y.B, atol=1e-14, rtol=0)
    tied = [i for i in range(4) if abs(float(y.d[i]) - 2.0) < 1e-12]
    assert len(tied) == 3
    block = Gy[tied][:, tied]
    assert float((block - torch.diag(block.diagonal())).abs().max()) < 1e-14
    # The eigenvalue step alone now moves S along -2 S E S on the cluster, to first order.
    lr = 1e-6
    d_new = y.d * torch.exp(-lr * 2.0 * y.d * Gy.diagonal())
    S_new = (y.B * d_new) @ y.B.T
    P = y.B[:, tied] @ y.B[:, tied].T  # projector onto the tied eigenspace
    step = (S_new - S) / lr
    torch.testing.assert_close(P @ step @ P, P @ (-2.0 * S @ E @ S) @ P, atol=1e-4, rtol=0)


def test_split_ties_leaves_a_splitting_step_alone():
    """A gradient whose diagonal splits the tie, and a point without ties, come back as the
    same objects: the default start of a generic problem keeps its numbers bit for bit."""
    M = CoreSpectralSPD(3, dtype=D)
    x = M.origin()
    G = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.1], [0.0, 0.1, 3.0]], dtype=D)
    assert M.split_ties(x, G, lr=0.1) == (x, G)
    z = M.from_matrix(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=D)))
    assert M.split_ties(z, torch.ones(3, 3, dtype=D), lr=0.1)[0] is z


def test_split_ties_applies_only_to_a_fresh_run():
    """A warm start continues the run it came from bit for bit (5 + 5 steps = 10 steps), also
    when its point keeps a tie (``Q = 2 I + 1 1^T / n``: a 19-fold eigenvalue, whose block
    holds rounding-level off-diagonals that a second split would turn)."""
    n = 20
    Q = 2.0 * torch.eye(n, dtype=D) + torch.ones(n, n, dtype=D) / n
    first = spd.minimize(spd.LogDet(Q), "spectral", lr=0.2, steps=5)
    more = spd.minimize(spd.LogDet(Q), "spectral", lr=0.2, steps=5, x0=first.point)
    whole = spd.minimize(spd.LogDet(Q), "spectral", lr=0.2, steps=10)
    assert torch.equal(more.x, whole.x)
    d = torch.linalg.eigvalsh(whole.x)
    assert float(d[-1] - d[0]) > 1e-2  # it left the scalar matrices


# The geoopt adapter ---------------------------------------------------------------------


def test_exact_float32_retraction_stays_orthogonal_over_a_long_run():
    """Exact Cayley steps in float32 drift by rounding every call; with no re-orthogonalisation
    the old adapter reached ``||B^T B - I||_F`` 3.5e-4 after 3000 steps at n = 100 (about
    2.3e-5 after 100 steps at n = 30) and grew like the square root of the steps. The bound
    here is a few float32 unit roundoffs times n, far below the drift of 1000 steps."""
    n = 30
    M = SpectralSPD(n)
    g = torch.Generator().manual_seed(0)
    x = M.random(dtype=torch.float32, generator=torch.Generator().manual_seed(1))
    for _ in range(1000):
        U = torch.randn(n + 1, n, generator=g).mul_(0.02)
        x = M.retr(x, M.proju(x, U))
    B = x[:n].double()
    err = float(torch.linalg.matrix_norm(B.T @ B - torch.eye(n, dtype=D)))
    assert err < 10 * n * torch.finfo(torch.float32).eps, err
    assert M.check_point_on_manifold(x)


def test_adapter_power_refuses_a_non_finite_exponent():
    """The old adapter returned a NaN matrix for ``r = nan`` (the core manifold raises)."""
    M = SpectralSPD(3)
    x = M.random(dtype=D)
    for r in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="r: expected a finite number"):
            M.power(x, r)
    with pytest.raises(TypeError, match="r:"):
        M.power(x, True)
    d = x[-1]
    torch.testing.assert_close(M.power(x, -0.5), (x[:3] * d**-0.5) @ x[:3].T)


def test_adapter_from_matrix_empty_batch():
    """An empty batch gives an empty packed batch (``random`` does the same), not torch's
    'stack expects a non-empty TensorList'."""
    M = SpectralSPD(3)
    assert M.from_matrix(torch.empty(0, 3, 3, dtype=D)).shape == (0, 4, 3)
    assert M.from_matrix(torch.empty(2, 0, 3, 3)).shape == (2, 0, 4, 3)


def test_spectral_x0_error_names_x0():
    """A start the eigendecomposition rejects is named ``x0`` (the argument), not ``S``."""
    x0 = np.diag([1e150, 1.0, 1e-150])
    with pytest.raises(ValueError, match=r"^x0: not positive definite"):
        spd.minimize(spd.LogDet(np.eye(3)), "spectral", lr=0.1, steps=1, x0=x0)
