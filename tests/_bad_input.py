"""Shared helpers of the rejected-call tests (``test_bad_input*.py``): snapshots of the caller's
objects, ``rejects`` (the right exception, a message naming the argument, nothing changed),
small points, and the bad matrices and points more than one file feeds in. The
``spectral_manifold`` fixture over the three manifolds is in ``conftest.py``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.manifolds.points import TensorTree

F64 = torch.float64
N = 3


# Helpers ---------------------------------------------------------------------------------


def snapshot(obj: Any) -> Any:
    """A deep copy of tensors / points / state dicts, for comparison after the call."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, TensorTree):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


def assert_same(before: Any, after: Any) -> None:
    if isinstance(before, torch.Tensor):
        assert isinstance(after, torch.Tensor)
        assert after.dtype == before.dtype and after.shape == before.shape
        assert after.device == before.device
        if before.device.type != "meta":
            torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)
    elif isinstance(before, TensorTree):
        assert type(after) is type(before)
        for a, b in zip(before.leaves(), after.leaves(), strict=True):
            assert_same(a, b)
    elif isinstance(before, dict):
        assert before.keys() == after.keys()
        for k in before:
            assert_same(before[k], after[k])
    elif isinstance(before, (list, tuple)):
        assert len(before) == len(after)
        for a, b in zip(before, after, strict=True):
            assert_same(a, b)
    else:
        assert before == after


def rejects(
    call: Callable[[], Any],
    exc: type[Exception] | tuple[type[Exception], ...],
    name: str,
    *watched: Any,
    state: Callable[[], Any] | None = None,
) -> None:
    """``call()`` raises ``exc`` whose message names ``name``; ``watched`` objects and
    ``state()`` are unchanged."""
    before = [snapshot(w) for w in watched]
    state_before = None if state is None else snapshot(state())
    with pytest.raises(exc, match=rf"(^|\W){re.escape(name)}\b"):
        call()
    for b, w in zip(before, watched, strict=True):
        assert_same(b, w)
    if state is not None:
        assert_same(state_before, state())


def spd(n: int = N) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    return A @ A.T + n * torch.eye(n, dtype=F64)


def point(manifold: ms.SpectralManifold, seed: int = 0) -> Any:
    return manifold.random(generator=torch.Generator().manual_seed(seed))


MANIFOLDS = {
    "SpectralSPD": lambda: ms.SpectralSPD(N, dtype=F64),
    "DiagonalSPD": lambda: ms.DiagonalSPD(N, dtype=F64),
    # ab = N keeps the shared (N,)-sized means and gradients below; a 1 x 1 left factor.
    # Non-degenerate Kronecker shapes are covered in the Kronecker section at the end.
    "KroneckerSpectralSPD": lambda: ms.KroneckerSpectralSPD(1, N, dtype=F64),
}


def same_manifold_on(manifold: ms.SpectralManifold, device: Any) -> ms.SpectralManifold:
    """``manifold`` rebuilt on another device."""
    if isinstance(manifold, ms.KroneckerSpectralSPD):
        return ms.KroneckerSpectralSPD(manifold.a, manifold.b, dtype=F64, device=device)
    return type(manifold)(N, dtype=F64, device=device)


def good_egrad(manifold: ms.SpectralManifold) -> torch.Tensor:
    E = torch.ones(manifold.egrad_shape, dtype=F64)
    return E + torch.eye(N, dtype=F64) if E.ndim == 2 else E


def rgd_with_momentum(manifold: ms.SpectralManifold):
    """An ``RGD`` with momentum whose buffer is non-empty, and its current point."""
    opt = ms.RGD(manifold, lr=0.05, momentum=0.9)
    x = opt.step(point(manifold), good_egrad(manifold))
    return opt, x


def _singular_numerically_positive() -> torch.Tensor:
    # Rank 2 in exact arithmetic; eigh returns the zero eigenvalue as +2.5e-16 in float64.
    A = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=F64)
    return A @ A.T


