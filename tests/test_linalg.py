"""linalg: Cayley maps (Claim 9), the Neumann identity, norm clipping, Newton-Schulz."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral import linalg

DT = torch.float64


def random_skew(n: int, scale: float, seed: int, dtype=DT) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    N = linalg.skew(torch.tril(A, -1))
    return (scale * N / torch.linalg.matrix_norm(N)).to(dtype)


def test_sym_skew_tril():
    A = torch.randn(4, 4, dtype=DT)
    assert torch.equal(linalg.sym(A), linalg.sym(A).T)
    assert torch.equal(linalg.skew(A), -linalg.skew(A).T)
    T = linalg.tril(A)
    assert torch.all(torch.triu(T) == 0) and torch.equal(T + torch.triu(A), A)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 3.0, 50.0])
def test_exact_cayley_is_special_orthogonal(scale):
    N = random_skew(6, scale, 0)
    C = linalg.cayley_exact(N)
    torch.testing.assert_close(C.T @ C, torch.eye(6, dtype=DT), rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.linalg.det(C), torch.tensor(1.0, dtype=DT))
    # (I - N) C = I + N defines it.
    eye = torch.eye(6, dtype=DT)
    torch.testing.assert_close((eye - N) @ C, eye + N, rtol=0, atol=1e-12 * max(1.0, scale))


@pytest.mark.parametrize("scale", [0.05, 0.25, 0.5, 0.9])
def test_neumann_equals_cayley_times_one_minus_x6(scale):
    N = random_skew(7, scale, 1)
    eye = torch.eye(7, dtype=DT)
    X6 = torch.linalg.matrix_power(N, 6)
    ref = linalg.cayley_exact(N) @ (eye - X6)
    torch.testing.assert_close(linalg.cayley_neumann(N), ref, rtol=0, atol=1e-14)
    C = linalg.cayley_neumann(N)
    defect = torch.linalg.matrix_norm(C.T @ C - eye, 2)
    rho = float(torch.linalg.matrix_norm(N, 2))
    assert defect <= 2 * rho**6 + rho**12 + 1e-14


def test_neumann_error_shrinks_as_sixth_power():
    errs = []
    for scale in (0.4, 0.2):
        N = random_skew(5, scale, 2)
        diff = linalg.cayley_neumann(N) - linalg.cayley_exact(N)
        errs.append(float(torch.linalg.matrix_norm(diff)))
    assert 40 < errs[0] / errs[1] < 100  # 2^6 = 64


def test_cayley_bfloat16_and_dispatch():
    N = random_skew(5, 0.2, 3, dtype=torch.bfloat16)
    for method in ("exact", "neumann"):
        C = linalg.cayley(N, method)
        assert C.dtype == torch.bfloat16
        assert float(linalg.orthogonality_error(C)) < 0.05
    with pytest.raises(ValueError, match="cayley"):
        linalg.cayley(N, "pade")


def test_clip_norm_bounds_frobenius_norm():
    N = random_skew(6, 5.0, 4)
    clipped = linalg.clip_norm(N, 0.25)
    assert float(torch.linalg.matrix_norm(clipped)) == pytest.approx(0.25, rel=1e-12)
    small = random_skew(6, 0.1, 5)
    assert torch.equal(linalg.clip_norm(small, 0.25), small)


def test_newton_schulz_restores_orthogonality_quadratically():
    Q = linalg.cayley_exact(random_skew(8, 1.0, 6))
    B = Q + 1e-3 * torch.randn(8, 8, generator=torch.Generator().manual_seed(7), dtype=DT)
    e0 = float(linalg.orthogonality_error(B))
    e1 = float(linalg.orthogonality_error(linalg.newton_schulz_orthogonalize(B)))
    e2 = float(linalg.orthogonality_error(linalg.newton_schulz_orthogonalize(B, steps=2)))
    e3 = float(linalg.orthogonality_error(linalg.newton_schulz_orthogonalize(B, steps=3)))
    assert e1 < 10 * e0**2 and e2 < 10 * e1**2 and e3 < 1e-12


@pytest.mark.parametrize("scale", [1e-6, 0.3, 4.0, 80.0])
def test_cayley_exact_apply_is_b_times_cayley(scale):
    """``2 B (I - N)^(-1) - B == B Cayley(N)``, and it stays orthogonal (one solve, no product)."""
    N = random_skew(7, scale, 3)
    Q, _ = torch.linalg.qr(torch.randn(7, 7, generator=torch.Generator().manual_seed(4), dtype=DT))
    out = linalg.cayley_exact_apply(Q, N)
    torch.testing.assert_close(out, Q @ linalg.cayley_exact(N), rtol=0, atol=1e-13)
    torch.testing.assert_close(out.T @ out, torch.eye(7, dtype=DT), rtol=0, atol=1e-13)
    # Batched (leading dimensions) and bfloat16 (solved in float32).
    Nb = torch.stack([N, random_skew(7, scale, 5)])
    Qb = torch.stack([Q, Q])
    torch.testing.assert_close(linalg.cayley_exact_apply(Qb, Nb)[1], Q @ linalg.cayley_exact(Nb[1]))
    bf = linalg.cayley_exact_apply(Q.bfloat16(), N.bfloat16())
    assert bf.dtype == torch.bfloat16
    assert float(linalg.orthogonality_error(bf)) < 0.05


def _skew(n: int, scale: float, seed: int) -> torch.Tensor:
    A = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return scale * (A - A.T) / n**0.5


def test_neumann_clip_bounds_the_spectral_norm_not_the_frobenius_norm():
    """A skew N spread over many pairs: ||N||_2 = 0.15 < 0.25 while ||N||_F ~ 0.9. The clip
    must leave it alone (a Frobenius clip would shrink it 3.6-fold), and the map must then
    be the truncated series of N itself, orthogonal to its 2 ||N||_2^6 bound."""
    from manifold_spectral.linalg import cayley_neumann

    N = _skew(128, 1.0, 0)
    N = N * (0.15 / torch.linalg.matrix_norm(N, ord=2))
    assert torch.linalg.matrix_norm(N) > 0.85
    C = cayley_neumann(N, max_norm=0.25)
    torch.testing.assert_close(C, cayley_neumann(N), rtol=0, atol=1e-15)
    defect = torch.linalg.matrix_norm(C.T @ C - torch.eye(128, dtype=N.dtype), ord=2)
    assert defect <= 2 * 0.15**6 + 0.15**12 + 1e-13


@pytest.mark.parametrize("n, scale", [(2, 3.0), (40, 3.0), (128, 30.0)])
def test_neumann_clip_rescales_into_the_bound(n, scale):
    """Large N: the argument actually used, ``s N``, has spectral norm at most ``max_norm``
    (checked with a dense norm), is no smaller than ``max_norm / sqrt(2)`` (the bound is
    ``||N^4||_F^(1/4) <= n^(1/8) ||N||_2`` and tighter for a skew N with few large pairs),
    and the orthogonality defect obeys the bound at ``max_norm``."""
    from manifold_spectral.linalg import cayley_neumann

    N = _skew(n, scale, n)
    C = cayley_neumann(N, max_norm=0.25)
    # Recover s from the first-order term: C = I + 2 s N + O(s^2 N^2).
    norm2 = float(torch.linalg.matrix_norm(N, ord=2))
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection on s: the series is monotone in s along this ray
        mid = (lo + hi) / 2
        if float(torch.linalg.matrix_norm(cayley_neumann(mid * N) - C)) > 0 and (
            float(torch.linalg.matrix_norm(cayley_neumann(mid * N) - torch.eye(n, dtype=N.dtype)))
            < float(torch.linalg.matrix_norm(C - torch.eye(n, dtype=N.dtype)))
        ):
            lo = mid
        else:
            hi = mid
    used = lo * norm2
    assert 0.25 / 2**0.5 <= used <= 0.25 + 1e-9, used
    defect = torch.linalg.matrix_norm(C.T @ C - torch.eye(n, dtype=N.dtype), ord=2)
    assert defect <= 2 * 0.25**6 + 0.25**12 + 1e-13


def test_haar_orthogonal_is_the_sign_fixed_qr_factor():
    """``Q`` orthogonal and ``Q^T A`` upper triangular with a positive diagonal (the sign fix
    that makes the QR factor Haar), for the Gaussian ``A`` drawn from the same generator."""
    Q = linalg.haar_orthogonal(5, (3,), torch.Generator().manual_seed(0))
    A = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert Q.shape == (3, 5, 5) and Q.dtype == DT
    assert float(linalg.orthogonality_error(Q).max()) < 1e-13
    R = Q.mT @ A
    assert float(torch.tril(R, -1).abs().max()) < 1e-12
    assert bool((R.diagonal(dim1=-2, dim2=-1) > 0).all())


def test_nearest_kronecker_factors_recover_a_kronecker_product():
    """``A kron B = S`` for a Kronecker product ``S`` (general factors, so the SVD's own sign
    choice gives ``tr A < 0`` for some of them and the sign fix is exercised)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        A0 = torch.randn(3, 3, generator=g, dtype=DT)
        B0 = torch.randn(4, 4, generator=g, dtype=DT)
        for full in (False, True):
            S = torch.kron(A0, B0)
            A, B, s1 = linalg.nearest_kronecker_factors(S, 3, 4, full_matrices=full)
            torch.testing.assert_close(torch.kron(A, B), S, rtol=1e-12, atol=1e-12)
            assert float(torch.trace(A)) >= 0
            norms = torch.linalg.matrix_norm(A0) * torch.linalg.matrix_norm(B0)
            torch.testing.assert_close(s1, norms)
            torch.testing.assert_close(torch.linalg.matrix_norm(A), torch.linalg.matrix_norm(B))


