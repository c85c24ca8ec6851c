"""The case table and helpers of the property suite for every spectral manifold
(``test_invariants.py``, ``test_invariants_low_precision.py``); see the former's docstring."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import settings
from hypothesis import strategies as st

import manifold_spectral as ms
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