BAD_MATRICES = {
    "non_square": torch.ones(3, 4, dtype=F64),
    "batched": torch.eye(3, dtype=F64).expand(2, 3, 3).clone(),
    "vector": torch.ones(3, dtype=F64),
    "wrong_size": torch.eye(4, dtype=F64),
    "non_symmetric": torch.eye(3, dtype=F64) + torch.triu(torch.ones(3, 3, dtype=F64), 1),
    "indefinite": torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=F64)),
    "negative_definite": -torch.eye(3, dtype=F64),
    "singular_exact": torch.diag(torch.tensor([1.0, 0.0, 2.0], dtype=F64)),
    "singular_rounding": _singular_numerically_positive(),
    "zero": torch.zeros(3, 3, dtype=F64),
    "nan": torch.where(torch.eye(3, dtype=torch.bool), float("nan"), 0.0).to(F64),
    "inf": torch.eye(3, dtype=F64) * float("inf"),
}


def bad_points(manifold: ms.SpectralManifold) -> list[tuple[str, Any, type[Exception]]]:
    x = point(manifold)
    # The factor holding ``d`` (and ``B``): the point itself, or a Kronecker point's
    # N x N right factor.
    f = x.right if isinstance(x, ms.KroneckerSpectralPoint) else x
    other = (
        ms.DiagonalPoint(f.d)
        if isinstance(x, (ms.SpectralPoint, ms.KroneckerSpectralPoint))
        else ms.SpectralPoint(torch.eye(N, dtype=F64), f.d)
    )
    d_neg = f.d.clone()
    d_neg[0] = -1.0
    d_nan = f.d.clone()
    d_nan[-1] = float("nan")
    out = [
        ("float32", x.to(torch.float32), TypeError),
        ("other_type", other, ValueError),
        ("d_zero", _with_d(x, torch.zeros_like(f.d)), ValueError),
        ("d_negative", _with_d(x, d_neg), ValueError),
        ("d_nan", _with_d(x, d_nan), ValueError),
        ("d_wrong_shape", _with_d(x, torch.ones(N + 1, dtype=F64)), ValueError),
    ]
    if isinstance(f, ms.SpectralPoint):
        out += [
            ("B_not_orthogonal", _with_B(x, f.B * 1.2), ValueError),
            ("B_wrong_shape", _with_B(x, torch.eye(N + 1, dtype=F64)), ValueError),
            ("B_float32", _with_B(x, f.B.float()), TypeError),
        ]
    if isinstance(x, ms.KroneckerSpectralPoint):
        K = ms.KroneckerSpectralPoint
        out += [
            ("alpha_zero", K(torch.zeros_like(x.alpha), x.left, x.right), ValueError),
            ("alpha_negative", K(-x.alpha, x.left, x.right), ValueError),
            ("alpha_nan", K(torch.full_like(x.alpha, float("nan")), x.left, x.right), ValueError),
            ("alpha_wrong_shape", K(x.alpha.reshape(1), x.left, x.right), ValueError),
            # S is unchanged, but det S_R = 2^N != 1: the factorisation is not normalised.
            ("det_not_one", K(x.alpha / 2**N, x.left, _with_d(x, 2 * f.d).right), ValueError),
        ]
    return out


def _with_d(x: Any, d: torch.Tensor) -> Any:
    if isinstance(x, ms.KroneckerSpectralPoint):
        return ms.KroneckerSpectralPoint(x.alpha, x.left, ms.SpectralPoint(x.right.B, d))
    return ms.SpectralPoint(x.B, d) if isinstance(x, ms.SpectralPoint) else ms.DiagonalPoint(d)


def _with_B(x: Any, B: torch.Tensor) -> Any:
    if isinstance(x, ms.KroneckerSpectralPoint):
        return ms.KroneckerSpectralPoint(x.alpha, x.left, ms.SpectralPoint(B, x.right.d))
    return ms.SpectralPoint(B, x.d)


KA, KB = 2, 3  # a != b, so a transposed (b, a) matrix is a wrong shape


def kron() -> ms.KroneckerSpectralSPD:
    return ms.KroneckerSpectralSPD(KA, KB, dtype=F64)


F32 = torch.float32


def _logdet_Q(n: int = 10, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    return (A @ A.T / n + 0.1 * torch.eye(n, dtype=F64)).to(dtype)
