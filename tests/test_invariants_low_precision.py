"""Low-precision (float32, bfloat16) Gaussian GOP streams of every spectral manifold: the
orthogonality drift of the rotation factors stays bounded and re-orthogonalisation restores it
(cases and helpers: ``_invariants.py``)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _invariants import CASES, F64, ROTATION_CASES, Case, dense_size, setup

import manifold_spectral as ms
from manifold_spectral.linalg import orthogonality_error

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
