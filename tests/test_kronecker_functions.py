"""KroneckerSpectralSPD: unit determinants over many steps, matrix functions and nearest
Kronecker products, the Neumann vs exact Cayley map, bfloat16 streams, against dense
references computed here (``eigh``, SVD) independently of the package; shared references in
``_kronecker.py``. float64 unless said."""

from __future__ import annotations

import math

import pytest
import torch
from _kronecker import DT, SHAPES, factor, gen, make_point, nearest_kronecker_product, rel

import manifold_spectral as ms
from manifold_spectral.linalg import cayley_neumann, orthogonality_error, skew

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
