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
from collections.abc import Iterable, Iterator

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


@contextlib.contextmanager
def _ieee_float32_matmuls() -> Iterator[None]:
    """float32 products in float32 for the block (not TF32 or bfloat16), the caller's
    setting restored on exit; nothing is set where it already is (the default)."""
    mkldnn = getattr(torch.backends, "mkldnn", None)
    backends = [torch.backends.cuda.matmul, *([mkldnn.matmul] if hasattr(mkldnn, "matmul") else [])]
    backends = [b for b in backends if hasattr(b, "fp32_precision")]
    if not backends:  # torch < 2.9: the one legacy switch
        previous = torch.get_float32_matmul_precision()
        if previous != "highest":
            torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            if previous != "highest":
                torch.set_float32_matmul_precision(previous)
        return
    generic = getattr(torch.backends, "fp32_precision", "none")  # what "none" defers to
    lowered = []
    for b in backends:
        if (generic if b.fp32_precision == "none" else b.fp32_precision) not in ("none", "ieee"):
            lowered.append((b, b.fp32_precision))
    for b, _ in lowered:
        b.fp32_precision = "ieee"
    try:
        yield
    finally:
        for b, previous in lowered:
            b.fp32_precision = previous


@contextlib.contextmanager
def state_precision(device_types: Iterable[str]) -> Iterator[None]:
    """Matrix products in their operands' dtype for the block: autocast off for each of
    ``device_types`` (read only when autocast is on somewhere) where it is on, float32
    products in float32 (the module docstring says why); the caller's settings are restored
    on exit."""
    # Reading the parameters' device types costs more than the rest of this block: ask
    # first whether autocast is on at all (a private query; without it, read them).
    any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)
    with contextlib.ExitStack() as stack:
        for device_type in sorted(set(device_types)) if any_autocast() else ():
            if _autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        stack.enter_context(_ieee_float32_matmuls())
        yield
