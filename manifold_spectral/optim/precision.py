"""The step computes in its state's dtype, whatever autocast region it is called in.

``torch.autocast`` casts the inputs of matrix products to bfloat16 or float16 on every
device type it is enabled for, also inside an optimizer: a training loop that calls
``opt.step()`` within its ``with torch.autocast(...)`` block would run the curvature step's
rotations, Cayley maps and eigenbasis products at 8 bits of mantissa over a float32 state,
which moves the learned basis by bfloat16 rounding and can make the curvature step leave
the manifold (a skipped step). Elementwise optimizers (SGD, AdamW) are unaffected, as autocast
casts no elementwise op, so a user swapping one in expects the same results inside the
block as outside it. A ``state_dtype=torch.bfloat16`` already computes in bfloat16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

__all__ = ["autocast_off"]


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (torch < 2.4 asks per device kind)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return device_type == "cuda" and bool(torch.is_autocast_enabled())


def autocast_off(device_types: Iterable[str]) -> contextlib.ExitStack:
    """A context that switches autocast off for each of ``device_types`` where it is on
    (the module docstring says why), and restores the caller's regions on exit."""
    stack = contextlib.ExitStack()
    for device_type in sorted(set(device_types)):
        if _autocast_enabled(device_type):
            stack.enter_context(torch.autocast(device_type, enabled=False))
    return stack
