"""BBOB (COCO) benchmark: spectral NES against CMA-ES (pycma), with and without restarts.

Protocol (issue 14): the noiseless ``bbob`` suite of ``cocoex`` (pip name
``coco-experiment``), functions f1-f24 in D = 10 and f1, 2, 8, 10, 11, 12, 14 in D = 20,
instances 1-5; every run starts at ``x0 ~ U[-4, 4]^D`` (each restart draws a new one; the same
stream of starts for every method), ``sigma0 = 2``, budget ``2e4 D`` evaluations, target
``f - f_opt < 1e-8``. Methods, all in the same run:

* ``nes``: ``nes.minimize`` (spectral NES, defaults), no restarts;
* ``nes-ipop``: the same with ``restarts=9`` (IPOP, population doubled at each restart);
* ``cma``: ``cma.fmin2(..., restarts=0)``; ``cma-ipop``: ``cma.fmin2(..., restarts=9,
  bipop=False)`` (IPOP-CMA-ES, the anchor).

Every evaluation goes through one counter that stops the run at the budget and records the
first evaluation at which ``f - f_opt`` fell below each of COCO's 51 targets
``10^{2, 1.8, ..., -8}``. ERT of a (function, D) = evaluations of all its runs (each until
the final target or its end) / successful runs. The ECDF is COCO's picture: the fraction of
(run, target) pairs reached versus evaluations / D.

Outputs: ``--out`` (default ``benchmarks/bbob/``) gets ``runs.csv`` (one row per run),
``ecdf.csv`` and ``ecdf.png``; the tables and the summary go into benchmarks/README.md between
the ``bbob`` markers (``--no-write``: print only). ``--timing`` adds ask + tell time per
generation against pycma at D = 10, 20, 40, 100 (``bench_nes.time_per_generation``).

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_bbob.py [--dims 10] [--functions 1 2 13]
      [--instances 1 2 3] [--methods nes nes-ipop cma cma-ipop] [--jobs 1] [--timing]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- bbob:start -->", "<!-- bbob:end -->"
OUT = Path(__file__).resolve().parent / "bbob"
TARGETS = 10.0 ** np.linspace(2, -8, 51)
FINAL = 1e-8
METHODS = {  # name -> (label, restarts)
    "nes": ("spectral NES", 0),
    "nes-ipop": ("spectral NES, IPOP", 9),
    "cma": ("CMA-ES", 0),
    "cma-ipop": ("IPOP-CMA-ES", 9),
}
PAIRS = (("nes", "cma"), ("nes-ipop", "cma-ipop"))
D20 = (1, 2, 8, 10, 11, 12, 14)


class Stop(Exception):
    """Raised by the counter at the budget or after the final target."""


class Counter:
    """Counts evaluations of one BBOB problem, records first hits of every target."""

    def __init__(self, problem, fopt: float, budget: int) -> None:
        self.problem, self.fopt, self.budget = problem, fopt, budget
        self.evals = 0
        self.best = math.inf
        self.hits = np.full(TARGETS.size, -1, dtype=np.int64)

    def __call__(self, x) -> float:
        if self.evals >= self.budget or self.hits[-1] >= 0:
            raise Stop
        self.evals += 1
        delta = float(self.problem(np.asarray(x, dtype=float))) - self.fopt
        if delta < self.best:
            self.best = delta
            self.hits[(self.hits < 0) & (delta < TARGETS)] = self.evals
        return delta + self.fopt

    def batch(self, X) -> np.ndarray:
        return np.array([self(x) for x in X])


@contextlib.contextmanager
def _in_tmpdir() -> Iterator[None]:
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(old)


def _problem(fid: int, dim: int, iid: int):
    import cocoex

    suite = cocoex.Suite(
        "bbob", "", f"function_indices:{fid} dimensions:{dim} instance_indices:{iid}"
    )
    problem = suite[0]
    with _in_tmpdir():  # f_opt = f(x_opt); cocoex writes x_opt to a file in the cwd
        problem._best_parameter("print")
        xopt = np.loadtxt("._bbob_problem_best_parameter.txt")
    fopt = float(problem(xopt))
    return suite, problem, fopt


def run_one(job: tuple[str, int, int, int, float]) -> dict:
    """One run of ``method`` on (fid, dim, iid); returns its row of runs.csv."""
    method, fid, dim, iid, budget_mult = job
    import torch

    torch.set_num_threads(1)
    suite, problem, fopt = _problem(fid, dim, iid)
    budget = int(budget_mult * dim)
    counter = Counter(problem, fopt, budget)
    rng = np.random.default_rng([fid, dim, iid])  # the same starts for every method

    def x0() -> np.ndarray:
        return rng.uniform(-4.0, 4.0, dim)

    restarts = METHODS[method][1]
    seed = 1000 * fid + 10 * iid + dim
    start = time.perf_counter()
    try:
        if method.startswith("nes"):
            from manifold_spectral.solvers import nes

            nes.minimize(
                counter.batch, x0 if restarts else x0(), 2.0, max_evals=budget,
                target=fopt + FINAL, seed=seed, vectorized=True, restarts=restarts,
            )  # fmt: skip
        else:
            import cma

            opts = {"maxfevals": budget, "ftarget": fopt + FINAL, "seed": seed, "verbose": -9}
            with _in_tmpdir():
                cma.fmin2(counter, x0, 2.0, {**opts, "verb_log": 0},
                                  restarts=restarts, bipop=False)  # fmt: skip
    except Stop:
        pass
    seconds = time.perf_counter() - start
    problem.free()
    suite.free()
    hit = int(counter.hits[-1])
    return {
        "method": method, "function": fid, "dim": dim, "instance": iid,
        "evals": hit if hit >= 0 else counter.evals, "success": int(hit >= 0),
        "best": counter.best, "seconds": round(seconds, 3),
        "hits": " ".join(str(int(h)) for h in counter.hits),
    }  # fmt: skip


def ert(rows: list[dict]) -> tuple[int, float]:
    """(successes, ERT) of the runs of one (method, function, D)."""
    succ = sum(r["success"] for r in rows)
    return succ, (sum(r["evals"] for r in rows) / succ if succ else math.inf)


def _cells(rows: list[dict]) -> dict[tuple[str, int, int], list[dict]]:
    out: dict[tuple[str, int, int], list[dict]] = {}
    for r in rows:
        out.setdefault((r["method"], r["function"], r["dim"]), []).append(r)
    return out


def tables(rows: list[dict], methods: list[str]) -> str:
    """Per (function, D) successes and ERT, ERT ratios, and a summary per pair of methods."""
    cells = _cells(rows)
    keys = sorted({(f, d) for _, f, d in cells}, key=lambda k: (k[1], k[0]))
    parts = []
    for a, b in PAIRS:
        if a not in methods or b not in methods:
            continue
        la, lb = METHODS[a][0], METHODS[b][0]
        lines = [
            f"**{la} vs {lb}** (ERT in evaluations; ratio {a} / {b}, < 1: NES needs fewer):",
            "",
            f"| f | D | {la} solved | {la} ERT | {lb} solved | {lb} ERT | ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        both = better = within = 0
        worse, solved = [], {a: 0, b: 0}
        for f, d in keys:
            sa, ea = ert(cells[(a, f, d)])
            sb, eb = ert(cells[(b, f, d)])
            runs = len(cells[(a, f, d)])
            solved[a] += sa
            solved[b] += sb
            ratio = ea / eb if sa and sb else math.nan
            if sa and sb:
                both += 1
                better += ratio < 1
                within += ratio <= 1.2
                if ratio > 1.2:
                    worse.append(f"f{f} D={d} {ratio:.2f}")
            cell = f"{ratio:.2f}" if sa and sb else "-"
            fa = f"{ea:.0f}" if sa else "-"
            fb = f"{eb:.0f}" if sb else "-"
            lines.append(f"| {f} | {d} | {sa}/{runs} | {fa} | {sb}/{runs} | {fb} | {cell} |")
        total = sum(len(v) for (m, _, _), v in cells.items() if m == a)
        lines += [
            "",
            f"Triples solved: {la} {solved[a]}/{total}, {lb} {solved[b]}/{total}. Both solve "
            f"{both} of {len(keys)} (function, D) pairs; {la} is within 1.2x on {within}, "
            f"better on {better}; worse than 1.2x: {', '.join(worse) or 'none'}.",
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def ecdf(rows: list[dict], methods: list[str], out: Path, budget_mult: float) -> None:
    """COCO's ECDF of (run, target) pairs reached vs evaluations / D: CSV and PNG per D."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = np.unique(np.round(np.geomspace(1, budget_mult, 60), 3))
    dims = sorted({r["dim"] for r in rows})
    table, header = [], ["evals_per_dim"]
    fig = Figure(figsize=(4.2 * len(dims), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(dims), squeeze=False)[0]
    for ax, d in zip(axes, dims, strict=True):
        for m in methods:
            runs = [r for r in rows if r["method"] == m and r["dim"] == d]
            if not runs:
                continue
            hits = np.array([[int(h) for h in r["hits"].split()] for r in runs]).ravel()
            hits = np.where(hits < 0, np.inf, hits / d)
            frac = (hits[None, :] <= grid[:, None]).mean(axis=1)
            header.append(f"{m}_D{d}")
            table.append(frac)
            ax.step(grid, frac, where="post", label=METHODS[m][0])
        nf = len({r["function"] for r in rows if r["dim"] == d})
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_title(f"bbob, {nf} functions, D = {d}", fontsize=10)
        ax.set_xlabel("evaluations / D")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of (run, target) pairs")
    axes[0].legend(fontsize=8)
    fig.savefig(out / "ecdf.png", dpi=110)
    with open(out / "ecdf.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, g in enumerate(grid):
            w.writerow([g] + [f"{col[i]:.4f}" for col in table])


def timing(dims: list[int]) -> str:
    """Ask + tell ms per generation, spectral NES vs pycma, default populations."""
    from bench_nes import time_per_generation

    rows = ["| D | spectral NES (ms) | CMA-ES (ms) | NES / CMA-ES |", "|---:|---:|---:|---:|"]
    for d in dims:
        gens = max(200, 20_000 // d)
        t = {m: min(time_per_generation(d, m, gens) for _ in range(3)) for m in ("spectral", "cma")}
        rows.append(
            f"| {d} | {1e3 * t['spectral']:.3f} | {1e3 * t['cma']:.3f} "
            f"| {t['spectral'] / t['cma']:.2f} |"
        )
        print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[10, 20])
    p.add_argument(
        "--functions",
        type=int,
        nargs="+",
        default=list(range(1, 25)),
        help="f ids (D = 20 runs only those of the protocol: 1 2 8 10 11 12 14)",
    )
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--budget", type=float, default=2e4, help="evaluations / D (2e4)")
    p.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--timing", action="store_true", help="add ask+tell ms/gen vs pycma")
    p.add_argument("--no-write", action="store_true", help="print only (README unchanged)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    jobs = [
        (m, f, d, i, args.budget)
        for d in args.dims
        for f in args.functions
        if d == 10 or d != 20 or f in D20
        for i in args.instances
        for m in args.methods
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(args.out / "runs.csv", "w", newline="") as fh:
        writer = None
        with Pool(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
            results = pool.imap(run_one, jobs) if pool else map(run_one, jobs)
            for row in results:
                rows.append(row)
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                fh.flush()
                print(f"{row['method']:>9} f{row['function']:<2} D={row['dim']} "
                      f"i{row['instance']}: {row['success']} {row['evals']:>7} "
                      f"best {row['best']:.2e} {row['seconds']:.1f}s", flush=True)  # fmt: skip
    ecdf(rows, args.methods, args.out, args.budget)
    text = tables(rows, args.methods)
    timing_text = timing([10, 20, 40, 100]) if args.timing else ""
    elapsed = time.perf_counter() - start
    import cma
    import cocoex
    import torch

    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine()}; torch "
        f"{torch.__version__} (1 thread), cma {cma.__version__}, cocoex {cocoex.__version__}; "
        f"load average {load:.1f} at start; {args.jobs} process(es); whole run {elapsed:.0f} s."
        f" Functions {' '.join(map(str, args.functions))}; D {' '.join(map(str, args.dims))};"
        f" instances {' '.join(map(str, args.instances))}; budget {args.budget:g} D."
    )
    block = f"{header}\n\n{text}\n\n![BBOB ECDF](bbob/ecdf.png)"
    if timing_text:
        block += f"\n\nTime per generation (ask + tell, evaluations excluded):\n\n{timing_text}"
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
