"""The inverse-free Cholesky-factor curvature baseline (Lin et al. 2024), paper Sec. 4.1, and
the warm starts of ``spd.minimize`` (its ``"cholesky"`` method's ``CholeskyPoint``, and every
method resuming from ``result.point``)."""

import itertools

import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.baselines import CholeskyCurvature, phi
from manifold_spectral.experiments.curvature import default_step

N = 8


def _spd(n, seed, dtype=torch.float64):
    return ms.SpectralSPD(n, dtype=dtype).to_matrix(
        ms.SpectralSPD(n, dtype=dtype).random(torch.Generator().manual_seed(seed))
    )


def _grads(k, n, seed, dtype=torch.float64):
    return torch.randn(k, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_phi_splits_a_symmetric_matrix():
    X = _grads(N, N, 0)
    X = X + X.T
    A = phi(X)
    torch.testing.assert_close(A + A.T, X)
    assert torch.equal(torch.triu(A, 1), torch.zeros_like(A))


def test_from_matrix_is_the_inverse_cholesky_factor():
    S0 = _spd(N, 1)
    K = CholeskyCurvature(N, torch.float64).from_matrix(S0)
    assert torch.equal(torch.triu(K, 1), torch.zeros_like(K))
    assert bool((torch.diagonal(K) > 0).all())
    torch.testing.assert_close(S0 @ K @ K.T, torch.eye(N, dtype=torch.float64))
    torch.testing.assert_close(CholeskyCurvature(N, torch.float64).to_matrix(K), S0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_steps_keep_k_lower_triangular_and_s_spd(dtype):
    chol = CholeskyCurvature(N, dtype)
    K = chol.from_matrix(_spd(N, 2))
    G = _grads(200, N, 3, dtype)
    for k in range(0, 200, 2):
        K = chol.step(K, G[k] if k % 4 else G[k : k + 2], beta2=0.05)
        assert K.dtype == dtype
        assert torch.equal(torch.triu(K, 1), torch.zeros_like(K))
    ok, reason = chol.check_point(K)
    assert ok, reason
    S = chol.to_matrix(K).double()
    torch.testing.assert_close(S, S.T)
    assert float(torch.linalg.eigvalsh(S).min()) > 0


@pytest.mark.parametrize("gamma", [1.0, 0.0])
@pytest.mark.parametrize("k", [1, 3])
def test_one_step_matches_default_scheme_to_second_order(gamma, k):
    """``S_new = (1 - gamma beta2) S + beta2 H + O(beta2^2)``: the deviation falls ~100x per
    10x smaller beta2 (a first-order error, e.g. Phi without the 1/2 on the diagonal, gives
    ~10x)."""
    S0 = _spd(N, 4)
    g = _grads(k, N, 5)
    chol = CholeskyCurvature(N, torch.float64)
    K = chol.from_matrix(S0)
    errs = []
    for beta2 in (1e-2, 1e-3, 1e-4):
        S_chol = chol.to_matrix(chol.step(K, g, beta2, gamma))
        errs.append(float(torch.linalg.matrix_norm(S_chol - default_step(S0, g, beta2, gamma))))
    for big, small in itertools.pairwise(errs):
        assert 70.0 < big / small < 140.0, errs


def test_step_does_not_modify_its_input():
    chol = CholeskyCurvature(N, torch.float64)
    K = chol.from_matrix(_spd(N, 6))
    K0 = K.clone()
    chol.step(K, _grads(1, N, 7)[0], 0.1)
    assert torch.equal(K, K0)


def test_bad_inputs_raise():
    chol = CholeskyCurvature(N, torch.float64)
    K = chol.from_matrix(_spd(N, 8))
    g = _grads(1, N, 9)[0]
    with pytest.raises(ValueError, match="grads"):
        chol.step(K, torch.zeros(N + 1, dtype=torch.float64), 0.1)
    with pytest.raises(TypeError, match="grads"):
        chol.step(K, g.float(), 0.1)
    with pytest.raises(ValueError, match="beta2"):
        chol.step(K, g, 0.0)
    with pytest.raises(ValueError, match="K"):
        chol.step(K[:-1], g, 0.1)
    with pytest.raises(ValueError, match="positive definite"):
        chol.from_matrix(-torch.eye(N, dtype=torch.float64))
    with pytest.raises(ValueError, match="n"):
        CholeskyCurvature(0)
    with pytest.raises(FloatingPointError, match="singular or non-finite"):
        chol.step(K, g * 1e200, 0.5)
    ok, reason = chol.check_point(torch.ones(N, N, dtype=torch.float64))
    assert not ok and "lower triangular" in reason


# spd.minimize's "cholesky" method (CholeskyRGD): warm starts -----------------------------------


def test_cholesky_warm_start_resumes_at_the_result():
    """``result.point`` of ``"cholesky"`` is the factor ``L``; ``minimize`` read ``x0=L`` as the
    matrix ``S`` and restarted from ``L`` (diagonal ``L``: f 2.0 -> 2.4999975 on
    ``LogDet(diag(4, 1/4))``) or refused it ('x0: not symmetric')."""
    from manifold_spectral.solvers import spd

    p = spd.LogDet(torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64)))
    r = spd.minimize(p, "cholesky", lr=0.1, steps=300)
    assert r.fun == pytest.approx(2.0, abs=1e-12)  # f* = 2 at S* = diag(1/4, 4)
    again = spd.minimize(p, "cholesky", lr=1e-6, steps=1, x0=r.point)
    assert again.history["fun"][0] == r.fun and again.fun == pytest.approx(2.0, abs=1e-12)
    torch.testing.assert_close(again.x, torch.diag(torch.tensor([0.25, 4.0], dtype=torch.float64)))


