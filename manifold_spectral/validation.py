"""Argument checks shared by every layer (one definition each, public names).

Each check raises a ``TypeError`` (wrong kind of value) or ``ValueError`` (wrong value) whose
message starts with the argument's name, and returns the value normalised (a float, a
``torch.dtype``, a ``torch.device``, ...). This module sits at the bottom of the package next
to ``linalg``: everything may import it, it imports nothing of the package but ``linalg``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .linalg_numerics import (
    all_finite,
    check_count,  # noqa: F401 (re-exported: the argument checks)
    default_eig_tol,
)

__all__ = [
    "NonFiniteError",
    "unmasked",
    "check_tensor",
    "check_real",
    "check_positive",
    "check_size",
    "check_batch",
    "check_dtype",
    "resolve_dtype",
    "resolve_device",
    "check_flag",
    "check_momentum",
    "EXPONENTIALS",
    "check_exponential",
    "symmetric_matrix",
    "check_symmetric",
    "real_tensor",
    "callback_stops",
]


class NonFiniteError(ValueError, FloatingPointError):
    """A tensor argument holds NaN or Inf.

    A ``ValueError`` (bad input, named by the message) for a direct caller, and a
    ``FloatingPointError`` for loops that end a run on a numerical failure and return the last
    good iterate (``spd.minimize``): inside such a loop, a non-finite gradient comes from the
    problem's own computation at the current iterate, like a step that left the manifold.
    """


def check_tensor(
    value: Any,
    name: str,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    finite: bool = True,
) -> Tensor:
    """Validate a tensor argument; raise ``TypeError``/``ValueError`` naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {value.dtype}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(value.shape)}")
    if device is not None and value.device != torch.device(device):
        raise ValueError(f"{name}: expected device {device}, got {value.device}")
    if finite and not all_finite(value):
        raise NonFiniteError(f"{name}: contains NaN or Inf")
    return value


def _real_scalar(value: Any, name: str) -> float:
    """A real number or a one-element tensor as a float (``bool`` is rejected)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a scalar, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    return float(value)


def check_real(value: Any, name: str) -> float:
    """Validate a finite real scalar (an exponent, an optimal value)."""
    v = _real_scalar(value, name)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return v


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Validate a finite positive (or non-negative) real scalar."""
    v = _real_scalar(value, name)
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return v


def check_fraction(value: Any, name: str) -> float:
    """Validate a real scalar in ``[0, 1]``."""
    v = check_positive(value, name, allow_zero=True)
    if v > 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return v


def check_size(value: Any, name: str) -> int:
    """A positive ``int`` size (``bool`` is rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def check_batch(value: Any) -> int | None:
    """``None`` (unbatched) or a positive ``int`` batch size (``bool`` is rejected)."""
    return None if value is None else check_size(value, "batch")


def computes_in(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is a floating dtype torch computes in: 16, 32 or 64 bits. The 8-bit
    (and smaller) float formats are storage formats: torch's CPU kernels for sums, products
    and ``max`` are not implemented for them, so a computation would fail midway."""
    return dtype.is_floating_point and torch.finfo(dtype).bits >= 16


def check_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """A floating ``torch.dtype`` torch computes in (``computes_in``); ``TypeError`` naming
    ``name`` otherwise."""
    if not isinstance(dtype, torch.dtype) or not computes_in(dtype):
        raise TypeError(
            f"{name}: expected a floating torch.dtype of 16, 32 or 64 bits, got {dtype!r}"
        )
    return dtype


