"""Where one torch thread stops being the better choice for ``spd.minimize`` (issue 16): the
measurement behind ``manifold_spectral._threads.SMALL_MATRIX``.

For each size n, ``spd.minimize(LogDet(Q), "spectral", lr=0.05, steps=STEPS)`` (``Q`` from
``linalg.random_spd``, condition number 10, float64) runs with ``threads=1`` and with
``threads=os.cpu_count()`` (torch's default), interleaved, ``ROUNDS`` times each; the median
time per iteration (``history["time"] / nit``: the update steps, monitoring excluded) and
their ratio are reported with the load average at the start (the other processes on the
machine are what make extra threads stall). The table goes into docs/spd.md between the
``spd-threads`` markers.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_spd_threads.py [--sizes ...] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral._threads import SMALL_MATRIX
from manifold_spectral.linalg import random_spd
from manifold_spectral.solvers import spd

DOCS = Path(__file__).resolve().parents[1] / "docs" / "spd.md"
START, END = "<!-- spd-threads:start -->", "<!-- spd-threads:end -->"
STEPS, ROUNDS = 20, 3


def ms_per_iteration(problem: spd.LogDet, threads: int) -> float:
    res = spd.minimize(problem, "spectral", lr=0.05, steps=STEPS, threads=threads)
    return 1e3 * float(res.history["time"][-1]) / res.nit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 64, 128, 256, 384, 512])
    p.add_argument("--no-write", action="store_true", help="print only (docs unchanged)")
    args = p.parse_args(argv)
    many = os.cpu_count() or 1
    load = os.getloadavg()[0]
    rows = []
    for n in args.sizes:
        problem = spd.LogDet(random_spd(n, 1.0, torch.Generator().manual_seed(n)))
        times: dict[int, list[float]] = {1: [], many: []}
        for _ in range(ROUNDS):
            for t in (1, many):
                times[t].append(ms_per_iteration(problem, t))
        one, all_ = (statistics.median(times[t]) for t in (1, many))
        rows.append(f"| {n} | {one:.2f} | {all_:.2f} | {all_ / one:.2f} |")
        print(rows[-1], flush=True)
    block = (
        f"Measured {datetime.date.today().isoformat()} by `benchmarks/bench_spd_threads.py` on "
        f"{machine()}, torch {torch.__version__}, load average {load:.1f} at the start: "
        f"`spd.minimize(LogDet(Q), 'spectral')`, ms per iteration (median of {ROUNDS} runs of "
        f"{STEPS} iterations), one thread against {many} (torch's default here). "
        f"`threads='auto'` uses one thread up to n = {SMALL_MATRIX}.\n\n"
        f"| n | 1 thread | {many} threads | ratio |\n|---:|---:|---:|---:|\n" + "\n".join(rows)
    )
    print(block)
    if not args.no_write:
        replace_between(DOCS, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