@pytest.mark.parametrize("method", ["spectral", "retraction", "cholesky"])
def test_spd_warm_start_from_result_point_continues_bitwise(method):
    """Every method of ``spd.minimize`` (``spd.METHODS``): k steps, then k more from
    ``x0=result.point``, are the 2k steps of one run, bit for bit (no momentum, whose buffer
    a point does not carry)."""
    from manifold_spectral.solvers import spd

    assert method in spd.METHODS and len(spd.METHODS) == 3
    S0 = _spd(5, seed=3)
    p = spd.LogDet(_spd(5, seed=4))
    full = spd.minimize(p, method, lr=0.05, steps=12, x0=S0)
    half = spd.minimize(p, method, lr=0.05, steps=6, x0=S0)
    rest = spd.minimize(p, method, lr=0.05, steps=6, x0=half.point)
    assert rest.history["fun"][0] == half.fun
    assert torch.equal(rest.x, full.x) and rest.fun == full.fun
    assert list(rest.history["fun"]) == list(full.history["fun"][6:])


def test_a_cholesky_point_starts_every_method_and_is_checked():
    """A ``CholeskyPoint`` is ``S = L L^T`` for the other methods too; a factor that is not
    lower triangular with a positive diagonal, or of another dtype, is refused naming x0."""
    from manifold_spectral.solvers import spd

    p = spd.LogDet(_spd(4, seed=5))
    start = spd.minimize(p, "cholesky", lr=0.05, steps=5, x0=_spd(4, seed=6))
    L = start.point.L
    for method in spd.METHODS:
        res = spd.minimize(p, method, lr=1e-3, steps=1, x0=start.point)
        assert res.history["fun"][0] == pytest.approx(start.fun, rel=1e-13)
        for bad, exc in [
            (L.T, ValueError),  # upper triangular
            (-L, ValueError),  # negative diagonal
            (L.float(), TypeError),
            (L[:3, :3], ValueError),
        ]:
            with pytest.raises(exc, match="x0"):
                spd.minimize(p, method, lr=0.1, steps=1, x0=spd.CholeskyPoint(bad))
