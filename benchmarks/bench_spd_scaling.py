"""Scaling of the SPD solvers (paper Sec. 4.2): time per iteration and iterations to
``f - f* < 1e-6``, spectral vs geoopt retraction RGD vs Cholesky RGD, d = 60, 250, 1000.

Problems: ``solvers.spd.make_problems(d)`` (seed 0, float64): ``Q`` with condition number
10, an independent random start ``S0`` (condition number 10), metric nearness with
``N = 10 d`` samples and batches of ``d // 3``; log-det on the same ``Q``. Every method runs
through ``spd.minimize`` from the same start with the same ``lr`` (Fisher-Rao convention;
geoopt at ``2 lr``): metric nearness ``lr = 0.01``, log-det ``lr = 0.05``.

Methods: ``spectral`` (``spd.minimize``'s default: exact Cayley, one solve with ``I - N``,
second-order rotation), ``spectral Jacobi`` (``second_order=False``: Jacobi angles only, no
extra product), ``spectral Neumann`` (products only), ``geoopt`` (``RiemannianSGD`` on
``SymmetricPositiveDefinite``) and ``Cholesky`` (``CholeskyRGD``).

* time per iteration: ``history["time"] / nit`` of short ``minimize`` runs (update steps only;
  monitoring is outside the clock), the methods interleaved round-robin with a rotating order;
  the median over the rounds; the ratios to geoopt come from the same run;
* iterations to tolerance: ``minimize(tol=1e-6)``, recorded every iteration. At d = 1000 only
  for log-det (metric nearness needs ~1000 iterations there); Neumann only at d <= 250, capped;
* time to tolerance relative to geoopt: iterations x median time per iteration, over
  geoopt's.

The table is printed and written, with the machine, the torch version and the thread count,
into benchmarks/README.md between the ``spd-scaling`` markers and into docs/spd.md between the
``spd-bench`` markers.

Run:  python benchmarks/bench_spd_scaling.py [--threads 1] [--sizes 60 250 1000] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral import SpectralSPD
from manifold_spectral.solvers import spd
from manifold_spectral.solvers.spd import make_problems

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- spd-scaling:start -->", "<!-- spd-scaling:end -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "spd.md"
DOCS_START, DOCS_END = "<!-- spd-bench:start -->", "<!-- spd-bench:end -->"
TOL = 1e-6
LR = {"nearness": 0.01, "logdet": 0.05}
#: (method, options of spd.minimize) per column.
METHODS = {
    "spectral": ("spectral", {}),
    "spectral Jacobi": ("spectral", {"second_order": False}),
    "spectral Neumann": ("spectral", {"cayley": "neumann"}),
    "geoopt": ("retraction", {}),
    "Cholesky": ("cholesky", {}),
}
#: (rounds, steps per round) of the timing runs.
TIMING = {60: (5, 40), 250: (5, 8), 1000: (5, 3)}
#: Iteration caps of the tolerance runs; Neumann gets its own (it converges much later).
CAP = {"nearness": 4000, "logdet": 1000}
NEUMANN_CAP = 1500


def setup(d: int) -> tuple[dict[str, spd.SPDProblem], dict[str, object]]:
    """The two problems and each method's start (the spectral start factorised once)."""
    problems, S0 = make_problems(d, seed=0, batch_size=max(1, d // 3))
    x0 = SpectralSPD(d, dtype=S0.dtype).from_matrix(S0)
    starts = {name: (x0 if m == "spectral" else S0) for name, (m, _) in METHODS.items()}
    return problems, starts


def time_per_iteration(problem: spd.SPDProblem, starts: dict, lr: float, d: int) -> dict:
    """Median ms per update step of each method, measured interleaved."""
    rounds, steps = TIMING.get(d, (3, 3))
    names = list(METHODS)
    ms: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            method, options = METHODS[name]
            res = spd.minimize(
                problem, method, lr, steps, x0=starts[name], record_every=steps, **options
            )
            ms[name].append(1e3 * float(res.history["time"][-1]) / res.nit)
    return {name: statistics.median(v) for name, v in ms.items()}


def iterations_to_tol(problem: spd.SPDProblem, starts: dict, lr: float, name: str, cap: int):
    method, options = METHODS[name]
    res = spd.minimize(problem, method, lr, cap, x0=starts[name], tol=TOL, **options)
    return res.nit if res.success else f"> {cap}"


def _time_to_tol_ratio(row: dict, name: str) -> str:
    """``its x ms/it`` of ``name`` over geoopt's (``-`` where either did not converge)."""
    its, ms = row["its"], row["ms"]
    if not isinstance(its.get(name), int) or not isinstance(its.get("geoopt"), int):
        return "-"
    return f"{its[name] * ms[name] / (its['geoopt'] * ms['geoopt']):.2f}"


def table(rows: list[dict]) -> str:
    """Two tables: time per iteration (and its ratio to geoopt); iterations to tolerance and
    the time to tolerance (iterations x time per iteration) relative to geoopt's."""
    names = list(METHODS)
    others = [n for n in names if n != "geoopt"]
    lines = [
        "| d | problem | "
        + " | ".join(f"{n} (ms/it)" for n in names)
        + " | "
        + " | ".join(f"{n} / geoopt" for n in others)
        + " |",
        "|---:|---|" + "---:|" * (len(names) + len(others)),
    ]
    for r in rows:
        t = r["ms"]
        lines.append(
            f"| {r['d']} | {r['problem']} | "
            + " | ".join(f"{t[n]:.3g}" if t[n] < 100 else f"{t[n]:.0f}" for n in names)
            + " | "
            + " | ".join(f"{t[n] / t['geoopt']:.2f}" for n in others)
            + " |"
        )
    if not any(r["its"] for r in rows):
        return "\n".join(lines)
    lines += [
        "",
        "| d | problem | iterations to 1e-6: "
        + " / ".join(names)
        + " | time to 1e-6 / geoopt's: "
        + " / ".join(others)
        + " |",
        "|---:|---|---:|---:|",
    ]
    for r in rows:
        if r["its"]:
            lines.append(
                f"| {r['d']} | {r['problem']} | "
                + " / ".join(str(r["its"].get(n, "-")) for n in names)
                + " | "
                + " / ".join(_time_to_tol_ratio(r, n) for n in others)
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[60, 250, 1000])
    parser.add_argument(
        "--no-tol", action="store_true", help="skip the iterations-to-tolerance runs"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="do not update README.md and docs/spd.md"
    )
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for d in args.sizes:
        problems, starts = setup(d)
        for name, problem in problems.items():
            row = {"d": d, "problem": name, "its": {}}
            row["ms"] = time_per_iteration(problem, starts, LR[name], d)
            tol_runs = not args.no_tol and (d <= 250 or name == "logdet")
            for method in METHODS if tol_runs else []:
                if method == "spectral Neumann":
                    if d > 250:
                        continue
                    cap = NEUMANN_CAP
                else:
                    cap = CAP[name]
                row["its"][method] = iterations_to_tol(problem, starts, LR[name], method, cap)
            rows.append(row)
            print(
                f"  d={d} {name}: {time.perf_counter() - t_start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - t_start

    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine()}; torch {torch.__version__}, "
        f"torch threads {args.threads} (torch default here: {default_threads}); load average "
        f"{load:.1f} at start; whole run {elapsed:.0f} s. float64; lr: metric nearness "
        f"{LR['nearness']}, log-det {LR['logdet']} (every method; geoopt at 2 lr). Time per "
        "iteration: median over interleaved rounds, update steps only; ratios < 1 mean faster "
        'than geoopt. Iterations: first iteration with f - f* < 1e-6 ("-": not run).'
    )
    block = f"{header}\n\n{table(rows)}"
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
        replace_between(DOCS, DOCS_START, DOCS_END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
