"""Numerical guards under every layer: machine epsilon and the eigenvalue tie tolerance of a
dtype, one-reduction finiteness and maximum tests, and cached scalar operands.

They sit below ``linalg`` (which re-exports them) and ``validation`` (which re-exports
``check_count``, the count check both read), so neither imports the other.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "eps",
    "default_eig_tol",
    "all_finite",
    "finite_with_sum",
    "as_dtype",
    "operand",
    "all_true",
    "max_abs",
    "all_finite_positive",
    "max_abs_from",
    "check_count",
]


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype (``torch.finfo(dtype).eps``)."""
    return float(torch.finfo(dtype).eps)


def default_eig_tol(dtype: torch.dtype) -> float:
    """Relative gap below which two eigenvalues are treated as equal: ``sqrt(eps(dtype))``.

    Why this value: the rotation metric entry ``C_ij ~ 4 delta^2`` for a relative gap
    ``delta``; it is numerically singular (below ``eps`` relative to the eigenvalue block
    ``1/2``) once ``delta < sqrt(eps)``, and the step ``G_ij / delta`` would then amplify the
    ``eps``-sized rounding error of ``G`` beyond ``sqrt(eps)``. float64: 1.5e-8,
    float32: 3.5e-4, bfloat16: 8.8e-2.
    """
    return float(torch.finfo(dtype).eps) ** 0.5


def all_finite(X: Tensor) -> bool:
    """Whether every entry of ``X`` is finite (no NaN or Inf), exactly.

    One NaN or Inf makes a sum NaN or Inf whatever the order of the additions, so a finite
    ``sum(X)`` proves every entry finite with one reduction (no elementwise boolean tensor);
    only a non-finite sum (a bad entry, or finite entries whose sum overflows) falls back to
    the elementwise test.
    """
    # math.isfinite on the one synchronised value: a single tensor operation (the sum);
    # torch.isfinite would dispatch four more on the 0-d result.
    return finite_with_sum(X, float(X.sum()))


def finite_with_sum(X: Tensor, total: float) -> bool:
    """``all_finite(X)`` given ``total = float(X.sum())``, read by the caller (e.g. with other
    values in one synchronisation): a finite sum proves every entry finite; otherwise the
    elementwise test decides."""
    return math.isfinite(total) or bool(torch.isfinite(X).all())


def as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)``, or ``t`` itself when it has that dtype already (what ``to`` returns
    then too, after a dispatch that an optimizer step would pay per parameter and per
    conversion)."""
    return t if t.dtype == dtype else t.to(dtype)


def operand(value: float | Tensor, like: Tensor) -> Tensor | float:
    """``value`` as the scalar operand of an elementwise op on ``like``: a cached 0-d CPU
    tensor of ``like``'s dtype for a 32- or 64-bit ``like``, else the number itself (a
    tensor ``value`` is returned as it is).

    A Python number is wrapped into a fresh 0-d tensor and converted on every call, which on
    a small tensor costs about as much again as the op; the kernel of a 32- or 64-bit op
    reads the number rounded to that dtype, which is the cached tensor's value, so the
    result has the same bits. A 16-bit op computes with the number in float32 (its opmath
    type), which a 16-bit 0-d tensor would round again: the number is passed. So are zeros
    and NaN, which a cache keyed by value cannot tell apart (``-0.0 == 0.0``: the sign of a
    zero sum depends on it; ``nan != nan``: never found)."""
    dtype = like.dtype
    if isinstance(value, Tensor) or dtype not in _OPERAND_DTYPES or not value or value != value:
        return value
    return _operand(float(value), dtype)


_OPERAND_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=512)
def _operand(value: float, dtype: torch.dtype) -> Tensor:
    # Made outside any inference_mode a caller may be in: an inference tensor cannot be an
    # operand of an op whose result autograd or a version counter tracks.
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype)


def all_true(ok: Tensor) -> Tensor:
    """``ok.all()``, or the 0-d boolean ``ok`` itself (which ``all`` would copy): the point
    checks of an unbatched manifold combine 0-d verdicts, one dispatch fewer each."""
    return ok if ok.ndim == 0 and ok.dtype == torch.bool else ok.all()


def max_abs(X: Tensor) -> Tensor:
    """``max_ij |X_ij|`` of a non-empty ``X`` as a 0-d tensor of its dtype, NaN when an entry
    is NaN (``torch.maximum`` propagates it) and Inf when one is infinite.

    ``max(max X, -min X)`` from ``torch.aminmax``: one vectorised pass and no temporary. It
    equals ``torch.linalg.vector_norm(X, inf)`` exactly (a maximum rounds nothing), which
    reduces through a generic norm kernel, several times slower on a CPU; the optimizer's
    per-step checks of gradients and updates read it."""
    lo, hi = torch.aminmax(X)
    return torch.maximum(hi, lo.neg())


def all_finite_positive(X: Tensor) -> bool:
    """Whether every entry of ``X`` is finite and ``> 0`` (``True`` for an empty ``X``):
    ``0 < min X`` and ``max X < Inf`` from one ``torch.aminmax`` pass, which gives NaN for
    both when an entry is NaN (every comparison then fails). The diagonal scheme's point
    check after each of its elementwise steps reads it: one reduction instead of a sum, a
    comparison, an ``all`` and their conjunction."""
    if not X.numel():
        return True
    lo, hi = torch.aminmax(X)
    return 0.0 < float(lo) and float(hi) < math.inf


def max_abs_from(lo: float, hi: float) -> float:
    """``float(max_abs(X))`` from ``lo, hi = torch.aminmax(X)`` read to the host (with other
    values in one synchronisation): ``max(hi, -lo)`` exactly, NaN when ``X`` has a NaN
    (``aminmax`` then gives NaN for both)."""
    return math.nan if math.isnan(lo) or math.isnan(hi) else max(hi, -lo)


def check_count(value: Any, name: str) -> int:
    """A non-negative ``int`` count (``bool`` is rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return value
