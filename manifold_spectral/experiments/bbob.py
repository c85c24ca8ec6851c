"""COCO's BBOB suite (``cocoex``, pip ``coco-experiment``): spectral NES against CMA-ES.

Protocol: noiseless ``bbob`` functions in dimension D, instances ``1..k``; every
run starts at ``x0 ~ U[-4, 4]^D`` (each restart draws a new one; the same stream of starts,
seeded by (function, D, instance), for every method), ``sigma0 = 2``, a budget of
``budget * D`` evaluations, target ``f - f_opt < 1e-8``. Methods:

* ``nes``: ``nes.minimize`` (spectral NES, defaults), no restarts;
* ``nes-ipop``: the same with ``restarts=9`` (IPOP);
* ``nes-bipop``: the same with ``restarts=9, bipop=True`` (BIPOP: IPOP runs interleaved with
  small-population, small-step runs), compared with IPOP-CMA-ES;
* ``cma``: pycma's ``cma.fmin2(..., restarts=0)``; ``cma-ipop``: ``cma.fmin2(...,
  restarts=9, bipop=False)`` (IPOP-CMA-ES).

Every evaluation goes through one ``Counter`` that stops the run at the budget or at the
final target and records the first evaluation at which ``f - f_opt`` fell below each of
COCO's 51 targets ``10^{2, 1.8, ..., -8}``. ERT of a (method, function, D) = evaluations of
all its runs (each until the final target or its end) / successful runs. The ECDF is COCO's
picture: the fraction of (run, target) pairs reached versus evaluations / D.

``cocoex`` and ``cma`` are imported lazily (the ``baselines`` extra). The ECDF figure is
``bbob_plot.ecdf`` (re-exported here).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._threads import torch_threads
from .bbob_plot import ecdf

__all__ = [
    "METHODS",
    "D20",
    "BBOBResult",
    "run_one",
    "run_bbob",
    "ert",
    "tables",
    "format_table",
    "plot",
    "write_runs",
    "read_runs",
]

TARGETS = 10.0 ** np.linspace(2, -8, 51)
FINAL = 1e-8
METHODS = {  # name -> (label, restart options of nes.minimize / cma.fmin2)
    "nes": ("spectral NES", {"restarts": 0}),
    "nes-ipop": ("spectral NES, IPOP", {"restarts": 9}),
    "nes-bipop": ("spectral NES, BIPOP", {"restarts": 9, "bipop": True}),
    "cma": ("CMA-ES", {"restarts": 0, "bipop": False}),
    "cma-ipop": ("IPOP-CMA-ES", {"restarts": 9, "bipop": False}),
}
PAIRS = (("nes", "cma"), ("nes-ipop", "cma-ipop"), ("nes-bipop", "cma-ipop"))
#: The functions of the protocol at D = 20.
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


def run_one(
    job: tuple[str, int, int, int, float],
    device: Any = None,
    threads: int | None = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """One run of ``method`` on (fid, dim, iid); returns its row of runs.csv. ``device``:
    of spectral NES's state (default CPU); pycma and COCO's functions are numpy.
    ``threads``: torch intra-op threads during the run (restored afterwards). ``seed``: a
    base seed mixed into the protocol's starts and solver seeds; 0 (default) is the protocol
    of the module docstring, whose results benchmarks/README.md records."""
    with torch_threads(threads):
        return _run_one(job, device, seed)


def _run_one(job: tuple[str, int, int, int, float], device: Any, base_seed: int) -> dict[str, Any]:
    method, fid, dim, iid, budget_mult = job
    suite, problem, fopt = _problem(fid, dim, iid)
    budget = int(budget_mult * dim)
    counter = Counter(problem, fopt, budget)
    extra = [base_seed] if base_seed else []  # seed 0: the published protocol's streams
    rng = np.random.default_rng([fid, dim, iid, *extra])  # the same starts for every method

    def x0() -> np.ndarray:
        return rng.uniform(-4.0, 4.0, dim)

    options = METHODS[method][1]
    restarts = options["restarts"]
    seed = 1000 * fid + 10 * iid + dim + 100_000 * base_seed
    start = time.perf_counter()
    try:
        if method.startswith("nes"):
            from ..solvers import nes

            nes.minimize(
                counter.batch, x0 if restarts else x0(), 2.0, max_evals=budget,
                target=fopt + FINAL, seed=seed, vectorized=True, device=device, **options,
            )  # fmt: skip
        else:
            import cma

            opts = {"maxfevals": budget, "ftarget": fopt + FINAL, "seed": seed, "verbose": -9}
            with _in_tmpdir():
                cma.fmin2(counter, x0, 2.0, {**opts, "verb_log": 0}, **options)  # fmt: skip
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
    """Per (function, D) successes and ERT, ERT ratios, and a summary per pair of methods
    (``PAIRS``) that both ran; the methods of no such pair (say NES alone, without CMA-ES) in
    one more table of their successes and ERTs, without ratios, so every method run is
    reported."""
    cells = _cells(rows)
    keys = sorted({(f, d) for _, f, d in cells}, key=lambda k: (k[1], k[0]))
    parts = []
    pairs = [(a, b) for a, b in PAIRS if a in methods and b in methods]
    alone = [m for m in methods if all(m not in pair for pair in pairs)]
    for a, b in pairs:
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
    if alone:
        parts.append(_alone_table(cells, keys, alone))
    return "\n\n".join(parts)


def _alone_table(cells: dict, keys: list[tuple[int, int]], methods: list[str]) -> str:
    """Successes and ERT per (function, D) of ``methods``, which no pair compares."""
    labels = [METHODS[m][0] for m in methods]
    lines = [
        f"**{' / '.join(labels)}** (ERT in evaluations; no ratio: the method each is compared "
        "with did not run):",
        "",
        "| f | D | " + " | ".join(f"{la} solved | {la} ERT" for la in labels) + " |",
        "|---:|---:|" + "---:|---:|" * len(methods),
    ]
    solved = dict.fromkeys(methods, 0)
    for f, d in keys:
        row = [str(f), str(d)]
        for m in methods:
            runs = cells.get((m, f, d), [])
            succ, e = ert(runs)
            solved[m] += succ
            row += [f"{succ}/{len(runs)}", f"{e:.0f}" if succ else "-"]
        lines.append("| " + " | ".join(row) + " |")
    total = {m: sum(len(v) for (k, _, _), v in cells.items() if k == m) for m in methods}
    said = "; ".join(f"{la} {solved[m]}/{total[m]}" for la, m in zip(labels, methods, strict=True))
    return "\n".join([*lines, "", f"Triples solved: {said}."])


@dataclasses.dataclass
class BBOBResult:
    """All runs (rows of ``runs.csv``) and the settings, the seed included (a run cannot be
    repeated without it)."""

    rows: list[dict]
    methods: tuple[str, ...]
    budget: float
    wall_time: float
    #: The base seed of every run (``run_one``); 0 is the published protocol's streams.
    seed: int = 0


def jobs(
    dims: Sequence[int],
    functions: Sequence[int],
    instances: Sequence[int],
    methods: Sequence[str],
    budget: float,
) -> list[tuple[str, int, int, int, float]]:
    """The (method, function, D, instance, budget) runs of the protocol; at D = 20 only the
    functions of ``D20``."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods: unknown method {m!r} (choose from {sorted(METHODS)})")
    for f in functions:
        if not 1 <= f <= 24:
            raise ValueError(f"functions: expected BBOB function ids in 1..24, got {f!r}")
    return [
        (m, f, d, i, budget)
        for d in dims
        for f in functions
        if d != 20 or f in D20
        for i in instances
        for m in methods
    ]


