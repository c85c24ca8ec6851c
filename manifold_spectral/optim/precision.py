"""The step computes in its state's dtype, whatever autocast region or float32 matmul
precision the caller set.

Two global switches lower the precision of matrix products, also inside an optimizer:
``torch.autocast`` casts their inputs to bfloat16 or float16 on each device type it is on,
and ``torch.set_float32_matmul_precision("high" | "medium")`` (or the per-backend
``torch.backends.{cuda,mkldnn}.matmul.fp32_precision``) lets float32 products run in
TF32 or bfloat16 (on GPUs, and on CPUs with AMX or AVX512-BF16). Either would run the
curvature step's rotations, Cayley maps and eigenbasis products at 8 to 10 bits of mantissa
over a float32 state: the learned basis moves by that rounding and the curvature step can
leave the manifold (a skipped step). Elementwise optimizers (SGD, AdamW) are unaffected by
both, so a user swapping one in expects the same results whatever the switches say; they
are meant for the model's products. A ``state_dtype=torch.bfloat16`` already computes in
bfloat16. The matmul precision is process-wide, not per thread: during a step, another
thread's float32 products also run at full precision.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["state_precision"]


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (torch < 2.4 asks per device kind; a
    device type without autocast, such as ``meta``, has it off)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except RuntimeError:  # "unknown device type for autocast"
        return False
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return device_type == "cuda" and bool(torch.is_autocast_enabled())


@functools.cache
def _matmul_backends() -> tuple[Any, ...]:
    """The backends whose ``fp32_precision`` lowers float32 products (torch >= 2.9; empty
    before): module-level objects, looked up once instead of on every step."""
    mkldnn = getattr(torch.backends, "mkldnn", None)
    backends = [torch.backends.cuda.matmul, *([mkldnn.matmul] if hasattr(mkldnn, "matmul") else [])]
    return tuple(b for b in backends if hasattr(b, "fp32_precision"))


def _lowered() -> list[tuple[Any, str]]:
    """``(backend, its setting)`` of each backend whose float32 products are lowered now."""
    generic = getattr(torch.backends, "fp32_precision", "none")  # what "none" defers to
    return [
        (b, b.fp32_precision)
        for b in _matmul_backends()
        if (generic if b.fp32_precision == "none" else b.fp32_precision) not in ("none", "ieee")
    ]


@contextlib.contextmanager
def _ieee_float32_matmuls() -> Iterator[None]:
    """float32 products in float32 for the block (not TF32 or bfloat16), the caller's
    setting restored on exit; nothing is set where it already is (the default)."""
    if not _matmul_backends():  # torch < 2.9: the one legacy switch
        previous = torch.get_float32_matmul_precision()
        if previous != "highest":
            torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            if previous != "highest":
                torch.set_float32_matmul_precision(previous)
        return
    lowered = _lowered()
    for b, _ in lowered:
        b.fp32_precision = "ieee"
    try:
        yield
    finally:
        for b, previous in lowered:
            b.fp32_precision = previous


def state_precision(device_types: Iterable[str]) -> contextlib.AbstractContextManager[Any]:
    """Matrix products in their operands' dtype for the block: autocast off for each of
    ``device_types`` (read only when autocast is on somewhere) where it is on, float32
    products in float32 (the module docstring says why); the caller's settings are restored
    on exit. Enter it at once: the settings are read when it is made, and where nothing is
    lowered (the default) it is a ``nullcontext``, which a step enters at no cost."""
    # Reading the parameters' device types costs more than the rest of this block: ask
    # first whether autocast is on at all (a private query; without it, read them).
    any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)()
    if not any_autocast and _matmul_backends() and not _lowered():
        return contextlib.nullcontext()
    return _state_precision(device_types, any_autocast)


@contextlib.contextmanager
def _state_precision(device_types: Iterable[str], any_autocast: bool) -> Iterator[None]:
    """``state_precision`` where something may be lowered."""
    with contextlib.ExitStack() as stack:
        for device_type in sorted(set(device_types)) if any_autocast else ():
            if _autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        stack.enter_context(_ieee_float32_matmuls())
        yield
