"""Time one curvature update + one root application: spectral GOP step vs default + eigh.

For n in {100, 250, 500, 1000} and float32/float64 on the CPU, one "step" is

* spectral, exact / Neumann Cayley: ``x = Gaussian.precision_step(x, GOP(g))`` then
  ``u = SpectralSPD.apply_power(x, g, -1/2)`` (the learned factors give S^(-1/2) g directly);
* baseline (Shampoo/SOAP style): ``S <- (1 - beta2) S + beta2 g g^T``,
  ``evals, V = torch.linalg.eigh(S)``, ``u = V (evals^(-1/2) * (V^T g))``.

Every step starts from the same state (the same point x, the same dense S = B Diag(d) B^T), so
the repeats are identical and the Neumann drift does not accumulate. The three methods are
measured in one run, interleaved (round-robin, rotating the order every repeat); each cell is
the median over the repeats, and the ratios spectral / baseline (< 1: spectral is faster)
come from the same run. The extra column "checks" is the share of the exact spectral step
spent in point checks: ``precision_step`` probes its input and its result with
``check_point(fast=True)`` (an O(n^2) probe ``B^T (B v) - v`` plus host syncs). The table
is printed and written into benchmarks/README.md between the ``results`` markers, with the
machine, the torch version and the thread count.

Run:  python benchmarks/bench_gop_step.py [--threads 1 2] [--sizes 100 250] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from manifold_spectral import GOP, Gaussian, SpectralSPD

BETA2 = 0.01
#: Repeats per size (fewer at n = 1000 keep a run under ~3 minutes on 2 cores).
REPEATS = {100: 40, 250: 20, 500: 10, 1000: 5}
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def make_methods(n: int, dtype: torch.dtype, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The three steps as closures over a shared starting state."""
    M = SpectralSPD(n, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    x = M.random(gen, log_scale=0.5)  # distinct eigenvalues, Haar-random eigenbasis
    # ||g||^2 ~ 1 ~ ||S||_2, so beta2 g g^T is a small step and both schemes agree to O(beta2^2).
    g = (torch.randn(n, generator=gen, dtype=torch.float64) / n**0.5).to(dtype)
    S = M.to_matrix(x)
    exact = Gaussian(M, beta2=BETA2, gamma=1.0, root=2, cayley="exact")
    neumann = Gaussian(M, beta2=BETA2, gamma=1.0, root=2, cayley="neumann")

    def spectral(gauss: Gaussian) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            x_new = gauss.precision_step(x, GOP(g))
            return M.apply_power(x_new, g, -0.5)

        return step

    def baseline() -> torch.Tensor:
        S_new = (1.0 - BETA2) * S + BETA2 * torch.outer(g, g)
        evals, V = torch.linalg.eigh(S_new)
        return V @ (evals.rsqrt() * (V.T @ g))

    def checks() -> None:
        M.validate_point(x, fast=True)
        M.validate_point(x, fast=True)

    return {
        "spectral_exact": spectral(exact),
        "spectral_neumann": spectral(neumann),
        "baseline": baseline,
        "checks": checks,
    }


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def bench(n: int, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Median seconds per step of each method, measured interleaved."""
    methods = make_methods(n, dtype)
    names = list(methods)
    outputs = {name: fn() for name, fn in methods.items()}  # warm-up, and results to compare
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    out = {name: statistics.median(ts) for name, ts in times.items()}
    out["diff_exact"] = rel_diff(outputs["spectral_exact"], outputs["baseline"])
    out["diff_neumann"] = rel_diff(outputs["spectral_neumann"], outputs["baseline"])
    return out


def fmt_ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def table(rows: list[tuple[int, str, int, dict[str, float]]]) -> str:
    lines = [
        "| threads | dtype | n | baseline: eigh (ms) | spectral exact (ms) "
        "| spectral Neumann (ms) | exact / baseline | Neumann / baseline | checks "
        "| root diff. exact / Neumann |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for threads, dname, n, r in rows:
        lines.append(
            f"| {threads} | {dname} | {n} | {fmt_ms(r['baseline'])} | "
            f"{fmt_ms(r['spectral_exact'])} | "
            f"{fmt_ms(r['spectral_neumann'])} | {r['spectral_exact'] / r['baseline']:.2f} | "
            f"{r['spectral_neumann'] / r['baseline']:.2f} | "
            f"{100 * r['checks'] / r['spectral_exact']:.0f}% | "
            f"{r['diff_exact']:.1e} / {r['diff_neumann']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--threads", type=int, nargs="+", default=None, help="torch thread counts to measure"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(REPEATS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeat-scale", type=float, default=1.0, help="scale the repeats")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    thread_counts = args.threads or [default_threads]

    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for dname in args.dtypes:
            dtype = getattr(torch, dname)
            for n in args.sizes:
                repeats = max(3, round(args.repeat_scale * REPEATS.get(n, 5)))
                rows.append((threads, dname, n, bench(n, dtype, repeats)))
                print(
                    f"  {threads} threads, {dname} n={n}: {repeats} repeats, "
                    f"{time.perf_counter() - t_start:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    elapsed = time.perf_counter() - t_start

    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine()}; "
        f"torch {torch.__version__}, torch threads {', '.join(map(str, thread_counts))} "
        f"(torch default here: {default_threads}); "
        f"load average {load:.1f} at start; whole run {elapsed:.0f} s. "
        "Median time per step; ratios < 1 mean the spectral step is faster."
    )
    block = f"{header}\n\n{table(rows)}"
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
