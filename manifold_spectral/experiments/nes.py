"""Gradient-free minimisation with NES (paper Sec. 4.3, App. C, Fig. 3 right and Fig. 9).

The five App. C problems (Ackley, Rosenbrock, Bohachevsky, Schaffer, Griewank; definitions in
``manifold_spectral.solvers.functions``) in ``n`` dimensions (60 in the paper), best value
found versus function evaluations, for

* ``spectral``: ours, ``manifold_spectral.solvers.nes.NES`` (precision ``B Diag(d) B^T`` on
  ``SpectralSPD``, Gaussian layer with the REINFORCE curvature);
* ``xnes``: the xNES parametrisation (matrix exponential, Glasmachers et al. 2010) driven by
  the same techniques as ours (mirrored sampling, DX-NES distance weights and rates, rank-one
  path term), i.e. DX-NES: the Riemannian baseline "NES" of Fig. 9;
* ``cholesky``: the Cholesky-factor NES (Lin et al. 2021) with the same techniques;
* ``cma``: CMA-ES from the ``cma`` package (pycma, default settings, no restarts), the
  outside anchor;
* ``xnes-plain`` (on request): xNES with its published defaults
  (``eta_sigma = eta_B = 0.6 (3 + ln n)/(n sqrt n)``, no mirrored sampling).

Every method starts from the same ``x0`` (uniform in the function's usual search box, seeded)
and ``sigma0`` (half the box half-width) per seed and stops at ``max_evals`` evaluations, at a
value below ``target``, or by its own convergence tests (tolfun/tolx, pycma's defaults for
both libraries); a stopped curve stays flat in the plot.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._threads import torch_threads
from ..solvers.cholesky_nes import CholeskyNES
from ..solvers.functions import FUNCTIONS
from ..solvers.nes import NES, NESBase
from ..solvers.xnes import XNES
from .nes_plot import plot  # noqa: F401 (re-exported)

__all__ = [
    "APPENDIX_C",
    "METHODS",
    "DEFAULT_METHODS",
    "Run",
    "NESExperiment",
    "run_method",
    "run_nes",
    "format_table",
    "csv_tables",
    "plot",
]

#: The App. C problems in Fig. 9's order.
APPENDIX_C = ("ackley", "rosenbrock", "bohachevsky", "schaffer", "griewank")

#: Method name -> (label, colour).
METHODS: dict[str, tuple[str, str]] = {
    "spectral": ("Spectral NES (ours)", "tab:red"),
    "xnes": ("xNES (DX-NES techniques)", "tab:blue"),
    "cholesky": ("Cholesky NES", "tab:green"),
    "cma": ("CMA-ES (pycma)", "black"),
    "xnes-plain": ("xNES (published defaults)", "tab:purple"),
}
DEFAULT_METHODS = ("spectral", "xnes", "cholesky", "cma", "xnes-plain")

_DX = {"mirrored": True, "distance_weights": True, "adaptive_rates": True, "rank_one": True}


@dataclasses.dataclass
class Run:
    """One run: the best value so far after each generation, versus evaluations."""

    method: str
    function: str
    seed: int
    nfev: np.ndarray
    fbest: np.ndarray
    stop: str
    seconds: float
    generations: int

    def evals_to(self, target: float) -> int | None:
        """Evaluations until the best value first fell below ``target`` (None: never)."""
        hit = np.nonzero(self.fbest < target)[0]
        return int(self.nfev[hit[0]]) if hit.size else None

    @property
    def final(self) -> float:
        return float(self.fbest[-1]) if self.fbest.size else math.inf


@dataclasses.dataclass
class NESExperiment:
    """All runs of ``run_nes`` and its settings."""

    n: int
    seeds: int
    max_evals: int
    target: float
    functions: tuple[str, ...]
    methods: tuple[str, ...]
    runs: list[Run]
    wall_time: float

    def select(self, function: str, method: str) -> list[Run]:
        return [r for r in self.runs if r.function == function and r.method == method]


def _nes_run(es: NESBase, f: Callable[[Any], Any]) -> tuple[np.ndarray, np.ndarray, str]:
    res = es.optimize(f, vectorized=True)
    return res.history["nfev"], res.history["fun"], ",".join(res.stop)


def _cma_run(
    f: Callable[[Any], Any], x0: np.ndarray, sigma0: float, seed: int, max_evals: int, target: float
) -> tuple[np.ndarray, np.ndarray, str]:
    import cma

    opts = {"seed": seed + 1, "maxfevals": max_evals, "ftarget": target, "verbose": -9}
    es = cma.CMAEvolutionStrategy(x0, sigma0, opts)
    nfev, fbest, best = [], [], math.inf
    while not es.stop():
        X = es.ask()
        values = np.asarray(f(np.asarray(X)), dtype=np.float64)
        es.tell(X, values.tolist())
        finite = values[np.isfinite(values)]
        if finite.size:
            best = min(best, float(finite.min()))
        nfev.append(es.countevals)
        fbest.append(best)
    return np.asarray(nfev), np.asarray(fbest), ",".join(es.stop())


def run_method(
    method: str,
    function: str,
    n: int,
    seed: int,
    max_evals: int,
    target: float = 1e-8,
    device: Any = None,
) -> Run:
    """One seeded run of ``method`` on ``function`` in ``n`` dimensions; the NES states on
    ``device`` (default CPU; the samples come from a generator there, so another device gives
    other, equally valid runs). CMA-ES (pycma) is numpy: it always runs on the CPU."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    if function not in FUNCTIONS:
        raise ValueError(f"function: expected one of {sorted(FUNCTIONS)}, got {function!r}")
    tf = FUNCTIONS[function]
    f = tf.make(n)
    x0, sigma0 = tf.initial(n, seed)
    start = time.perf_counter()
    common = {"seed": seed, "max_evals": max_evals, "target": target, "device": device}
    if method == "cma":
        nfev, fbest, stop = _cma_run(f, x0, sigma0, seed, max_evals, target)
    elif method == "spectral":
        nfev, fbest, stop = _nes_run(NES(x0, sigma0, **common), f)
    elif method == "cholesky":
        nfev, fbest, stop = _nes_run(CholeskyNES(x0, sigma0, **common), f)
    elif method == "xnes":
        nfev, fbest, stop = _nes_run(XNES(x0, sigma0, **common, **_DX), f)
    else:  # xnes-plain
        nfev, fbest, stop = _nes_run(XNES(x0, sigma0, **common), f)
    return Run(method, function, seed, nfev, fbest, stop, time.perf_counter() - start, len(nfev))


