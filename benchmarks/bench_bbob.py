"""BBOB (COCO) benchmark: spectral NES against CMA-ES (pycma), with and without restarts.

Protocol (issue 14): the noiseless ``bbob`` suite of ``cocoex`` (pip name
``coco-experiment``), functions f1-f24 in D = 10 and f1, 2, 8, 10, 11, 12, 14 in D = 20,
instances 1-5; every run starts at ``x0 ~ U[-4, 4]^D`` (each restart draws a new one; the same
stream of starts for every method), ``sigma0 = 2``, budget ``2e4 D`` evaluations, target
``f - f_opt < 1e-8``. Methods, all in the same run:

* ``nes``: ``nes.minimize`` (spectral NES, defaults), no restarts;
* ``nes-ipop``: the same with ``restarts=9`` (IPOP, population doubled at each restart);
* ``nes-bipop``: the same with ``restarts=9, bipop=True`` (BIPOP: the IPOP runs interleaved
  with small-population, small-step runs), compared with ``cma-ipop``;
* ``cma``: ``cma.fmin2(..., restarts=0)``; ``cma-ipop``: ``cma.fmin2(..., restarts=9,
  bipop=False)`` (IPOP-CMA-ES, the anchor).

Every evaluation goes through one counter that stops the run at the budget and records the
first evaluation at which ``f - f_opt`` fell below each of COCO's 51 targets
``10^{2, 1.8, ..., -8}``. ERT of a (function, D) = evaluations of all its runs (each until
the final target or its end) / successful runs. The ECDF is COCO's picture: the fraction of
(run, target) pairs reached versus evaluations / D.

The runner is ``manifold_spectral.experiments.bbob`` (also behind ``manifold-spectral
reproduce bbob``). Outputs: ``--out`` (default ``benchmarks/bbob/``) gets ``runs.csv`` (one
row per run), ``ecdf.csv`` and ``ecdf.png``; the tables and the summary go into
benchmarks/README.md between the ``bbob`` markers (``--no-write``: print only).
``--timing`` adds ask + tell time per generation against pycma at D = 10, 20, 40, 100
(``bench_nes.time_per_generation``).

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_bbob.py [--dims 10] [--functions 1 2 13]
      [--instances 1 2 3] [--methods nes nes-ipop nes-bipop cma cma-ipop] [--jobs 1] [--timing]
      [--from-csv benchmarks/bbob/runs.csv]  (tables and ECDF of runs already made)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral.experiments import bbob

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- bbob:start -->", "<!-- bbob:end -->"
OUT = Path(__file__).resolve().parent / "bbob"


def timing(dims: list[int], repeats: int = 5) -> str:
    """Ask + tell ms per generation, spectral NES vs pycma, default populations.

    Best of ``repeats`` runs of 150 generations each, the two methods' runs interleaved
    (NES, CMA-ES, NES, ...) so that both see the same load of a shared machine.
    """
    from bench_nes import time_per_generation

    rows = ["| D | spectral NES (ms) | CMA-ES (ms) | NES / CMA-ES |", "|---:|---:|---:|---:|"]
    for d in dims:
        gens = 150  # well before the ellipsoid converges to underflow (no stop test here)
        runs: dict[str, list[float]] = {"spectral": [], "cma": []}
        for _ in range(repeats):
            for m, times in runs.items():
                times.append(time_per_generation(d, m, gens))
        t = {m: min(times) for m, times in runs.items()}
        rows.append(
            f"| {d} | {1e3 * t['spectral']:.3f} | {1e3 * t['cma']:.3f} "
            f"| {t['spectral'] / t['cma']:.2f} |"
        )
        print(rows[-1], flush=True)
    return "\n".join(rows)


def _run(args: argparse.Namespace) -> list[dict]:
    jobs = bbob.jobs(args.dims, args.functions, args.instances, args.methods, args.budget)
    rows: list[dict] = []
    with open(args.out / "runs.csv", "w", newline="") as fh:
        writer = None
        with Pool(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
            results = pool.imap(bbob.run_one, jobs) if pool else map(bbob.run_one, jobs)
            for row in results:
                rows.append(row)
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                fh.flush()
                print(
                    f"{row['method']:>9} f{row['function']:<2} D={row['dim']} "
                    f"i{row['instance']}: {row['success']} {row['evals']:>7} "
                    f"best {row['best']:.2e} {row['seconds']:.1f}s",
                    flush=True,
                )
    return rows


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
    p.add_argument("--methods", nargs="+", choices=list(bbob.METHODS), default=list(bbob.METHODS))
    p.add_argument("--budget", type=float, default=2e4, help="evaluations / D (2e4)")
    p.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--from-csv", type=Path, help="aggregate this runs.csv instead of running")
    p.add_argument("--timing", action="store_true", help="add ask+tell ms/gen vs pycma")
    p.add_argument("--no-write", action="store_true", help="print only (README unchanged)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        rows = bbob.read_runs(args.from_csv)
        methods = [m for m in bbob.METHODS if any(r["method"] == m for r in rows)]
        ran = (
            f"aggregated from {args.from_csv.name}, {sum(r['seconds'] for r in rows):.0f} s of runs"
        )
    else:
        rows = _run(args)
        methods = args.methods
        ran = f"{args.jobs} process(es)"
    bbob.ecdf(rows, methods, args.out / "ecdf.png", args.budget)
    text = bbob.tables(rows, methods)
    timing_text = timing([10, 20, 40, 100]) if args.timing else ""
    elapsed = time.perf_counter() - start
    import cma
    import cocoex
    import torch

    def ids(key: str) -> str:
        return " ".join(str(v) for v in sorted({r[key] for r in rows}))

    header = (
        f"Measured {datetime.date.today().isoformat()} on {machine()}; torch "
        f"{torch.__version__} (1 thread), cma {cma.__version__}, cocoex {cocoex.__version__}; "
        f"load average {load:.1f} at start; {ran}; whole script {elapsed:.0f} s. "
        f"Functions {ids('function')}; D {ids('dim')}; instances {ids('instance')}; "
        f"budget {args.budget:g} D; {len(rows)} runs."
    )
    block = f"{header}\n\n{text}\n\n![BBOB ECDF](bbob/ecdf.png)"
    if timing_text:
        block += (
            "\n\nTime per generation (ask + tell, evaluations excluded; best of 5 runs of 150 "
            f"generations, NES and CMA-ES runs interleaved):\n\n{timing_text}"
        )
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
