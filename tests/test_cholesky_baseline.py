"""The inverse-free Cholesky-factor curvature baseline (Lin et al. 2024), paper Sec. 4.1."""

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