@pytest.mark.parametrize("make", [lambda: torch.ones(1, 1), lambda: torch.randn(2, 4, 4).mT])
def test_skew_and_sym_never_write_their_argument(make):
    """``skew`` and ``sym`` work on a copy of ``X^T``: a 1 x 1 matrix or a transposed view
    (whose transpose is contiguous, so ``.contiguous()`` would return ``X`` itself) stays as
    it was, and the results are ``X - X^T`` and ``(X + X^T) / 2``."""
    X = make()
    X0 = X.clone()
    torch.testing.assert_close(linalg.skew(X), X0 - X0.mT, rtol=0, atol=0)
    torch.testing.assert_close(linalg.sym(X), 0.5 * (X0 + X0.mT), rtol=0, atol=0)
    assert torch.equal(X, X0)


@pytest.mark.parametrize("max_norm", [None, 0.25])
def test_cayley_neumann_is_the_same_map_under_autograd(max_norm):
    """The in-place sums (no graph) and the out-of-place ones (autograd records) give the same
    bits, the argument is never written, and the gradient matches central differences."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    N0 = 0.6 * (A - A.T)
    R = torch.randn(5, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        plain = linalg.cayley_neumann(N0.clone(), max_norm)
    N = N0.clone().requires_grad_(True)
    traced = linalg.cayley_neumann(N, max_norm)
    assert torch.equal(traced.detach(), plain) and torch.equal(N.detach(), N0)
    (grad,) = torch.autograd.grad((traced * R).sum(), N)
    E = torch.zeros(5, 5, dtype=torch.float64)
    E[3, 1], E[1, 3] = 1.0, -1.0  # a skew direction
    h = 1e-6
    with torch.no_grad():
        fd = (
            (linalg.cayley_neumann(N0 + h * E, max_norm) * R).sum()
            - (linalg.cayley_neumann(N0 - h * E, max_norm) * R).sum()
        ) / (2 * h)
    assert float((grad * E).sum()) == pytest.approx(float(fd), rel=1e-6)


def test_matmul_of_16_bit_cpu_operands_is_the_float32_product_rounded_once(monkeypatch):
    """On a CPU without AMX, 16-bit products are taken in float32 and rounded once (the
    16-bit GEMM there is many times slower and sums in another order): every entry is the
    float64 product rounded to the 16-bit type, or one of its two neighbours."""
    g = torch.Generator().manual_seed(0)
    monkeypatch.setattr(linalg, "_cpu_amx", lambda: False)
    for dtype in (torch.bfloat16, torch.float16):
        for shape_a, shape_b in (((12, 64, 64), (12, 64, 64)), ((256, 256), (256, 256))):
            A = torch.randn(shape_a, generator=g).to(dtype)
            B = torch.randn(shape_b, generator=g).to(dtype)
            got = linalg.matmul(A, B)
            assert got.dtype == dtype
            exact = A.double() @ B.double()
            ulp = torch.finfo(dtype).eps * exact.abs().clamp(min=1.0)
            assert float(((got.double() - exact).abs() / ulp).max()) <= 1.0
            assert torch.equal(got, (A.float() @ B.float()).to(dtype))


def test_matmul_on_amx_takes_small_16_bit_products_in_float32(monkeypatch):
    """With AMX tiles, a 16-bit product below ``AMX_MIN_FLOPS`` multiply-adds runs in float32
    (the tile kernel's fixed cost per call exceeds the conversions), one at or above it in
    the 16-bit kernel; the batched product and the fused ``matmul_add`` alike."""
    seen = []
    bmm, baddbmm = torch.bmm, torch.baddbmm
    monkeypatch.setattr(linalg, "_cpu_amx", lambda: True)
    monkeypatch.setattr(torch, "bmm", lambda A, B: seen.append(A.dtype) or bmm(A, B))
    monkeypatch.setattr(
        torch, "baddbmm", lambda C, A, B, **kw: seen.append(A.dtype) or baddbmm(C, A, B, **kw)
    )
    limit = linalg.AMX_MIN_FLOPS
    g = torch.Generator().manual_seed(0)
    for k, n, wide in ((12, 32, True), (1, 64, True), (4, 64, False), (12, 128, False)):
        assert (k * n**3 < limit) == wide
        A, B = (torch.randn(k, n, n, generator=g).bfloat16() for _ in range(2))
        for fused in (False, True):
            seen.clear()
            out = linalg.matmul_add(A, A, B, 1, 1) if fused else linalg.matmul(A, B)
            assert out.dtype == torch.bfloat16
            assert seen == [torch.float32 if wide else torch.bfloat16]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_max_abs_is_the_infinity_norm_exactly(dtype):
    g = torch.Generator().manual_seed(0)
    X = (torch.randn(3, 7, 5, generator=g) * 10).to(dtype)
    for Y in (X, -X.abs(), X.abs(), X[..., :1]):  # the largest entry negative, positive, one column
        got = linalg.max_abs(Y)
        assert got.shape == () and got.dtype == dtype
        assert torch.equal(got, torch.linalg.vector_norm(Y, float("inf")))
    for bad, want in ((float("nan"), "nan"), (float("-inf"), "inf"), (float("inf"), "inf")):
        Y = X.clone()
        Y[1, 2, 3] = bad
        assert str(float(linalg.max_abs(Y))) == want


def test_max_norms_match_the_infinity_norm_on_both_paths():
    from manifold_spectral.optim.checks import FUSED_MAX_NUMEL, max_norms

    g = torch.Generator().manual_seed(1)
    ts = [torch.randn(5, generator=g), -torch.rand(FUSED_MAX_NUMEL + 1, generator=g) * 3]
    ts += [torch.randn(8, 8, generator=g).bfloat16(), torch.tensor([float("nan"), 1.0])]
    got = max_norms(ts)
    want = [torch.linalg.vector_norm(t, float("inf")) for t in ts]
    assert [t.dtype for t in got] == [t.dtype for t in ts]
    assert all(torch.equal(a, b) for a, b in zip(got[:3], want[:3], strict=True))
    assert torch.isnan(got[3])


@pytest.mark.parametrize(
    "close, runs",
    [
        ([], []),
        ([False, False], []),
        ([True], [(0, 2)]),
        ([True, False, True, True], [(0, 2), (2, 5)]),
        ([False, True, True, False], [(1, 4)]),
    ],
)
def test_tie_runs_are_the_clusters_of_two_or_more(close, runs):
    """Runs of entries joined by ``close`` (``close[i]``: ``i`` and ``i + 1`` tied)."""
    from manifold_spectral.linalg import tie_runs

    assert tie_runs(torch.tensor(close, dtype=torch.bool)) == runs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_all_finite_positive_by_hand(dtype):
    """Every entry finite and > 0; NaN, an infinity, zero (either sign) or a negative entry
    anywhere fails; an empty tensor passes (nothing fails)."""
    inf, nan = float("inf"), float("nan")
    cases = {
        (1.0, 2.0, 3.0): True,
        (1e-30, 5.0): True,
        (1.0, 0.0, 2.0): False,
        (-0.0, 1.0): False,
        (2.0, -1.0): False,
        (1.0, inf): False,
        (-inf, 1.0): False,
        (1.0, nan, 2.0): False,
        (nan,): False,
        (): True,
    }
    for values, want in cases.items():
        X = torch.tensor(values, dtype=dtype)
        assert linalg.all_finite_positive(X) is want, values
        assert linalg.all_finite_positive(X.reshape(-1, 1)) is want, values