def resolve_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` or torch's default; must be a floating dtype."""
    return check_dtype(torch.get_default_dtype() if dtype is None else dtype)


def check_momentum(value: Any, name: str = "momentum") -> float:
    """A heavy-ball coefficient: a real number in ``[0, 1)``."""
    momentum = check_positive(value, name, allow_zero=True)
    if momentum >= 1.0:
        raise ValueError(f"{name}: expected a value in [0, 1), got {momentum}")
    return momentum


def resolve_device(device: Any) -> torch.device:
    """``torch.device`` with the CUDA index filled in, so tensor and manifold devices compare.

    ``ValueError`` naming ``device`` for a string torch does not parse and for a CUDA device
    that this machine does not have (torch's own errors are an ``AssertionError`` or a
    ``RuntimeError`` raised later, at the first tensor)."""
    try:
        dev = torch.device("cpu") if device is None else torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device: not a torch device: {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested, but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {device!r} requested, but there are {torch.cuda.device_count()} "
                "CUDA devices"
            )
    return dev


#: The eigenvalue maps of a retraction, one spelling everywhere (``RGD``, ``retr``,
#: ``Gaussian``, ``SpectralKron``): ``d exp(m)``, its first-order truncation ``d (1 + m)``
#: (paper Fig. 5 / Fig. 6 right) and that truncation continued positively below ``m = -1/2``
#: (``blocks.eig_retract``).
EXPONENTIALS = ("exact", "truncated", "continued")


def check_exponential(value: Any, name: str = "exponential") -> str:
    """``value`` if it is one of ``EXPONENTIALS``. The booleans of earlier versions
    (``True``: ``"exact"``, ``False``: ``"truncated"``) are mapped with a
    ``DeprecationWarning``."""
    if value is True or value is False:
        new = "exact" if value else "truncated"
        warnings.warn(
            f"{name}={value} is deprecated; pass {name}={new!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        return new
    if isinstance(value, str) and value in EXPONENTIALS:
        return value
    raise ValueError(f"{name}: expected one of {EXPONENTIALS}, got {value!r}")


def check_flag(value: Any, name: str) -> bool:
    """A strict bool option (a string such as "truncated" must not read as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return value


def symmetric_matrix(
    S: Any, name: str, size: int, sym_tol: float | None = None
) -> tuple[Tensor, torch.dtype]:
    """Validate a dense real symmetric (size, size) matrix; return it in float64 and the
    (floating) dtype it came in.

    Raises ``TypeError`` for a non-matrix or non-real input and ``ValueError`` for a wrong
    shape, NaN/Inf or a relative asymmetry ``||S - S^T||_F / ||S||_F`` above ``sym_tol``
    (default ``sqrt(eps)`` of the input's dtype), naming ``name``.
    """
    if not isinstance(S, Tensor):
        try:
            T = torch.as_tensor(S)
            if not hasattr(S, "dtype") and T.dtype.is_floating_point:
                # Python floats are float64; torch's default dtype would round a nested list
                T = torch.as_tensor(S, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"{name}: expected a matrix (tensor or array), got {type(S).__name__}"
            ) from e
        S = T
    if S.dtype.is_complex or S.dtype == torch.bool:
        raise TypeError(f"{name}: expected a real matrix, got dtype {S.dtype}")
    # detached first: the point is not differentiable in S, and the finiteness check's
    # float() of a sum that autograd records would warn from inside this package
    S = S.detach()
    if not S.dtype.is_floating_point:
        S = S.to(torch.float64)
    check_tensor(S, name)
    if S.ndim != 2 or tuple(S.shape) != (size, size):
        raise ValueError(f"{name}: expected shape ({size}, {size}), got {tuple(S.shape)}")
    S64 = S.to(dtype=torch.float64)
    check_symmetric(S64, name, sym_tol, dtype=S.dtype)
    return S64, S.dtype


def check_symmetric(
    S: Tensor, name: str, sym_tol: float | None = None, *, dtype: torch.dtype | None = None
) -> None:
    """Raise ``ValueError`` naming ``name`` when a finite real (*batch, n, n) ``S`` is not
    symmetric: a relative asymmetry ``||S - S^T||_F / ||S||_F`` above ``sym_tol`` (default
    ``sqrt(eps)`` of ``dtype``, itself defaulting to ``S``'s) in any matrix of the batch.

    The one rule for every dense symmetric input (``from_matrix``, ``DenseCurvature``):
    rounding of a symmetric estimate passes, a genuinely non-symmetric matrix is refused
    rather than silently replaced by ``Sym(S)``. Computed in float64 (one host read).
    """
    tol = (
        default_eig_tol(S.dtype if dtype is None else dtype)
        if sym_tol is None
        else check_positive(sym_tol, "sym_tol", allow_zero=True)
    )
    if S.numel() == 0:
        return
    S64 = S.detach().to(dtype=torch.float64)
    asym = float(
        (
            torch.linalg.matrix_norm(S64 - S64.mT)
            / torch.clamp(torch.linalg.matrix_norm(S64), min=1e-300)
        ).max()
    )
    if asym > tol:
        raise ValueError(f"{name}: not symmetric (relative asymmetry {asym:.2e} > {tol:.1e})")


def unmasked(value: Any) -> Any:
    """``value`` with masked entries as NaN (a floating array), anything else unchanged. A
    masked entry (``np.ma.masked``: what ``np.ma`` reductions return when every entry is
    masked) is a missing value; ``np.asarray`` would drop the mask and read its placeholder,
    ``0``, the best value of many objectives."""
    if isinstance(value, np.ma.MaskedArray):
        return np.ma.filled(value.astype(np.result_type(value.dtype, np.float16)), np.nan)
    return value


def real_tensor(value: Any, name: str, what: str = "the value") -> Tensor:
    """``value`` (a tensor, an array or a number) as a tensor of real numbers; ``TypeError``
    naming ``name`` otherwise. torch would fail on ``None`` with a RuntimeError deep inside
    and cast a complex value to its real part with only a warning; ``bool`` is no number
    here. ``what`` names the value in the message (e.g. ``"the value f(S)"``)."""
    if isinstance(value, Tensor):
        real = not (value.dtype.is_complex or value.dtype == torch.bool)
    else:
        arr = np.asarray(unmasked(value))
        real = arr.dtype.kind in "iuf"
        value = torch.as_tensor(arr) if real else value
    if not real:
        got = f"dtype {value.dtype}" if isinstance(value, Tensor) else repr(value)
        raise TypeError(f"{name}: expected a real number as {what}, got {got}")
    return value


def callback_stops(value: Any, name: str = "callback") -> bool:
    """Whether a callback's return ``value`` asks to stop the run (the one rule of every
    solver's ``callback``).

    A scalar boolean or integer stops the run when it is true: ``True``, ``np.True_``,
    ``torch.tensor(True)``, ``1`` (a stop test computed with numpy or torch is as good as a
    literal ``True``); ``None`` (no return statement), ``False`` and ``0`` continue. Any
    other value (a float, a string, an array or tensor with dimensions, ...) is a
    ``TypeError`` naming ``name``: its truth is no clear request, and ignoring it silently
    was how ``np.True_`` went unnoticed. A 0-d tensor is read with ``bool()`` (one host
    synchronisation per call on a GPU, only for a tensor return).
    """
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_, numbers.Integral, np.integer)):
        return bool(value)
    if isinstance(value, Tensor) and value.ndim == 0:
        scalar = not (value.is_floating_point() or value.is_complex())  # bool or int dtype
    elif isinstance(value, np.ndarray) and value.ndim == 0:
        scalar = value.dtype.kind in "biu"
    else:
        scalar = False
    if not scalar:
        raise TypeError(
            f"{name}: expected True/False (a bool, or an int, numpy or torch scalar of either) "
            f"or None as the return value, got {value!r}"
        )
    return bool(value)