def run_bbob(
    *,
    dims: Sequence[int] = (10, 20),
    functions: Sequence[int] = tuple(range(1, 25)),
    instances: Sequence[int] = (1, 2, 3, 4, 5),
    methods: Sequence[str] = tuple(METHODS),
    budget: float = 2e4,
    progress: bool = True,
    on_row: Any = None,
    device: Any = None,
    threads: int | None = 1,
    seed: int = 0,
) -> BBOBResult:
    """Every run of ``jobs(...)`` in order; ``on_row(row)`` after each (e.g. to log it);
    ``device``, ``threads``, ``seed``: of every run (``run_one``)."""
    from tqdm.auto import tqdm

    todo = jobs(dims, functions, instances, methods, budget)
    if not todo:  # an empty ECDF figure fails inside matplotlib: say why instead
        raise ValueError(
            f"functions: no run at D in {list(dims)} for functions {list(functions)}, instances "
            f"{list(instances)}, methods {list(methods)} (at D = 20 the protocol runs only "
            f"functions {list(D20)})"
        )
    for module, pip in (("cocoex", "coco-experiment"), ("cma", "cma")):
        try:
            __import__(module)
        except ImportError as e:
            raise ImportError(
                f"reproduce bbob needs {module} (pip install {pip}, or the 'baselines' extra)"
            ) from e
    start = time.perf_counter()
    rows = []
    for job in tqdm(todo, desc="reproduce bbob", disable=not progress, leave=False):
        rows.append(run_one(job, device, threads, seed))
        if on_row is not None:
            on_row(rows[-1])
    return BBOBResult(rows, tuple(methods), budget, time.perf_counter() - start, seed)


def format_table(result: BBOBResult) -> str:
    """The ERT tables (``tables``) with a header line."""
    r = result
    dims = sorted({row["dim"] for row in r.rows})
    inst = sorted({row["instance"] for row in r.rows})
    head = (
        f"BBOB: D {dims}, instances {inst}, budget {r.budget:g} D, target f - f_opt < "
        f"{FINAL:g}, seed {r.seed}; {len(r.rows)} runs in {r.wall_time:.1f} s"
    )
    return head + "\n\n" + tables(r.rows, list(r.methods))


def plot(result: BBOBResult, path: Any) -> list[Path]:
    """ECDF PNG at ``path``, its CSV beside it (same stem, ``.csv``) and the runs as
    ``runs.csv`` in the same folder; returns the three paths."""
    path = Path(path)
    ecdf(result.rows, list(result.methods), path, result.budget)
    write_runs(result.rows, path.parent / "runs.csv")
    return [path, path.with_suffix(".csv"), path.parent / "runs.csv"]


def write_runs(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_runs(path: Path) -> list[dict]:
    """Rows of a ``runs.csv`` (numbers parsed)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("function", "dim", "instance", "evals", "success"):
            r[k] = int(r[k])
        r["best"], r["seconds"] = float(r["best"]), float(r["seconds"])
    return rows
