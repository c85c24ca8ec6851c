"""Spectral NES vs CMA-ES (and xNES): evaluations to a target, and time per generation.

Part 1, evaluations to reach ``f < 1e-8``: sphere, the rotated ellipsoid with condition number
1e6, Rosenbrock, Ackley and Griewank in 20 and 60 dimensions, ``--seeds`` seeds (default 5);
``manifold_spectral.solvers.nes.NES`` with its defaults against ``cma.CMAEvolutionStrategy``
with its defaults (no restarts). Both start from the same ``x0`` (uniform in the function's
search box, ``FUNCTIONS[name].initial(n, seed)``) and ``sigma0``; both stop at the target or
after ``budget = 4000 n`` evaluations; the default populations are the same
(``4 + floor(3 ln n)``). Reported: the median evaluations of the successful runs, the success
rate, and the ratio of the medians NES / CMA-ES (< 1: NES needs fewer).

Part 2, time per generation at n = 60, 200, 500 (one run each, after a warm-up): ``ask`` +
``tell`` of spectral NES, xNES (one matrix exponential per generation), Cholesky NES and
pycma, on the rotated ellipsoid (condition 1e2), function evaluations excluded, torch with
one intra-op thread (``--threads``). pycma updates its eigendecomposition lazily (every few
generations), so its cost per generation is O(n^2 lambda) plus an amortised O(n^3); ours
takes one Cayley solve and one n x n product every generation.

The tables are printed and written into benchmarks/README.md between the ``nes`` markers.

Run:  python benchmarks/bench_nes.py [--seeds 5] [--dims 20 60] [--sizes 60 200 500] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral.solvers.cholesky_nes import CholeskyNES
from manifold_spectral.solvers.functions import FUNCTIONS, RotatedEllipsoid
from manifold_spectral.solvers.nes import NES
from manifold_spectral.solvers.xnes import XNES

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- nes:start -->", "<!-- nes:end -->"
TARGET = 1e-8
PROBLEMS = ("sphere", "rotated-ellipsoid", "rosenbrock", "ackley", "griewank")


def run_nes(name: str, n: int, seed: int, budget: int) -> int | None:
    tf = FUNCTIONS[name]
    x0, sigma0 = tf.initial(n, seed)
    es = NES(x0, sigma0, seed=seed, target=TARGET, max_evals=budget)
    res = es.optimize(tf.make(n), vectorized=True)
    return res.nfev if res.success else None


def run_cma(name: str, n: int, seed: int, budget: int) -> int | None:
    import cma

    tf = FUNCTIONS[name]
    f = tf.make(n)
    x0, sigma0 = tf.initial(n, seed)
    opts = {"seed": seed + 1, "ftarget": TARGET, "maxfevals": budget, "verbose": -9}
    es = cma.CMAEvolutionStrategy(x0, sigma0, opts)
    while not es.stop():
        X = es.ask()
        es.tell(X, np.asarray(f(np.asarray(X)), dtype=float).tolist())
    return es.countevals if es.result.fbest < TARGET else None


def summary(evals: list[int | None]) -> tuple[float | None, str]:
    hits = [e for e in evals if e is not None]
    med = float(np.median(hits)) if hits else None
    return med, f"{len(hits)}/{len(evals)}"


def part_evals(dims: list[int], seeds: int) -> str:
    rows = [
        "| function | n | NES evals (median) | NES success | CMA-ES evals (median) "
        "| CMA-ES success | NES / CMA-ES |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in dims:
        budget = 4000 * n
        for name in PROBLEMS:
            ours = [run_nes(name, n, s, budget) for s in range(seeds)]
            ref = [run_cma(name, n, s, budget) for s in range(seeds)]
            m1, r1 = summary(ours)
            m2, r2 = summary(ref)
            ratio = f"{m1 / m2:.2f}" if m1 and m2 else "-"
            c1 = f"{m1:.0f}" if m1 else "-"
            c2 = f"{m2:.0f}" if m2 else "-"
            rows.append(f"| {name} | {n} | {c1} | {r1} | {c2} | {r2} | {ratio} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def time_per_generation(n: int, method: str, gens: int) -> float:
    """Mean seconds of ``ask`` + ``tell`` per generation (evaluations excluded)."""
    f = RotatedEllipsoid(n, cond=1e2)
    x0 = np.ones(n)
    if method == "cma":
        import cma

        es = cma.CMAEvolutionStrategy(x0, 1.0, {"seed": 1, "verbose": -9})
        busy = 0.0
        for k in range(5 + gens):  # 5 warm-up generations
            t0 = time.perf_counter()
            X = es.ask()
            t1 = time.perf_counter()
            values = np.asarray(f(np.asarray(X)), dtype=float).tolist()
            t2 = time.perf_counter()
            es.tell(X, values)
            if k >= 5:
                busy += (t1 - t0) + (time.perf_counter() - t2)
        return busy / gens
    cls = {"spectral": NES, "xnes": XNES, "cholesky": CholeskyNES}[method]
    es = cls(x0, 1.0, seed=0)
    for k in range(5 + gens):
        if k == 5:
            busy0 = es.result.history["time"][-1]  # seconds in ask/tell so far
        X = es.ask()
        es.tell(X, f(X))
    return (es.result.history["time"][-1] - busy0) / gens


def part_time(sizes: list[int]) -> str:
    rows = [
        "| n | popsize | spectral NES (ms) | xNES (ms) | Cholesky NES (ms) | CMA-ES (ms) "
        "| NES / CMA-ES | NES / xNES |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        gens = max(10, 12_000 // n)
        t = {m: time_per_generation(n, m, gens) for m in ("spectral", "xnes", "cholesky", "cma")}
        lam = 4 + int(np.floor(3 * np.log(n)))
        lam += lam % 2
        rows.append(
            f"| {n} | {lam} | {1e3 * t['spectral']:.3g} | {1e3 * t['xnes']:.3g} "
            f"| {1e3 * t['cholesky']:.3g} | {1e3 * t['cma']:.3g} "
            f"| {t['spectral'] / t['cma']:.2f} | {t['spectral'] / t['xnes']:.2f} |"
        )
        print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell (default 5)")
    parser.add_argument("--dims", type=int, nargs="+", default=[20, 60])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60, 200, 500])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    evals = part_evals(args.dims, args.seeds)
    timing = part_time(args.sizes)
    elapsed = time.perf_counter() - start
    import cma

    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine()}; torch "
        f"{torch.__version__} ({args.threads} thread), cma {cma.__version__}; load average "
        f"{load:.1f} at start; whole run {elapsed:.0f} s."
    )
    block = (
        f"{header}\n\nEvaluations to reach f < {TARGET:g} ({args.seeds} seeds, budget "
        f"4000 n):\n\n{evals}\n\nTime per generation (ask + tell, evaluations excluded; one "
        f"run per size):\n\n{timing}"
    )
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
