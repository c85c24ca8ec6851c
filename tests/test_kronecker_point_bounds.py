"""``KroneckerSpectralSPD.check_point(fast=True)`` compares every bound at once (``|log alpha|``,
each side's ``|log det|`` and orthogonality probe against its own tolerance): points just
inside and just outside each bound, with the sides' tolerances different (a != b in float32),
so that a bound compared with another side's or another quantity's tolerance is caught. The
expected verdicts come from the tolerances' formulas (``det_tol``: ``max(1e-10, 100 n eps)``
for 32 bits; ``probe_tol``: 1e-2), not from the check."""

from __future__ import annotations

import math

import pytest
import torch

from manifold_spectral.manifolds import KroneckerSpectralPoint, KroneckerSpectralSPD, SpectralPoint

F32 = torch.float32
EPS32 = float(torch.finfo(F32).eps)
A_SIDE, B_SIDE = 4, 64  # det tolerances 100 * 4 * eps = 4.8e-5 and 100 * 64 * eps = 7.6e-4


def tol(n: int) -> float:
    return max(1e-10, 100.0 * n * EPS32)


def point(k: int | None, *, log_alpha=0.0, logdet_L=0.0, logdet_R=0.0, grow_L=0.0, i=0):
    """The identity-basis point with ``log alpha``, ``log det S_L``, ``log det S_R`` and
    ``B_L = (1 + grow_L) I`` (probe error ``(1 + grow_L)^2 - 1`` for the unit probe) set on
    batch element ``i`` (all others at the origin)."""
    bs = () if k is None else (k,)
    alpha = torch.ones(bs, dtype=torch.float64)
    dL = torch.ones(*bs, A_SIDE, dtype=torch.float64)
    dR = torch.ones(*bs, B_SIDE, dtype=torch.float64)
    BL = torch.eye(A_SIDE, dtype=torch.float64).expand(*bs, A_SIDE, A_SIDE).clone()
    BR = torch.eye(B_SIDE, dtype=torch.float64).expand(*bs, B_SIDE, B_SIDE).clone()
    at = () if k is None else (i,)
    alpha[at] = math.exp(log_alpha) if math.isfinite(log_alpha) else log_alpha
    dL[at] = math.exp(logdet_L / A_SIDE)
    dR[at] = math.exp(logdet_R / B_SIDE)
    BL[at] = BL[at] * (1.0 + grow_L)
    return KroneckerSpectralPoint(
        alpha.to(F32), SpectralPoint(BL.to(F32), dL.to(F32)), SpectralPoint(BR.to(F32), dR.to(F32))
    )


# Between the two sides' tolerances: the left side's det fails, the right side's passes.
MID = math.sqrt(tol(A_SIDE) * tol(B_SIDE))
CASES = [
    (dict(), True),
    (dict(logdet_L=MID), False),
    (dict(logdet_L=-MID), False),
    (dict(logdet_R=MID), True),
    (dict(logdet_R=-MID), True),
    (dict(logdet_R=3 * tol(B_SIDE)), False),
    (dict(log_alpha=80.0), True),  # alpha = 5.5e34, finite in float32
    (dict(log_alpha=-100.0), True),  # alpha = 3.7e-44, a positive subnormal
    (dict(log_alpha=math.inf), False),  # alpha = Inf
    (dict(log_alpha=-math.inf), False),  # alpha = 0
    (dict(grow_L=0.5 * 1e-2 / 2), True),  # probe error about half probe_tol
    (dict(grow_L=2.0 * 1e-2 / 2), False),  # about twice probe_tol
]


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("case, valid", CASES)
def test_fast_check_bounds_each_quantity_by_its_own_tolerance(k, case, valid):
    man = KroneckerSpectralSPD(A_SIDE, B_SIDE, F32, batch=k)
    x = point(k, i=1, **case)
    assert man.check_point(x, fast=True)[0] is valid
    assert man.check_point(x, fast=False)[0] is valid or "grow_L" in case  # the full check's
    # orthogonality tolerance is its own


@pytest.mark.parametrize("k", [None, 3])
def test_fast_check_rejects_negative_and_nan_alpha(k):
    man = KroneckerSpectralSPD(A_SIDE, B_SIDE, F32, batch=k)
    for bad in (-1.0, math.nan):
        x = point(k, i=1)
        alpha = x.alpha.clone()
        alpha[() if k is None else (1,)] = bad
        y = KroneckerSpectralPoint(alpha, x.left, x.right)
        ok, reason = man.check_point(y, fast=True)
        assert not ok and "alpha" in reason
