"""One property suite for every spectral manifold (geoopt-style case generators).

Each manifold enters through a :class:`Case` in ``CASES``: how to build it for a size ``n``,
a dtype and a Cayley variant, and how to read its rotation factors (orthogonal) and eigenvalue
factors (positive) out of a point. Every property below runs over every case; adding
``KroneckerSpectralSPD`` is one more ``Case`` (its ``build`` picks ``a x b`` factors from ``n``
with ``kronecker_sizes``, ``rotations`` returns ``[x.left.B, x.right.B]``, ``positives``
``[x.alpha.reshape(1), x.left.d, x.right.d]``).

Random points, gradients and tangents come from ``torch.Generator`` seeds drawn by hypothesis,
so failures are reproducible from the printed seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manifold_spectral as ms
from manifold_spectral.linalg import orthogonality_error
from manifold_spectral.manifolds import SpectralManifold

F64 = torch.float64


@dataclasses.dataclass(frozen=True)
class Case:
    """How the suite builds and inspects one manifold."""

    name: str
    #: ``build(n, dtype, cayley) -> manifold``; the dense matrix is about n x n.
    build: Callable[[int, torch.dtype, str], SpectralManifold]
    #: Orthogonal factors of a point (empty when the manifold has none).
    rotations: Callable[[Any], list[torch.Tensor]]
    #: Factors that must stay positive (eigenvalues, scales).
    positives: Callable[[Any], list[torch.Tensor]]
    #: Rotation coordinates ``M`` of a chart tangent (one per orthogonal factor).
    rotation_steps: Callable[[Any], list[torch.Tensor]]
    #: The chart's eigenvalue coordinates are sum-zero (a determinant constraint):
    #: ``to_vector`` drops the last ``m`` and ``from_vector`` rebuilds it as ``-sum(others)``,
    #: which reproduces a centred ``m`` only to rounding.
    sum_zero_m: bool = False
    #: ``log_scale`` of ``manifold.random``, chosen so that ``log eig(S)`` has unit variance
    #: in every case (the steps of the properties below are sized for that spread).
    log_scale: float = 1.0

    def __str__(self) -> str:
        return self.name


def kronecker_sizes(n: int) -> tuple[int, int]:
    """Factor sizes ``(a, b) = (1 + n % 3, 1 + n // 3)`` for size ``n`` in 1..8: every shape
    from (1, 2) to (3, 3), with 1 x 1 factors, ``a != b`` both ways, and ``a b <= 9``."""
    return 1 + n % 3, 1 + n // 3


CASES = [
    Case(
        "SpectralSPD",
        lambda n, dtype, cayley: ms.SpectralSPD(n, dtype=dtype, cayley=cayley),
        lambda x: [x.B],
        lambda x: [x.d],
        lambda t: [t.M],
    ),
    Case(
        "DiagonalSPD",
        lambda n, dtype, cayley: ms.DiagonalSPD(n, dtype=dtype),
        lambda x: [],
        lambda x: [x.d],
        lambda t: [],
    ),
    Case(
        "KroneckerSpectralSPD",
        lambda n, dtype, cayley: ms.KroneckerSpectralSPD(*kronecker_sizes(n), dtype, cayley=cayley),
        lambda x: [x.left.B, x.right.B],
        lambda x: [x.alpha.reshape(1), x.left.d, x.right.d],
        lambda t: [t.left.M, t.right.M],
        sum_zero_m=True,
        # log eig(S) = log alpha + log d_L,i + log d_R,j: three independent log-normal draws.
        log_scale=1 / math.sqrt(3),
    ),
]

ROTATION_CASES = [c for c in CASES if c.name != "DiagonalSPD"]

sizes = st.integers(min_value=1, max_value=8)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
FAST = settings(max_examples=15, deadline=None)
SLOW = settings(max_examples=3, deadline=None)


# Helpers ---------------------------------------------------------------------------------


def dense_size(manifold: SpectralManifold, x: Any) -> int:
    return manifold.to_matrix(x).shape[-1]


def random_spd(n: int, gen: torch.Generator, dtype: torch.dtype = F64) -> torch.Tensor:
    A = torch.randn(n, n, generator=gen, dtype=F64)
    return (A @ A.T / n + 0.5 * torch.eye(n, dtype=F64)).to(dtype)


def egrad_from_dense(manifold: SpectralManifold, E: torch.Tensor) -> torch.Tensor:
    """The manifold's ``egrad`` for a dense ``df/dS``: the diagonal on a diagonal manifold."""
    if len(manifold.egrad_shape) == 1:
        return torch.diagonal(E).clone()
    return E


def random_egrad(manifold: SpectralManifold, gen: torch.Generator, scale: float = 1.0):
    """A random Euclidean gradient of ``manifold.egrad_shape`` (symmetric when a matrix)."""
    E = scale * torch.randn(manifold.egrad_shape, generator=gen, dtype=F64)
    if E.ndim == 2:
        E = 0.5 * (E + E.T)
    return E.to(manifold.dtype)


def random_tangent(manifold: SpectralManifold, gen: torch.Generator):
    vec = torch.randn(manifold.dim, generator=gen, dtype=F64).to(manifold.dtype)
    return manifold.from_vector(vec)


def setup(case: Case, n: int, seed: int, dtype=F64, cayley: str = "exact"):
    gen = torch.Generator().manual_seed(seed)
    manifold = case.build(n, dtype, cayley)
    return manifold, manifold.random(generator=gen, log_scale=case.log_scale), gen


def neumann_defect_bound(manifold: SpectralManifold) -> float:
    rho = manifold.neumann_max_norm
    return 2 * rho**6 + rho**12


def assert_valid(manifold: SpectralManifold, case: Case, x: Any, *, fast: bool = False) -> None:
    """``check_point`` passes (``fast``: the loose O(n^2) probe the update paths use, which
    is what an un-reorthogonalised Neumann step has to pass), finite, positive factors."""
    ok, reason = manifold.check_point(x, fast=fast)
    assert ok, reason
    assert x.is_finite()
    for t in case.positives(x):
        assert bool((t > 0).all())


def objective(manifold: SpectralManifold, x: Any, Q: torch.Tensor):
    """``f(S) = tr(S Q) - logdet S`` and its Euclidean gradient ``Q - S^-1``."""
    f = (manifold.to_matrix(x) * Q).sum() - manifold.logdet(x)
    return f, egrad_from_dense(manifold, Q - manifold.power(x, -1.0))


# One retraction step ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@FAST
@given(
    n=sizes,
    seed=seeds,
    lr=st.floats(1e-3, 1.0),
    scale=st.floats(1e-2, 10.0),
)
def test_natural_gradient_step_is_a_point(case, cayley, n, seed, lr, scale):
    manifold, x, gen = setup(case, n, seed, cayley=cayley)
    egrad = random_egrad(manifold, gen, scale)
    nat = manifold.natural_gradient(x, egrad)
    x_new = manifold.retr(x, -nat, lr)
    # The full check_point tolerance (~1e-10 in float64) is documented to need a
    # reorthogonalisation after Neumann steps; the update paths' probe must accept them.
    assert_valid(manifold, case, x_new, fast=cayley == "neumann")
    for B_old, B in zip(case.rotations(x), case.rotations(x_new), strict=True):
        err = float(orthogonality_error(B))
        if cayley == "exact":
            # The LU solve's rounding grows like eps * ||N||: 1e-12 holds for every step with
            # ||Skew(lr M)||_F up to ~100; huge rotations (a close eigenvalue pair hit by a
            # large step) get the proportional bound.
            norms = [float(torch.linalg.matrix_norm(lr * t)) for t in case.rotation_steps(nat)]
            assert err < max(1e-12, 1e-15 * dense_size(manifold, x) * max(norms, default=0.0))
        else:
            # Cayley(N)(I - N^6): defect <= 2 rho^6 + rho^12 on top of the old one.
            old = float(orthogonality_error(B_old))
            assert err <= old + neumann_defect_bound(manifold) + 1e-13
    if cayley == "neumann":
        assert_valid(manifold, case, manifold.reorthogonalize(x_new, steps=2))


# Many RGD steps ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@SLOW
@given(n=sizes, seed=seeds)
def test_many_rgd_steps_keep_orthogonality(case, cayley, n, seed):
    """Default RGD (``reorthogonalize_every="auto"``: with Neumann, a Newton-Schulz step every
    ``opt.reorthogonalize_every`` steps)."""
    manifold, x, gen = setup(case, n, seed, cayley=cayley)
    Q = random_spd(dense_size(manifold, x), gen)
    opt = ms.RGD(manifold, lr=0.1)
    f0, _ = objective(manifold, x, Q)
    steps = 200
    for _ in range(steps):
        _, egrad = objective(manifold, x, Q)
        x = opt.step(x, egrad)
        # Drift never exceeds one reorthogonalisation period's worth of Neumann defects.
        for B in case.rotations(x):
            err = float(orthogonality_error(B))
            if cayley == "exact":
                assert err < 1e-12
            else:
                period = opt.reorthogonalize_every
                assert err <= (period + 1) * neumann_defect_bound(manifold)
    assert_valid(manifold, case, x, fast=cayley == "neumann")
    assert objective(manifold, x, Q)[0] < f0
    x = manifold.reorthogonalize(x, steps=3)
    assert_valid(manifold, case, x)
    assert all(float(orthogonality_error(B)) < 1e-12 for B in case.rotations(x))


@pytest.mark.parametrize("case", ROTATION_CASES, ids=str)
@SLOW
@given(n=st.integers(2, 8), seed=seeds)
def test_neumann_drift_is_bounded_and_reorthogonalize_restores(case, n, seed):
    """Chart steps by ``retr`` only (no point validation in between): the drift after k
    Neumann steps is at most k (2 rho^6 + rho^12), and Newton-Schulz removes it."""
    manifold, x, gen = setup(case, n, seed, cayley="neumann")
    Q = random_spd(dense_size(manifold, x), gen)
    steps = 200
    for _ in range(steps):
        _, egrad = objective(manifold, x, Q)
        # lr = 0.2: large rotation steps early on (clipped to rho), so the drift is visible;
        # lr >= 0.5 can overshoot this objective into overflow.
        x = manifold.retr(x, -manifold.natural_gradient(x, egrad), 0.2)
    assert x.is_finite()
    for B in case.rotations(x):
        assert float(orthogonality_error(B)) <= steps * neumann_defect_bound(manifold)
    # Newton-Schulz squares the defect each step: four steps from any drift below ~0.1.
    x = manifold.reorthogonalize(x, steps=4)
    assert_valid(manifold, case, x)
    for B in case.rotations(x):
        assert float(orthogonality_error(B)) < 1e-12


# Chart, vectors, metric --------------------------------------------------------------------


def assert_same_point(x: Any, y: Any, atol: float = 0.0) -> None:
    for a, b in zip(x.leaves(), y.leaves(), strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=str)
@FAST
@given(n=sizes, seed=seeds)
def test_chart_origin_vectors_and_metric(case, n, seed):
    manifold, x, gen = setup(case, n, seed)
    assert_same_point(manifold.chart(x)(manifold.zero_tangent(x)), x, atol=1e-15)

    vec = torch.randn(manifold.dim, generator=gen, dtype=F64)
    torch.testing.assert_close(manifold.to_vector(manifold.from_vector(vec)), vec, rtol=0, atol=0)
    nat = manifold.natural_gradient(x, random_egrad(manifold, gen))
    scale = max(float(t.abs().max()) for t in nat.leaves())
    atol = 4 * torch.finfo(F64).eps * scale if case.sum_zero_m else 0.0
    assert_same_point(manifold.from_vector(manifold.to_vector(nat)), nat, atol=atol)
    assert manifold.to_vector(nat).shape == (manifold.dim,)

    u = random_tangent(manifold, gen)
    assert float(manifold.inner(x, u, u)) >= 0.0
    # F^+ grad: <grad, F^+ grad> (Euclidean, in the chart) = <F^+ grad, F^+ grad>_F.
    egrad = random_egrad(manifold, gen)
    nat = manifold.natural_gradient(x, egrad)
    loc = manifold.local_gradient(x, egrad)
    # A covector pairs with a vector through ``covector_to_vector`` (the Kronecker chart's
    # sum-zero ``m`` makes the free components ``g_i - g_last``; elsewhere it is ``to_vector``).
    dot = manifold.covector_to_vector(loc) @ manifold.to_vector(nat)
    torch.testing.assert_close(manifold.inner(x, nat, nat), dot, rtol=1e-10, atol=1e-12)


# Descent -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@FAST
@given(n=sizes, seed=seeds)
def test_small_rgd_step_decreases_logdet_objective(case, n, seed):
    """f(S) = tr(S Q) - logdet S decreases by ~ lr <grad, F^+ grad> for a small step."""
    manifold, x, gen = setup(case, n, seed)
    Q = random_spd(dense_size(manifold, x), gen)
    f0, egrad = objective(manifold, x, Q)
    nat = manifold.natural_gradient(x, egrad)
    loc = manifold.covector_to_vector(manifold.local_gradient(x, egrad))
    slope = float(loc @ manifold.to_vector(nat))
    assert slope >= 0.0
    # Chart step of size <= 1e-4 in every coordinate.
    lr = 1e-4 / (1.0 + float(manifold.to_vector(nat).abs().max()))
    x_new = ms.RGD(manifold, lr=lr).step(x, egrad)
    f1, _ = objective(manifold, x_new, Q)
    decrease = float(f0 - f1)
    assert decrease > 0.0
    assert math.isclose(decrease, lr * slope, rel_tol=0.05, abs_tol=1e-12)


# Dense matrix functions ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@FAST
@given(
    n=sizes,
    seed=seeds,
    a=st.floats(-1.5, 1.5),
    b=st.floats(-1.5, 1.5),
    k=st.integers(1, 3),
)
def test_matrix_functions(case, n, seed, a, b, k):
    manifold, x, gen = setup(case, n, seed)
    S = manifold.to_matrix(x)
    size = S.shape[-1]
    torch.testing.assert_close(S, S.T, rtol=0, atol=1e-12 * float(S.abs().max()))
    assert float(torch.linalg.eigvalsh(0.5 * (S + S.T)).min()) > 0.0

    Pa, Pb, Pab = manifold.power(x, a), manifold.power(x, b), manifold.power(x, a + b)
    scale = float(torch.linalg.matrix_norm(Pa, 2) * torch.linalg.matrix_norm(Pb, 2))
    torch.testing.assert_close(Pa @ Pb, Pab, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(manifold.power(x, 1.0), S, rtol=1e-12, atol=1e-12)

    for v in (
        torch.randn(size, generator=gen, dtype=F64),
        torch.randn(size, k, generator=gen, dtype=F64),
    ):
        torch.testing.assert_close(
            manifold.apply_power(x, v, a), Pa @ v, rtol=1e-10, atol=1e-12 * (1 + scale)
        )
    torch.testing.assert_close(manifold.logdet(x), torch.logdet(S), rtol=1e-10, atol=1e-10)


# Gaussian -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("root", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("exponential", ["exact", "truncated"])
@settings(max_examples=5, deadline=None)
@given(n=sizes, seed=seeds, beta2=st.floats(1e-3, 0.5))
def test_gaussian_gop_step_keeps_a_point(case, gamma, root, exponential, n, seed, beta2):
    manifold, x, gen = setup(case, n, seed)
    size = dense_size(manifold, x)
    mu = torch.randn(size, generator=gen, dtype=F64)
    g = torch.randn(size, generator=gen, dtype=F64)
    mu0, x0, g0 = mu.clone(), x.clone(), g.clone()
    family = ms.Gaussian(
        manifold, beta1=0.1, beta2=beta2, gamma=gamma, root=root, exponential=exponential
    )
    mu_new, x_new = family.step(mu, x, g)
    assert_valid(manifold, case, x_new)
    assert bool(torch.isfinite(mu_new).all())
    # Inputs are not modified.
    assert torch.equal(mu, mu0) and torch.equal(g, g0)
    assert_same_point(x, x0)
    # Mean step uses the new precision: mu - beta1 S_new^(-1/p) g.
    torch.testing.assert_close(
        mu_new, mu - 0.1 * manifold.power(x_new, -1.0 / root) @ g, rtol=1e-10, atol=1e-12
    )
    if exponential == "truncated" and len(case.rotations(x)) <= 1:
        # Paper Fig. 5 (single-factor manifolds):
        # d <- (1 - gamma beta2) d + beta2 diag(B^T g g^T B) (> 0).
        d = case.positives(x)[-1]
        q = case.rotations(x)[0].T @ g if case.rotations(x) else g
        expected = (1 - gamma * beta2) * d + beta2 * q * q
        torch.testing.assert_close(case.positives(x_new)[-1], expected, rtol=1e-10, atol=1e-14)


# Low precision ------------------------------------------------------------------------------

# Bounds on the largest ||B^T B - I||_F along a 200-step GOP stream (n = 8, gamma = 1, seed
# 1234, default Gaussian: reorthogonalize_every="auto", i.e. a Newton-Schulz step every 10
# Neumann updates and every 100 exact updates below float64), for SpectralSPD and
# KroneckerSpectralSPD (3 x 3 factors, worst over both). float32: rounding drift between the
# corrections (plus, for Neumann, its truncation defect). bfloat16: a freshly rounded Haar B
# is already off by bf16's rounding, and B must stay well inside the Newton-Schulz basin
# (< 1); without any re-orthogonalisation its drift keeps growing, and the update-path probe
# rejects un-corrected bf16 points within a few hundred steps. Each bound leaves a margin of
# several times over what the stream reaches; ``assert_low_precision_point`` checks d > 0.
# REORTHOGONALIZED_BOUND: two Newton-Schulz steps bring B back to about the dtype's rounding.
LOW_PRECISION_ORTHO_BOUND = {
    (torch.float32, "exact"): 1e-4,
    # Neumann: the truncation defect 2 rho^6 + rho^12 (rho = 0.25) of up to 10 steps between
    # re-orthogonalisations, 4.9e-3, plus float32 rounding.
    (torch.float32, "neumann"): 6e-3,
    (torch.bfloat16, "exact"): 0.7,
    (torch.bfloat16, "neumann"): 0.3,
}
REORTHOGONALIZED_BOUND = {torch.float32: 2e-6, torch.bfloat16: 5e-2}


def gop_stream(case: Case, dtype: torch.dtype, cayley: str, beta2: float, steps: int, seed: int):
    """``steps`` Gaussian GOP steps from a random point; returns the manifold, the last point
    and mean, and the largest orthogonality error seen along the way."""
    manifold, x, gen = setup(case, 8, seed=seed, dtype=dtype, cayley=cayley)
    n = dense_size(manifold, x)  # 8; 9 for the Kronecker case (3 x 3 factors)
    L = torch.randn(n, n, generator=gen, dtype=F64) / math.sqrt(n)
    mu = torch.zeros(n, dtype=dtype)
    family = ms.Gaussian(manifold, beta1=0.1, beta2=beta2, gamma=1.0, root=2.0)
    worst = 0.0
    for _ in range(steps):
        g = (L @ torch.randn(n, generator=gen, dtype=F64)).to(dtype)
        mu, x = family.step(mu, x, g)
        worst = max([worst] + [float(orthogonality_error(B)) for B in case.rotations(x)])
    return manifold, x, mu, worst


def assert_low_precision_point(case: Case, dtype: torch.dtype, x: Any, mu: torch.Tensor):
    assert x.is_finite() and bool(torch.isfinite(mu).all())
    for t in x.leaves():
        assert t.dtype == dtype
    for t in case.positives(x):
        assert bool((t > 0).all())


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@pytest.mark.parametrize("beta2", [0.01, 0.1])
def test_low_precision_gop_stream(case, dtype, cayley, beta2):
    manifold, x, mu, worst = gop_stream(case, dtype, cayley, beta2, steps=200, seed=1234)
    assert_low_precision_point(case, dtype, x, mu)
    assert worst < LOW_PRECISION_ORTHO_BOUND[dtype, cayley]
    for B in case.rotations(manifold.reorthogonalize(x, steps=2)):
        assert float(orthogonality_error(B)) < REORTHOGONALIZED_BOUND[dtype]


@pytest.mark.parametrize("case", ROTATION_CASES, ids=str)
@pytest.mark.parametrize("cayley", ["exact", "neumann"])
def test_bfloat16_gop_stream_stays_usable(case, cayley):
    """1000 default bf16 GOP steps: bf16 rounding of B is a random walk that keeps growing
    without correction, so the default stream must correct it for either Cayley map and keep
    ``||B^T B - I||_F`` well inside the Newton-Schulz basin (< 1) for SpectralSPD and the
    Kronecker factors, with a margin for other seeds (a larger n drifts further)."""
    manifold, x, mu, worst = gop_stream(case, torch.bfloat16, cayley, 0.01, steps=1000, seed=0)
    assert_low_precision_point(case, torch.bfloat16, x, mu)
    assert worst < 0.6
