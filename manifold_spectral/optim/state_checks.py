"""Validation of a ``SpectralKron`` parameter's saved state (other than its factors, which
are checked as manifold points) before ``load_state_dict`` writes anything: a NaN momentum
buffer or step count would make every later step fail, and a kept GOP mean of the wrong
shape would broadcast silently into the next curvature step, so each is refused with a
``ValueError`` naming the entry."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .checks import COUNTERS

__all__ = ["check_param_state"]


def _tensor_entry(st: dict[str, Any], key: str, shape: tuple[int, ...], where: str) -> None:
    v = st[key]
    if not isinstance(v, Tensor) or not v.is_floating_point():
        raise ValueError(f"{where}[{key!r}]: expected a floating tensor, got {type(v).__name__}")
    if tuple(v.shape) != shape:
        raise ValueError(f"{where}[{key!r}]: expected shape {shape}, got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{where}[{key!r}]: contains NaN or Inf")
    if key in ("eig_v", "exp_avg_sq") and bool((v < 0).any()):
        raise ValueError(f"{where}[{key!r}]: a second moment must be >= 0")


def _whole(v: float, low: int) -> bool:
    """``v`` a finite integer ``>= low``."""
    return math.isfinite(v) and v >= low and float(v).is_integer()


def check_param_state(
    st: dict[str, Any], shape: tuple[int, ...], where: str, kron: tuple[int, int] | None
) -> None:
    """Raise ``ValueError`` unless the non-factor state of a parameter of ``shape`` is sound:
    a finite integer ``step >= 1``; finite buffers of the parameter's shape (second moments
    ``>= 0``); the kept GOP sums (``_check_gop_sums``; ``kron``: the parameter's Kronecker
    shape ``(a, b)``, ``None`` for the diagonal scheme); counters non-negative ints. (The
    factors are checked as manifold points.)"""
    if not st:
        return
    if "step" not in st:
        raise ValueError(f"{where}: has state but no 'step'")
    step = st["step"]
    step = step.item() if isinstance(step, Tensor) and step.numel() == 1 else step
    if not (isinstance(step, (int, float)) and not isinstance(step, bool) and _whole(step, 1)):
        raise ValueError(f"{where}['step']: expected a finite integer >= 1, got {st['step']!r}")
    if "momentum_buffer" not in st:
        raise ValueError(f"{where}: has state but no 'momentum_buffer'")
    for key in ("momentum_buffer", "eig_v", "exp_avg_sq"):
        if key in st:
            _tensor_entry(st, key, shape, where)
    _check_gop_sums(st, kron, step, where)
    for key in COUNTERS:
        v = st.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{where}[{key!r}]: expected an int >= 0, got {v!r}")


#: The state entries of ``accumulate_gop`` (``optim.gop_sums``).
_GOP_KEYS = ("gop_W_L", "gop_W_R", "gop_count")


def _check_gop_sums(
    st: dict[str, Any], kron: tuple[int, int] | None, step: float, where: str
) -> None:
    """The kept GOP sums of a saved state (``optim.gop_sums``): all of ``_GOP_KEYS`` or none,
    only for a Kronecker parameter (``kron = (a, b)``); ``gop_W_L`` (a, a) and ``gop_W_R``
    (b, b) finite, with a diagonal ``>= 0`` (means of ``Z D^-1 Z^T`` with ``D > 0``); a count
    that is an integer in ``[0, step - 1]`` (step 1 is a curvature step, which resets it),
    0 only with zero sums.
    The step reads them as they are: a (1, 1) or (a,) sum would broadcast silently."""
    present = [key for key in _GOP_KEYS if key in st]
    if not present:
        return
    if len(present) < len(_GOP_KEYS):
        missing = [key for key in _GOP_KEYS if key not in st]
        raise ValueError(f"{where}: has {present} but not {missing}, which come with them")
    if kron is None:
        raise ValueError(f"{where}['gop_W_L']: kept GOP sums, but the parameter is diagonal")
    for key, n in zip(_GOP_KEYS[:2], kron, strict=True):
        _tensor_entry(st, key, (n, n), where)
        if bool((st[key].diagonal() < 0).any()):
            raise ValueError(f"{where}[{key!r}]: a sum of squares must have a diagonal >= 0")
    n = st["gop_count"]
    n = n.item() if isinstance(n, Tensor) and n.numel() == 1 else n
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not _whole(n, 0) or n >= step:
        raise ValueError(
            f"{where}['gop_count']: expected an integer in [0, step - 1 = {step - 1:g}], "
            f"got {st['gop_count']!r}"
        )
    if n == 0 and any(bool(st[key].any()) for key in _GOP_KEYS[:2]):
        raise ValueError(f"{where}['gop_count']: 0, but the kept GOP sums are not zero")
