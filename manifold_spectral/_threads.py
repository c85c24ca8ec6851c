"""Torch's intra-op thread count, set for a block and restored afterwards.

Torch's default is one thread per core. On small matrices the parallel regions cost more
than they save, and on a loaded machine every region waits for a busy core: the README's
``spd.minimize`` snippet (n = 20) took 29.8 s with the default threads under load against
0.09 s with one. ``benchmarks/bench_spd_threads.py`` measures the crossover that
``SMALL_MATRIX`` encodes (see ``docs/spd.md``).

``torch.set_num_threads`` is process-wide: a block here changes the count for every thread of
the process while it runs (as torch's own setting does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["SMALL_MATRIX", "torch_threads", "small_problem_threads"]

#: Largest matrix size run with one intra-op thread by ``small_problem_threads``: up to here a
#: step of ``spd.minimize`` is not faster with two threads on an idle machine, and much slower
#: on a loaded one (``benchmarks/bench_spd_threads.py``).
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
