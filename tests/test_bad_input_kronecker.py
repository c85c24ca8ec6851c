"""Rejected calls: ``KroneckerSpectralSPD`` with non-degenerate factors, and values a
manifold's dtype cannot hold.

Every test snapshots (clones) the caller's tensors, points and optimiser state before the bad
call and checks afterwards that nothing changed (NaN-aware, bitwise); helpers in
``_bad_input.py``, the ``manifold`` fixture in ``conftest.py``.
"""

from __future__ import annotations

import pytest
import torch
from _bad_input import F32, F64, KA, KB, N, kron, point, rejects, spd

import manifold_spectral as ms

# KroneckerSpectralSPD (non-degenerate factors) -----------------------------------------------


@pytest.mark.parametrize(
    "a, b, name",
    [
        (0, 3, "a"),
        (-1, 3, "a"),
        (2.0, 3, "a"),
        (True, 3, "a"),
        (None, 3, "a"),
        (3, 0, "b"),
        (3, "2", "b"),
    ],
)
def test_bad_kronecker_size(a, b, name):
    rejects(lambda: ms.KroneckerSpectralSPD(a, b), (ValueError, TypeError), name)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"dtype": torch.int64}, "dtype"),
        ({"dtype": "float64"}, "dtype"),
        ({"cayley": "cholesky"}, "cayley"),
        ({"neumann_max_norm": 1.0}, "neumann_max_norm"),
        ({"eig_tol": -1.0}, "eig_tol"),
    ],
)
def test_bad_kronecker_options(kwargs, name):
    rejects(lambda: ms.KroneckerSpectralSPD(KA, KB, **kwargs), (ValueError, TypeError), name)


