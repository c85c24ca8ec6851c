"""Torch's intra-op thread count, set for a block and restored afterwards.

Torch's default is one thread per core. On small matrices the parallel regions cost more
than they save, and on a loaded machine every region waits for a busy core: the README's
``spd.minimize`` snippet (n = 20) took 29.8 s with the default threads under load against
0.09 s with one (issue 16). ``benchmarks/bench_spd_threads.py`` measures one thread against torch's
default per size (see ``docs/spd.md``, "Threads", and ``SMALL_MATRIX``).

``torch.set_num_threads`` is process-wide: a block here changes the count for every thread of
the process while it runs (as torch's own setting does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["SMALL_MATRIX", "torch_threads", "small_problem_threads"]

#: Largest matrix size run with one intra-op thread by ``small_problem_threads``. Not a
#: measured crossover: a parallel region of a small product waits for every core, which on
#: a loaded machine can cost more than the product, so the automatic limit keeps to small
#: problems and leaves larger ones to the caller's setting, where an idle multi-core machine
#: can gain from threads (``benchmarks/bench_spd_threads.py`` measures one thread against
#: torch's default per size; docs/spd.md, "Threads").
SMALL_MATRIX = 256


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Run the block with ``num`` torch intra-op threads, restoring the caller's count on exit
    (also when the block raises); ``None`` leaves the count unchanged."""
    if num is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def small_problem_threads(n: int, device: Any = None) -> contextlib.AbstractContextManager:
    """One intra-op thread for an ``n x n`` problem on the CPU with ``n <= SMALL_MATRIX``
    (``torch_threads(1)``); otherwise (larger matrices, or an accelerator) a no-op."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    return torch_threads(1) if on_cpu and n <= SMALL_MATRIX else contextlib.nullcontext()
