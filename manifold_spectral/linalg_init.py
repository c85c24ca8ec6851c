"""The decompositions that initialisation, tests and baselines may call (never a step of the
spectral methods): Haar-random bases, test SPD matrices, the nearest Kronecker product and a
canonical ``eigh``. Re-exported by ``linalg``, where the per-step helpers live.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "eigh_canonical",
    "tie_runs",
    "haar_orthogonal",
    "random_spd",
    "nearest_kronecker_factors",
]


def check_generator(generator: Any) -> torch.Generator | None:
    """``generator`` of the ``random`` draws: a ``torch.Generator`` or ``None``, else a
    ``TypeError`` naming it (a seed ``0`` would fail inside ``torch.randn``, unnamed)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator: expected a torch.Generator or None, got {generator!r} (for a seed s: "
            f"torch.Generator().manual_seed(s))"
        )
    return generator


def haar_orthogonal(
    n: int, batch_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
) -> Tensor:
    """Haar-random orthogonal matrices, (*batch_shape, n, n), float64 (init-only).

    The QR factor ``Q`` of a standard Gaussian matrix, with the signs of ``R``'s diagonal moved
    into ``Q``'s columns: without that sign fix ``Q`` is not Haar-distributed (Mezzadri, 2007).
    Draws ``batch_shape + (n, n)`` normals from ``generator``; ``TypeError`` naming it when it
    is not a ``torch.Generator`` (``check_generator``).
    """
    A = torch.randn(*batch_shape, n, n, generator=check_generator(generator), dtype=torch.float64)
    Q, R = torch.linalg.qr(A)  # init-only
    return Q * torch.sign(R.diagonal(dim1=-2, dim2=-1))[..., None, :]


def random_spd(d: int, decades: float, generator: torch.Generator) -> Tensor:
    """A test SPD matrix ``H Diag(q) H^T`` (float64): ``H`` Haar-random (``haar_orthogonal``,
    init-only), ``q`` log-spaced over ``decades`` decades with geometric mean 1 (condition
    number ``10^decades``; ``d = 1``: ``q = 1``). ``ValueError`` for ``decades`` not a finite
    number ``>= 0``."""
    if not (isinstance(decades, (int, float)) and math.isfinite(decades) and decades >= 0):
        raise ValueError(f"decades: expected a finite number >= 0, got {decades!r}")
    H = haar_orthogonal(d, generator=generator)
    if d == 1:  # logspace of one point is its start, not the geometric mean 1
        return H * H.T
    q = torch.logspace(-decades / 2, decades / 2, d, dtype=torch.float64)
    return (H * q) @ H.T


def nearest_kronecker_factors(
    S: Tensor, a: int, b: int, *, full_matrices: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, B, s_1)`` with ``A kron B`` the nearest Kronecker product to the (ab, ab) ``S`` in
    the Frobenius norm (Van Loan & Pitsianis, 1993; init-only SVD).

    With row-major pairs, ``(A kron B)[(i,j),(l,k)] = A[i,l] B[j,k]``, so the rearrangement
    ``R[(i,l),(j,k)] = S[(i,j),(l,k)]`` (a^2 x b^2) turns the problem into the best rank-one
    approximation ``R ~ vec(A) vec(B)^T``: the leading singular pair ``(s_1, u_1, v_1)``,
    ``A = sqrt(s_1) Mat(u_1)``, ``B = sqrt(s_1) Mat(v_1)``. The sign of the pair is fixed so
    that ``tr A >= 0``. ``full_matrices`` is passed to ``torch.linalg.svd`` (only the leading
    pair is used; the two settings agree to rounding, not bit for bit).
    """
    if S.ndim != 2 or tuple(S.shape) != (a * b, a * b):
        raise ValueError(
            f"S: expected shape ({a * b}, {a * b}) for a = {a}, b = {b}, got {tuple(S.shape)}"
        )
    R = S.reshape(a, b, a, b).permute(0, 2, 1, 3).reshape(a * a, b * b)
    U, sv, Vh = torch.linalg.svd(R, full_matrices=full_matrices)  # init-only
    root = sv[0].sqrt()
    A = (root * U[:, 0]).reshape(a, a)
    B = (root * Vh[0]).reshape(b, b)
    if torch.trace(A) < 0:
        A, B = -A, -B
    return A, B, sv[0]


def eigh_canonical(S: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """``S = B Diag(d) B^T`` (ascending ``d``) with a basis that is a continuous function of
    ``S`` inside clusters of (near-)repeated eigenvalues. Init-only (two ``eigh``).

    ``torch.linalg.eigh`` returns an arbitrary orthonormal basis of a repeated eigenvalue's
    eigenspace: it depends on the input's last bits (thread count, BLAS, a DDP all-reduce).
    The chart step treats eigenvalues with ``|d_i - d_j| <= tol * max(d_i, d_j)`` as equal
    (Moore-Penrose: no rotation inside the cluster) and updates each ``d_i`` from the diagonal
    of ``B^T H B``, so its result depends on that basis. Here each cluster ``U`` (consecutive
    eigenvalues closer than ``tol``) is turned to the eigenbasis of ``U^T R U`` for the fixed
    ramp ``R = Diag(1, ..., n) / n``, a basis fixed by the cluster's subspace alone, and the
    cluster's eigenvalues become the Rayleigh quotients ``diag(U^T S U)`` of the new basis
    (``S`` is then represented to the cluster's spread, at most ``tol`` relative). Outside
    clusters this is ``eigh``.
    """
    d, B = torch.linalg.eigh(S)  # init-only
    n = d.shape[-1]
    if S.ndim != 2 or n < 2:
        return d, B
    close = (d[1:] - d[:-1]).abs() <= tol * torch.maximum(d[1:].abs(), d[:-1].abs())
    if not bool(close.any()):
        return d, B
    ramp = torch.arange(1, n + 1, dtype=S.dtype, device=S.device) / n
    d, B = d.clone(), B.clone()
    for start, stop in tie_runs(close):
        U = B[:, start:stop]
        _, V = torch.linalg.eigh(U.mT @ (ramp[:, None] * U))  # init-only
        U = U @ V
        B[:, start:stop] = U
        d[start:stop] = ((S @ U) * U).sum(0)
    return d, B


def tie_runs(close: Tensor) -> list[tuple[int, int]]:
    """The clusters of a sorted spectrum: ``(start, stop)`` of each run of two or more
    consecutive entries joined by ``close`` (``close[i]``: entries ``i`` and ``i + 1`` are
    tied), in order (``eigh_canonical``, ``SpectralSPD.split_ties``)."""
    flags = close.tolist()
    runs, start = [], 0
    for i in range(1, len(flags) + 2):
        if i <= len(flags) and flags[i - 1]:
            continue
        if i - start > 1:
            runs.append((start, i))
        start = i
    return runs
