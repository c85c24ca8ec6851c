"""Subnormal ("denormal") floating-point numbers flushed to zero for a block of CPU work.

A CPU multiplies or adds a subnormal operand, or produces a subnormal result, in a slow
microcode path: a matrix product whose partial products are subnormal runs at a small
fraction of the GEMM rate on x86 (``benchmarks/bench_optim_step.py`` measures it). Training
data produces such entries: the output-layer gradient ``(softmax - onehot) h`` of a token the data
never contains is ``p_i h`` with ``p_i`` decaying towards ``exp(-100)``, the rotated
gradient ``B^T G B`` and its outer products square them, the Neumann series multiplies
small rotation angles four times over, and an unused row's momentum decays through the
subnormal range for hundreds of steps.

None of these values can change a result that the step rounds: a subnormal number is
below the rounding error of any sum it enters with an entry of magnitude ``2^-126 / eps``
(float32: ``2^-103``) or more, and every quantity the step divides by is damped far above
that. With the flush-to-zero and denormals-are-zero modes
(``torch.set_flush_denormal``; the x86 MXCSR bits FTZ and DAZ) a subnormal operand reads as
zero and a subnormal result is written as zero, at full speed. A block of normal numbers
gives the same bits in either mode.

The mode is per thread, so the block sets it for the calling thread only: torch's intra-op
worker threads (``torch.set_num_threads(k)``, ``k > 1``) keep theirs. It is restored on
exit to what it was (read by a multiplication that the mode changes: ``2^-1074 * 1`` is
``0.0`` under DAZ/FTZ), so a caller that set it keeps it. Where torch cannot set it (not
an x86 CPU), the block runs unchanged. Accelerator kernels are unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["flush_denormals", "flushing"]

# Read at run time (module globals, not literals), so the multiplication below is done by
# the CPU under the current mode instead of folded by the compiler.
_SMALLEST = 5e-324  # 2^-1074, the smallest subnormal float64
_ONE = 1.0


def flushing() -> bool:
    """Whether the calling thread flushes subnormal numbers to zero now (DAZ/FTZ set)."""
    return _SMALLEST * _ONE == 0.0


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Run the block with subnormal numbers flushed to zero on the calling thread (module
    docstring), restoring the caller's mode on exit, also when the block raises."""
    if flushing() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
