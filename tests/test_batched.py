"""Batched manifolds (``batch=k``) against a loop over the unbatched manifold.

A manifold built with ``batch=k`` holds ``k`` same-shaped points in one container whose leaves
carry a leading dimension ``k``, and runs the unbatched formulas on all of them with one set of
batched products. Every test here builds ``k`` unbatched points (distinct eigenvalues; repeated
ones, the origin among them), stacks them, and compares the batched result with the loop:
float64 to 1e-14 relative (on CPU the two agree bit for bit; the tolerance leaves room for
BLAS back ends whose batched and single products round differently), float32 and bfloat16 to a
few ulps. Checks of a batch must fail when one element fails and name it; wrong shapes must be
rejected with clear errors.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manifold_spectral as ms
from manifold_spectral.gaussian import GOP, Gaussian
from manifold_spectral.manifolds import KroneckerSpectralPoint, SpectralPoint

K = 4  # batch size
A, B = 4, 3  # Kronecker factor sizes
N = 5  # SpectralSPD size
F64 = torch.float64
KINDS = ["distinct", "repeated"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kron_elements(man: ms.KroneckerSpectralSPD, seed: int, kind: str) -> list:
    """``K`` unbatched points; ``"repeated"``: element 0 is the origin (all eigenvalues equal)
    and the others have a repeated pair in the left factor and a repeated triple on the right."""
    g = gen(seed)
    pts = [man.random(g, log_scale=0.5) for _ in range(K)]
    if kind == "repeated":
        for i in range(1, K):
            x = pts[i]
            dL, dR = x.left.d.clone(), x.right.d.clone()
            dL[1] = dL[0]
            dR[1:3] = dR[0]
            pts[i] = man.normalize(
                x.alpha, SpectralPoint(x.left.B, dL), SpectralPoint(x.right.B, dR)
            )
        pts[0] = man.origin()
    return pts


def spectral_elements(man: ms.SpectralSPD, seed: int, kind: str) -> list:
    g = gen(seed)
    pts = [man.random(g, log_scale=0.5) for _ in range(K)]
    if kind == "repeated":
        for i in range(1, K):
            d = pts[i].d.clone()
            d[1:3] = d[0]
            pts[i] = SpectralPoint(pts[i].B, d)
        pts[0] = man.origin()
    return pts


def rel_err(u, v) -> float:
    """Largest ``max|u - v| / max|v|`` over the leaves (tensors or ``TensorTree``s)."""
    us = u.leaves() if hasattr(u, "leaves") else [u]
    vs = v.leaves() if hasattr(v, "leaves") else [v]
    assert [t.shape for t in us] == [t.shape for t in vs]
    assert [t.dtype for t in us] == [t.dtype for t in vs]
    err = 0.0
    for a, b in zip(us, vs, strict=True):
        a, b = a.double(), b.double()
        err = max(err, float((a - b).abs().max() / b.abs().max().clamp(min=1e-300)))
    return err


def stack(pts: list):
    return type(pts[0]).stack(pts)


def tol(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-14, torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]


# Gaussian.precision_step (the GOP update path) --------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("damping", [0.0, 1e-3])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
def test_kronecker_precision_step_matches_loop(exponential, cayley, gamma, damping, m, kind):
    man = ms.KroneckerSpectralSPD(A, B, F64, cayley=cayley)
    bman = ms.KroneckerSpectralSPD(A, B, F64, cayley=cayley, batch=K)
    pts = kron_elements(man, 0, kind)
    g = gen(1)
    opts = dict(beta2=0.05, gamma=gamma, exponential=exponential, reorthogonalize_every=2)
    # One Gaussian per element (RGD counts its steps for the re-orthogonalisation schedule).
    loop = [Gaussian(man, **opts) for _ in range(K)]
    batched = Gaussian(bman, **opts)
    X = stack(pts)
    for _ in range(3):  # steps 2 re-orthogonalise
        grads = torch.randn(K, m, A * B, generator=g, dtype=F64)
        bgrads = grads[:, 0] if m == 1 else grads  # (k, ab): one gradient per element
        pts = [
            gs.precision_step(p, GOP(grads[i], damping))
            for i, (gs, p) in enumerate(zip(loop, pts, strict=True))
        ]
        X = batched.precision_step(X, GOP(bgrads, damping))
        assert bman.check_point(X, fast=True) == (True, None)
        # Batched and single products round differently (a few ulps), and three steps of
        # 1 / (d_i - d_j) carry them on: about 60 eps, far below any real difference; up to
        # 1000 eps where near-repeated eigenvalues make 1 / (d_i - d_j) large (how far
        # depends on the CPU's kernels).
        assert rel_err(X, stack(pts)) <= (3e-14 if kind == "distinct" else 2e-13)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
def test_spectral_precision_step_matches_loop(exponential, cayley, gamma, kind):
    man = ms.SpectralSPD(N, F64, cayley=cayley)
    bman = ms.SpectralSPD(N, F64, cayley=cayley, batch=K)
    pts = spectral_elements(man, 0, kind)
    g = gen(2)
    opts = dict(beta2=0.05, gamma=gamma, exponential=exponential, reorthogonalize_every=2)
    loop = [Gaussian(man, **opts) for _ in range(K)]
    batched = Gaussian(bman, **opts)
    X = stack(pts)
    for _ in range(3):
        grads = torch.randn(K, 2, N, generator=g, dtype=F64)
        pts = [
            gs.precision_step(p, GOP(grads[i], 1e-3))
            for i, (gs, p) in enumerate(zip(loop, pts, strict=True))
        ]
        X = batched.precision_step(X, GOP(grads, 1e-3))
        assert rel_err(X, stack(pts)) <= 1e-14


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
def test_low_precision_close_to_loop(dtype, cayley, exponential):
    man = ms.KroneckerSpectralSPD(A, B, dtype, cayley=cayley)
    bman = ms.KroneckerSpectralSPD(A, B, dtype, cayley=cayley, batch=K)
    pts = kron_elements(man, 3, "distinct")
    grads = torch.randn(K, A * B, generator=gen(4), dtype=F64).to(dtype)
    opts = dict(beta2=0.05, exponential=exponential)
    ys = [Gaussian(man, **opts).precision_step(p, GOP(grads[i], 1e-3)) for i, p in enumerate(pts)]
    Y = Gaussian(bman, **opts).precision_step(stack(pts), GOP(grads, 1e-3))
    assert bman.check_point(Y, fast=True) == (True, None)
    assert rel_err(Y, stack(ys)) <= tol(dtype)
    Gm = grads.reshape(K, A, B)
    P = bman.apply_power_matrix(Y, Gm, -0.5)
    ref = torch.stack([man.apply_power_matrix(y, Gm[i], -0.5) for i, y in enumerate(ys)])
    assert rel_err(P, ref) <= tol(dtype)


# Maps on points ----------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS), r=st.sampled_from([-0.5, 1.0]))
def test_apply_power_matrix_matches_loop(seed, kind, r):
    man = ms.KroneckerSpectralSPD(A, B, F64)
    bman = ms.KroneckerSpectralSPD(A, B, F64, batch=K)
    pts = kron_elements(man, seed, kind)
    G = torch.randn(K, A, B, generator=gen(seed + 1), dtype=F64)
    ref = torch.stack([man.apply_power_matrix(p, G[i], r) for i, p in enumerate(pts)])
    assert rel_err(bman.apply_power_matrix(stack(pts), G, r), ref) <= 1e-14
    # apply_power: (k, a, b) matrices and (k, ab) row-major vectors
    assert rel_err(bman.apply_power(stack(pts), G, r), ref) <= 1e-14
    vec = bman.apply_power(stack(pts), G.reshape(K, -1), r)
    assert rel_err(vec, ref.reshape(K, -1)) <= 1e-14


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS))
def test_normalize_and_reorthogonalize_match_loop(seed, kind):
    man = ms.KroneckerSpectralSPD(A, B, F64)
    bman = ms.KroneckerSpectralSPD(A, B, F64, batch=K)
    g = gen(seed)
    # Off the manifold: factors with det != 1 and slightly non-orthogonal B.
    pts = [
        p.map(lambda t: t * (1 + 1e-3 * torch.rand(t.shape, generator=g, dtype=F64)))
        for p in kron_elements(man, seed, kind)
    ]
    X = stack(pts)
    # normalize is elementwise plus a mean over the last dimension: bit for bit.
    Xn = ms.KroneckerSpectralSPD.normalize(X.alpha, X.left, X.right)
    for got, want in zip(Xn.unbind(), pts, strict=True):
        ref = man.normalize(want.alpha, want.left, want.right)
        assert all(torch.equal(u, v) for u, v in zip(got.leaves(), ref.leaves(), strict=True))
    Xr = bman.reorthogonalize(Xn, steps=2)
    ref = stack([man.reorthogonalize(man.normalize(p.alpha, p.left, p.right), 2) for p in pts])
    assert rel_err(Xr, ref) <= 1e-14
    assert bman.check_point(Xr) == (True, None)


@pytest.mark.parametrize("jacobi", [False, True])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
def test_retr_matches_loop(cayley, exponential, jacobi):
    """Tangents from the GOP natural gradient (they keep the truncated map positive)."""
    man = ms.KroneckerSpectralSPD(A, B, F64)
    bman = ms.KroneckerSpectralSPD(A, B, F64, batch=K)
    pts = kron_elements(man, 5, "repeated")
    grads = torch.randn(K, A * B, generator=gen(6), dtype=F64)
    X = stack(pts)
    Gb = bman.precision_egrad_eigenbasis(X, GOP(grads, 1e-3).eigenbasis(bman, X), 1.0)
    V = bman.natural_gradient_eigenbasis(X, Gb)
    loop_V = []
    for i, p in enumerate(pts):
        Gi = man.precision_egrad_eigenbasis(p, GOP(grads[i], 1e-3).eigenbasis(man, p), 1.0)
        loop_V.append(man.natural_gradient_eigenbasis(p, Gi))
    assert rel_err(V, stack(loop_V)) <= 1e-14
    opts = dict(cayley=cayley, exponential=exponential, jacobi=jacobi)
    Y = bman.retr(X, -V, 0.05, **opts)
    ref = stack([man.retr(p, -v, 0.05, **opts) for p, v in zip(pts, loop_V, strict=True)])
    assert rel_err(Y, ref) <= 1e-14


@pytest.mark.parametrize("jacobi", [False, True])
def test_spectral_rgd_dense_momentum_matches_loop(jacobi):
    """The dense path of a batched SpectralSPD (egrad (k, n, n)) with momentum."""
    man = ms.SpectralSPD(N, F64)
    bman = ms.SpectralSPD(N, F64, batch=K)
    pts = spectral_elements(man, 7, "repeated")
    g = gen(8)
    loop = [ms.RGD(man, 0.02, momentum=0.5, jacobi=jacobi) for _ in range(K)]
    batched = ms.RGD(bman, 0.02, momentum=0.5, jacobi=jacobi)
    X = stack(pts)
    for _ in range(3):
        E = torch.randn(K, N, N, generator=g, dtype=F64)
        E = E + E.mT
        pts = [r.step(p, E[i]) for i, (r, p) in enumerate(zip(loop, pts, strict=True))]
        X = batched.step(X, E)
        assert rel_err(X, stack(pts)) <= 1e-14
    assert rel_err(batched.buffer, stack([r.buffer for r in loop])) <= 1e-14


def test_gaussian_step_matches_loop():
    """Precision step then mean step (``apply_power`` of (k, n) vectors)."""
    for man, bman, pts in (
        (ms.SpectralSPD(N, F64), ms.SpectralSPD(N, F64, batch=K), None),
        (ms.KroneckerSpectralSPD(A, B, F64), ms.KroneckerSpectralSPD(A, B, F64, batch=K), None),
    ):
        g = gen(9)
        pts = [man.random(g) for _ in range(K)]
        n = man.egrad_shape[-1]
        mu, grad = torch.randn(2, K, n, generator=g, dtype=F64)
        loop = [
            Gaussian(man, beta1=0.1, beta2=0.05).step(mu[i], p, grad[i]) for i, p in enumerate(pts)
        ]
        mu_b, X = Gaussian(bman, beta1=0.1, beta2=0.05).step(mu, stack(pts), grad)
        assert rel_err(mu_b, torch.stack([u for u, _ in loop])) <= 1e-14
        assert rel_err(X, stack([x for _, x in loop])) <= 1e-14


def test_gop_convention_and_vectors():
    """``GOP`` grads (k, ab) = (k, 1, ab); ``gop_eigenbasis`` V (k, ab, m) -> Z (k, m, a, b);
    tangent vectors and the metric per element."""
    man = ms.KroneckerSpectralSPD(A, B, F64)
    bman = ms.KroneckerSpectralSPD(A, B, F64, batch=K)
    pts = kron_elements(man, 10, "distinct")
    X = stack(pts)
    grads = torch.randn(K, 3, A * B, generator=gen(11), dtype=F64)
    Z = GOP(grads).eigenbasis(bman, X).Z
    assert Z.shape == (K, 3, A, B)
    for i, p in enumerate(pts):
        # batched and single products: equal up to the CPU kernels' order of additions
        assert rel_err(Z[i], GOP(grads[i]).eigenbasis(man, p).Z) <= 1e-15
    one = GOP(grads[:, 0]).eigenbasis(bman, X).Z
    assert torch.equal(one, GOP(grads[:, :1]).eigenbasis(bman, X).Z)
    # to_vector / from_vector / inner / metric per element
    G = bman.precision_egrad_eigenbasis(X, GOP(grads, 1e-3).eigenbasis(bman, X), 1.0)
    V = bman.natural_gradient_eigenbasis(X, G)
    vec = bman.to_vector(V)
    assert vec.shape == (K, bman.dim)
    for i, (p, v) in enumerate(zip(pts, V.unbind(), strict=True)):
        assert torch.equal(vec[i], man.to_vector(v))
        assert rel_err(bman.inner(X, V)[i], man.inner(p, v)) <= 1e-14
        assert rel_err(bman.metric(X).unbind()[i], man.metric(p)) == 0.0
    assert rel_err(bman.from_vector(vec), stack([man.from_vector(v) for v in vec])) == 0.0
    assert torch.equal(bman.logdet(X), torch.stack([man.logdet(p) for p in pts]))


def test_origin_random_stack_unbind():
    for bman in (ms.KroneckerSpectralSPD(A, B, F64, batch=K), ms.SpectralSPD(N, F64, batch=K)):
        for x in (bman.origin(), bman.random(gen(12))):
            assert bman.check_point(x) == (True, None)
            assert all(t.shape[0] == K for t in x.leaves())
            assert rel_err(type(x).stack(x.unbind()), x) == 0.0
    x = ms.KroneckerSpectralSPD(A, B, F64, batch=K).origin()
    assert x.alpha.shape == (K,) and x.left.B.shape == (K, A, A) and x.right.d.shape == (K, B)
    with pytest.raises(TypeError, match="stack"):
        KroneckerSpectralPoint.stack([])
    with pytest.raises(TypeError, match="stack"):
        KroneckerSpectralPoint.stack(x.left.unbind())