def test_from_factors_rejects_bad_alpha_and_unnormalised_factors():
    K = kron()
    x = point(K)
    L, R = x.left, x.right
    y = K.from_factors(x.alpha, L, R)  # the valid call works
    assert K.check_point(y)[0]
    for alpha, exc in [
        (0.0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (torch.tensor([1.0, 2.0], dtype=F64), ValueError),
        ("1", TypeError),
    ]:
        rejects(lambda a=alpha: K.from_factors(a, L, R), exc, "alpha", L, R)
    twice = ms.SpectralPoint(L.B, 2 * L.d)  # det S_L = 2^a
    rejects(lambda: K.from_factors(1.0, twice, R), ValueError, "left", twice, R)
    half = ms.SpectralPoint(R.B, R.d / 2)
    rejects(lambda: K.from_factors(1.0, L, half), ValueError, "right", L, half)
    skewed = ms.SpectralPoint(L.B * 1.2, L.d)
    rejects(lambda: K.from_factors(1.0, skewed, R), ValueError, "left", skewed, R)
    rejects(lambda: K.from_factors(1.0, R, L), ValueError, "left", L, R)  # swapped sizes
    R32 = R.to(torch.float32)
    rejects(lambda: K.from_factors(1.0, L, R32), TypeError, "right", L, R32)


@pytest.mark.parametrize(
    "v, exc",
    [
        (torch.ones(KB, KA, dtype=F64), ValueError),
        (torch.ones(KA * KB + 1, dtype=F64), ValueError),
        (torch.ones(1, KA * KB, dtype=F64), ValueError),
        (torch.ones(KA * KB, 2, 1, dtype=F64), ValueError),
        (torch.ones(KA, KB, 1, dtype=F64), ValueError),
        (torch.tensor(1.0, dtype=F64), ValueError),
        (torch.ones(KA, KB, dtype=torch.float32), TypeError),
        ([[1.0] * KB] * KA, TypeError),
    ],
    ids=["transposed", "wrong_length", "row", "3d", "matrix_3d", "0d", "float32", "list"],
)
def test_kronecker_apply_power_rejects_wrong_shapes(v, exc):
    K = kron()
    x = point(K)
    rejects(lambda: K.apply_power(x, v, -0.5), exc, "v", x, v)


def _kronecker_bad_matrices() -> dict[str, torch.Tensor]:
    ab = KA * KB
    S = torch.kron(spd(KA), spd(KB))
    nonsym = S.clone()
    nonsym[0, 1] += 1.0
    nan = S.clone()
    nan[2, 2] = float("nan")
    return {
        "non_symmetric": nonsym,
        "wrong_size": torch.eye(ab + 1, dtype=F64),
        "factor_size": torch.eye(KA, dtype=F64),
        "non_square": torch.ones(ab, ab + 1, dtype=F64),
        "nan": nan,
        "negative_definite": -torch.eye(ab, dtype=F64),
        "indefinite": torch.kron(torch.diag(torch.tensor([1.0, -1.0], dtype=F64)), spd(KB)),
        "zero": torch.zeros(ab, ab, dtype=F64),
    }


@pytest.mark.parametrize("key", list(_kronecker_bad_matrices()))
def test_kronecker_from_matrix_rejects(key):
    S = _kronecker_bad_matrices()[key]
    rejects(lambda: kron().from_matrix(S), ValueError, "S", S)


@pytest.mark.parametrize(
    "S",
    ["abc", torch.eye(KA * KB, dtype=torch.complex128)],
    ids=["string", "complex"],
)
def test_kronecker_from_matrix_rejects_non_real_input(S):
    """As ``SpectralSPD.from_matrix``: a TypeError naming ``S`` (not torch's own message, and
    not a silent cast that drops the imaginary part)."""
    rejects(lambda: kron().from_matrix(S), TypeError, "S", S)


def test_kronecker_gop_of_wrong_size_or_with_nan():
    K = kron()
    ab = KA * KB
    x = point(K)
    family = ms.Gaussian(K, beta2=0.1)
    mu, g = torch.zeros(ab, dtype=F64), torch.ones(ab, dtype=F64)
    G = torch.ones(KA, KB, dtype=F64)
    cases = [
        (ms.GOP(torch.ones(ab + 1, dtype=F64)), ValueError, "grads"),
        (ms.GOP(torch.ones(2, ab - 1, dtype=F64)), ValueError, "grads"),
        (ms.GOP(G), ValueError, "grads"),  # an unflattened (a, b) gradient matrix
        (ms.GOP(torch.ones(ab, dtype=torch.float32)), TypeError, "grads"),
        (ms.DenseCurvature(torch.eye(ab + 1, dtype=F64)), ValueError, "H"),
        (ms.DenseCurvature(torch.eye(KA, dtype=F64)), ValueError, "H"),
    ]
    for curvature, exc, name in cases:
        rejects(lambda c=curvature: family.precision_step(x, c), exc, name, x)
        rejects(lambda c=curvature: family.step(mu, x, g, c), exc, name, x, mu, g)
    nan = g.clone()
    nan[3] = float("nan")
    rejects(lambda: ms.GOP(nan), ValueError, "grads", nan)
    rejects(lambda: ms.GOP(nan, damping=1e-3), ValueError, "grads", nan)
    rejects(lambda: ms.GOP(g, damping=-1.0), ValueError, "damping", g)
    rejects(lambda: ms.GOP(g, damping=float("nan")), ValueError, "damping", g)
    rejects(lambda: family.step(mu, x, nan), ValueError, "grad", mu, x, nan)
    rejects(lambda: ms.DenseCurvature(torch.outer(nan, nan)), ValueError, "H")


def test_kronecker_rgd_rejects_nan_or_misshapen_egrad_and_keeps_momentum():
    K = kron()
    ab = KA * KB
    opt = ms.RGD(K, lr=0.05, momentum=0.9)
    E = torch.eye(ab, dtype=F64)
    x = opt.step(point(K), E)
    assert opt.state_dict()["buffer"] is not None
    nan = E.clone()
    nan[1, 4] = nan[4, 1] = float("nan")
    for egrad, exc in [
        (nan, ValueError),
        (torch.eye(KA, dtype=F64), ValueError),  # a factor-sized gradient
        (torch.ones(ab, dtype=F64), ValueError),
        (E.reshape(KA, KB, KA, KB), ValueError),
        (E.float(), TypeError),
    ]:
        rejects(lambda e=egrad: opt.step(x, e), exc, "egrad", x, egrad, state=opt.state_dict)
        rejects(lambda e=egrad: K.natural_gradient(x, e), exc, "egrad", x, egrad)


def test_kronecker_retr_rejects_tangent_with_swapped_factors():
    K = kron()
    x = point(K)
    t = K.zero_tangent(x)
    swapped = ms.KroneckerSpectralTangent(t.n, t.right, t.left)
    rejects(lambda: K.retr(x, swapped, 0.1), ValueError, "tangent", x, swapped)
    vector = ms.KroneckerSpectralTangent(t.n.reshape(1), t.left, t.right)
    rejects(lambda: K.retr(x, vector, 0.1), ValueError, "tangent", x, vector)


def test_kronecker_precision_gradient_rejects_foreign_curvature():
    K = kron()
    x = point(K)
    Ht = torch.eye(KA * KB, dtype=F64)  # a bare tensor, not in the Kronecker eigenbasis form
    rejects(lambda: K.precision_egrad_eigenbasis(x, Ht, 1.0), TypeError, "Ht", x, Ht)


# Values the manifold's dtype cannot hold (issue 14) -----------------------------------------


@pytest.mark.parametrize("scale", [1e40, 1e-60], ids=["overflow", "underflow"])
def test_from_matrix_outside_the_dtype_range(scale):
    """``1e40 I`` is SPD in float64 but would be ``d = inf`` in float32 (``1e-60 I``: ``d = 0``):
    no point of the float32 manifold, so a ValueError naming ``S``."""
    S = scale * torch.eye(N, dtype=F64)
    rejects(lambda: ms.SpectralSPD(N, dtype=F32).from_matrix(S), ValueError, "S", S)
    S6 = scale * torch.eye(KA * KB, dtype=F64)
    rejects(lambda: ms.KroneckerSpectralSPD(KA, KB, dtype=F32).from_matrix(S6), ValueError, "S", S6)
    SL, SR = scale * torch.eye(KA, dtype=F64), torch.eye(KB, dtype=F64)
    K32 = ms.KroneckerSpectralSPD(KA, KB, dtype=F32)
    rejects(lambda: K32.from_kronecker(SL, SR), ValueError, "S_L", SL, SR)
    d = torch.tensor([1.0, scale, 2.0], dtype=F64)
    rejects(lambda: ms.DiagonalSPD(N, dtype=F32).from_eigenvalues(d), ValueError, "d", d)
    # The same values are fine in float64.
    assert ms.SpectralSPD(N, dtype=F64).from_matrix(S).d.isfinite().all()


def test_from_factors_alpha_outside_the_dtype_range():
    K32 = ms.KroneckerSpectralSPD(KA, KB, dtype=F32)
    x = point(K32)
    rejects(lambda: K32.from_factors(1e40, x.left, x.right), ValueError, "alpha", x)
    rejects(lambda: K32.from_factors(1e-60, x.left, x.right), ValueError, "alpha", x)


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: ms.SpectralSPD(N, dtype=dt),
        lambda dt: ms.SpectralSPD(N, dtype=dt, batch=2),
        lambda dt: ms.DiagonalSPD(N, dtype=dt),
        lambda dt: ms.KroneckerSpectralSPD(KA, KB, dtype=dt),
    ],
    ids=["spectral", "spectral_batched", "diagonal", "kronecker"],
)
@pytest.mark.parametrize(
    "log_scale, dtype",
    [
        (1e3, F32),
        (1e5, F64),
        (float("nan"), F64),
        (float("inf"), F64),
        (-1.0, F64),
        ("1", F64),
    ],
    ids=["1e3_f32", "1e5_f64", "nan", "inf", "negative", "str"],
)
def test_random_rejects_bad_log_scale(make, log_scale, dtype):
    manifold = make(dtype)
    gen = torch.Generator().manual_seed(0)
    exc = TypeError if isinstance(log_scale, str) else ValueError
    rejects(lambda: manifold.random(gen, log_scale=log_scale), exc, "log_scale")
    assert manifold.check_point(manifold.random(gen, log_scale=0.0))[0]


def test_kronecker_from_matrix_rejects_indefinite_non_kronecker_matrix():
    """Its nearest Kronecker product is positive definite; ``S`` is not. Same rule and message
    as ``SpectralSPD.from_matrix``."""
    S = torch.diag(torch.tensor([1.0, -1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64))
    with pytest.raises(ValueError, match="not positive definite") as spectral:
        ms.SpectralSPD(KA * KB, dtype=F64).from_matrix(S)
    rejects(lambda: kron().from_matrix(S), ValueError, "S", S)
    with pytest.raises(ValueError) as kronecker:
        kron().from_matrix(S)
    assert str(kronecker.value) == str(spectral.value)
    singular = torch.diag(torch.tensor([1.0, 0.0, 2.0, 3.0, 4.0, 5.0], dtype=F64))
    rejects(lambda: kron().from_matrix(singular), ValueError, "S", singular)