def run_nes(
    *,
    n: int = 60,
    seeds: int = 3,
    max_evals: int = 50_000,
    target: float = 1e-8,
    functions: Sequence[str] = APPENDIX_C,
    methods: Sequence[str] = DEFAULT_METHODS,
    progress: bool = True,
    threads: int | None = 1,
    seed: int = 0,
    device: Any = None,
) -> NESExperiment:
    """Fig. 9: every method on every function for ``seeds`` seeds.

    Args:
        n: dimension (60 in the paper).
        seeds: seeds per (function, method); seed ``s`` fixes ``x0`` for all methods.
        max_evals: evaluation budget per run (the paper's plots go to ~1e5 and beyond; the
            default keeps ``reproduce nes`` at a few minutes).
        target: stop a run once a value below it is found.
        functions, methods: subsets of ``FUNCTIONS`` and ``METHODS``.
        progress: tqdm bar over the runs (stderr).
        seed: the first seed (seeds ``seed .. seed + seeds - 1``).
        threads: torch intra-op threads during the runs (1: 60 x 60 products gain nothing
            from more, and a loaded machine loses a lot); ``None``: unchanged.
        device: of the NES states (``run_method``); CMA-ES stays on the CPU.
    """
    from .._compat import progress_bar as tqdm  # tqdm, or silent without it

    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n: expected an int >= 2, got {n!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected a positive int, got {seeds!r}")
    if isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 1:
        raise ValueError(f"max_evals: expected a positive int, got {max_evals!r}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods: unknown method {m!r} (choose from {sorted(METHODS)})")
    for name in functions:
        if name not in FUNCTIONS:
            raise ValueError(f"functions: unknown function {name!r} (from {sorted(FUNCTIONS)})")
    start = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    jobs = [(f, m, s) for f in functions for m in methods for s in range(seed, seed + seeds)]
    runs = []
    with (
        torch_threads(threads),
        tqdm(total=len(jobs), desc="reproduce nes", disable=not progress, leave=False) as bar,
    ):
        for function, method, seed in jobs:
            bar.set_postfix_str(f"{function}/{method}/{seed}")
            runs.append(run_method(method, function, n, seed, max_evals, target, device))
            bar.update()
    return NESExperiment(
        n,
        seeds,
        max_evals,
        target,
        tuple(functions),
        tuple(methods),
        runs,
        time.perf_counter() - start,
    )


def _fmt_evals(runs: list[Run], target: float) -> str:
    hits = [e for e in (r.evals_to(target) for r in runs) if e is not None]
    if not hits:
        return "-"
    return f"{int(np.median(hits))}"


def csv_tables(result: NESExperiment) -> list[list[list[Any]]]:
    """``format_table``'s numbers as one CSV table (header first), one row per function and
    method."""
    r = result
    rows: list[list[Any]] = [
        ["function", "method", "median best f", "min best f", "max best f", "successes",
         "runs", "median evals of successes", "ms per generation"]
    ]  # fmt: skip
    for function in r.functions:
        for method in r.methods:
            runs = r.select(function, method)
            finals = np.array([x.final for x in runs])
            hits = [e for e in (x.evals_to(r.target) for x in runs) if e is not None]
            ms = 1e3 * sum(x.seconds for x in runs) / max(1, sum(x.generations for x in runs))
            rows.append(
                [function, method, f"{np.median(finals):.6g}", f"{finals.min():.6g}",
                 f"{finals.max():.6g}", len(hits), len(runs),
                 int(np.median(hits)) if hits else "", f"{ms:.3f}"]
            )  # fmt: skip
    return [rows]


def format_table(result: NESExperiment) -> str:
    """Per function and method: median final best value, min-max over seeds, successes
    (best value below the target) and the median evaluations of the successful runs."""
    r = result
    lines = [
        f"NES on the App. C problems (Fig. 9): n={r.n}, {r.seeds} seed"
        f"{'s' * (r.seeds != 1)}, budget {r.max_evals} evaluations, target {r.target:g}; "
        f"run {r.wall_time:.1f} s",
        f"{'function':<12} {'method':<26} {'median best f':>13} {'[min, max]':>21} "
        f"{'success':>7} {'evals (median of successes)':>28} {'ms/gen':>7}",
    ]
    for function in r.functions:
        for method in r.methods:
            runs = r.select(function, method)
            finals = np.array([x.final for x in runs])
            ok = sum(x.evals_to(r.target) is not None for x in runs)
            ms = 1e3 * sum(x.seconds for x in runs) / max(1, sum(x.generations for x in runs))
            lines.append(
                f"{function:<12} {METHODS[method][0]:<26} {np.median(finals):>13.3e} "
                f"[{finals.min():.2e}, {finals.max():.2e}] {ok:>4}/{len(runs):<2} "
                f"{_fmt_evals(runs, r.target):>28} {ms:>7.2f}"
            )
    lines.append("ms/gen includes the function evaluations; CMA-ES runs pycma's pure-Python loop.")
    return "\n".join(lines)
