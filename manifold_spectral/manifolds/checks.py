"""Checks shared by the spectral manifolds: tolerances of a valid point (orthogonality,
the probe of ``check_point(fast=True)``), positive-definiteness of a matrix's eigenvalues,
and the argument checks of the constructors, the GOP columns and the tangents."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..validation import check_positive, check_tensor


def orthogonality_tol(dtype: torch.dtype, n: int) -> float:
    """Accepted ``||B^T B - I||_F`` in a full check: ``min(0.25, max(1e-10, 100 n eps))``.

    Exact Cayley steps stay far below it; Neumann steps drift by up to ``2 rho^6`` a step and
    need ``reorthogonalize`` (RGD does it every ``reorthogonalize_every`` steps) to pass it.
    """
    return min(0.25, max(1e-10, 100.0 * n * float(torch.finfo(dtype).eps)))


def probe_tol(dtype: torch.dtype) -> float:
    """Loose tolerance of the O(n^2) orthogonality probe of ``check_point(fast=True)``.

    It only rejects a ``B`` that is plainly not orthogonal (a wrong matrix, or drift that was
    never corrected): 1e-2 for float32/float64, 1e-1 for 16-bit types.
    """
    return 1e-1 if torch.finfo(dtype).bits <= 16 else 1e-2


def check_positive_definite(d: Tensor, src_dtype: torch.dtype, name: str) -> None:
    """``ValueError`` naming ``name`` unless the eigenvalues ``d`` of a symmetric matrix are
    all above its numerical zero ``eps(src_dtype) * max|d|`` (eigenvalues at the level of the
    input's rounding: the matrix is numerically singular)."""
    floor = float(torch.finfo(src_dtype).eps) * float(d.abs().max())
    if not float(d.min()) > floor:
        raise ValueError(
            f"{name}: not positive definite (smallest eigenvalue {float(d.min()):.3e}, "
            f"numerical zero {floor:.1e})"
        )


def value_range(v: Tensor) -> str:
    """``"[min, max]"`` of a tensor (for error messages)."""
    return f"[{float(v.min()):.3e}, {float(v.max()):.3e}]"


def eigenvalue_range(d: Tensor) -> str:
    """``"eigenvalues in [min, max]"`` (for the messages of ``_representable``)."""
    return f"eigenvalues in {value_range(d)}"


def det_tol(dtype: torch.dtype, size: int) -> float:
    """Accepted ``|log det S_l| = |sum(log d_l)|``.

    ``max(1e-10, 100 s eps)`` for 32/64-bit types. In 16-bit types ``s eps``: ``normalize``
    rounds each ``d_l`` once, and many (nearly) equal eigenvalues round the same way, so
    ``|log det|`` can reach ``s eps / 2`` (it does not accumulate: every step re-centres).
    """
    eps = float(torch.finfo(dtype).eps)
    if torch.finfo(dtype).bits <= 16:
        return size * eps
    return max(1e-10, 100.0 * size * eps)


def check_log_scale(log_scale: Any) -> float:
    """The ``log_scale`` of ``random``: a finite number >= 0."""
    return check_positive(log_scale, "log_scale", allow_zero=True)


def check_gop_columns(
    V: Any, lead: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The gradient columns ``V`` of ``gop_eigenbasis``: a tensor of shape ``(*lead, m)``,
    ``m >= 1``, in the manifold's dtype and device (no reduction: the GOP checked the
    gradients' values; a NaN here makes the step's gradient NaN, which the step rejects)."""
    check_tensor(V, "V", dtype=dtype, device=device, finite=False)
    if V.ndim != len(lead) + 1 or tuple(V.shape[:-1]) != tuple(lead) or V.shape[-1] < 1:
        want = (*lead, "m")
        raise ValueError(f"V: expected shape {want} (m gradient columns), got {tuple(V.shape)}")
    return V


def check_tangent_type(tangent: Any, tangent_type: type, name: str = "tangent") -> None:
    """``TypeError`` naming ``name`` unless ``tangent`` is a ``tangent_type``."""
    if not isinstance(tangent, tangent_type):
        raise TypeError(f"{name}: expected a {tangent_type.__name__}, got {type(tangent).__name__}")


def check_tangent_like(tangent: Any, reference: Any, name: str = "tangent") -> None:
    """``TypeError``/``ValueError`` naming ``name`` (and the field) unless ``tangent`` has
    ``reference``'s type and, field by field, its tensors' shapes, dtype and device, with
    finite entries (a tangent of another batch shape would broadcast into a wrong sum)."""
    check_tangent_type(tangent, type(reference), name)
    for f in dataclasses.fields(reference):
        ref, got, field = getattr(reference, f.name), getattr(tangent, f.name), f"{name}.{f.name}"
        if isinstance(ref, Tensor):
            check_tensor(got, field, shape=tuple(ref.shape), dtype=ref.dtype, device=ref.device)
        else:
            check_tangent_like(got, ref, field)
