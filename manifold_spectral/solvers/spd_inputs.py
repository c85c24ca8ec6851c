"""Input checks of the SPD problems (``spd_problems``) and methods (``spd_methods``): matrices
as tensors, a symmetric positive-definite ``Q`` (validated once, at construction), counts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..linalg import sym
from ..validation import symmetric_matrix

__all__: list[str] = []  # private helpers of the spd modules


def _as_tensor(value: Any, name: str) -> tuple[Tensor, bool]:
    """``(tensor, came_as_numpy)``; non-floating input becomes float64."""
    is_numpy = not isinstance(value, Tensor)
    if is_numpy:
        try:
            value = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError) as e:
            # the type, not the repr: a result object's repr is its whole multi-line summary
            got = "None" if value is None else type(value).__name__
            hint = " (an earlier run's state is result.point)" if hasattr(value, "point") else ""
            raise TypeError(f"{name}: expected a matrix (tensor or array), got {got}{hint}") from e
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{name}: expected real numbers, got dtype {value.dtype}")
    if not value.dtype.is_floating_point:
        value = value.to(torch.float64)
    return value, is_numpy


def _spd_matrix(Q: Any, name: str = "Q") -> tuple[Tensor, bool, Tensor]:
    """Validate a symmetric positive-definite matrix; returns it (its own dtype and device),
    whether it came as numpy, and its Cholesky factor in float64 (setup only)."""
    Q, is_numpy = _as_tensor(Q, name)
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] < 1:
        raise ValueError(f"{name}: expected a square (n, n) matrix, got shape {tuple(Q.shape)}")
    Q64, _ = symmetric_matrix(Q, name, Q.shape[0])
    Q64 = sym(Q64)
    chol, info = torch.linalg.cholesky_ex(Q64)  # init-only: validates Q when built
    if int(info) != 0:
        raise ValueError(f"{name}: not positive definite (Cholesky factorisation failed)")
    return sym(Q), is_numpy, chol


def _logdet_dense(S: Tensor) -> Tensor:
    """``log det S`` of a dense SPD matrix (dense monitoring only); ``-inf`` if not PD (the
    limit at the boundary of the cone, so that ``-log det S = +inf`` outside it)."""
    # Dense monitoring/baselines, not on the spectral path; 16-bit types have no Cholesky kernel.
    L, info = torch.linalg.cholesky_ex(  # dense baselines' monitoring only
        S.float() if S.dtype in (torch.float16, torch.bfloat16) else S
    )
    if int(info) != 0:
        return torch.tensor(-math.inf, dtype=S.dtype, device=S.device)
    return (2.0 * torch.log(torch.diagonal(L)).sum()).to(S.dtype)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _nonnegative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return int(value)
