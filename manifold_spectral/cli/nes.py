"""``reproduce nes`` and ``reproduce bbob``: gradient-free search with spectral NES (paper
Sec. 4.3, Figs. 3 right and 9, on the App. C problems; issue 14, on COCO's BBOB suite)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _outputs
from .options import (
    Distinct,
    Reproduction,
    argument_type,
    positive_float,
    positive_int,
    runtime_kwargs,
)

__all__ = ["NES_FUNCTIONS", "NES_METHODS", "BBOB_METHODS", "BBOB_DIMS", "NES", "BBOB"]


#: ``experiments.nes.APPENDIX_C`` and ``DEFAULT_METHODS``, spelled out so ``--help`` stays
#: free of torch (tests/test_experiment_nes.py checks that they agree).
NES_FUNCTIONS = ("ackley", "rosenbrock", "bohachevsky", "schaffer", "griewank")
NES_METHODS = ("spectral", "xnes", "cholesky", "cma", "xnes-plain")


def _nes_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n",
        type=argument_type(int, lambda v: v >= 2, "an integer >= 2"),
        default=60,
        help="dimension, >= 2 (default 60)",
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per cell (3)")
    parser.add_argument(
        "--max-evals",
        type=positive_int,
        default=50_000,
        help="evaluations per run (default 50000; the paper's plots go further)",
    )
    parser.add_argument(
        "--functions",
        nargs="+",
        action=Distinct,
        choices=NES_FUNCTIONS,
        default=list(NES_FUNCTIONS),
        help="App. C problems (default: all five)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        action=Distinct,
        choices=NES_METHODS,
        default=list(NES_METHODS),
        help="methods (default: all)",
    )


def _run_nes(args: argparse.Namespace, out: Path) -> None:
    from ..experiments import nes

    result = nes.run_nes(
        n=args.n,
        seeds=args.seeds,
        max_evals=args.max_evals,
        functions=args.functions,
        methods=args.methods,
        **runtime_kwargs(args),
    )
    _outputs.write_outputs(nes, result, out, "nes")


#: ``experiments.bbob.METHODS``, spelled out so ``--help`` stays free of torch.
BBOB_METHODS = ("nes", "nes-ipop", "nes-bipop", "cma", "cma-ipop")
#: The dimensions of COCO's ``bbob`` suite (``cocoex.Suite("bbob", ...)``).
BBOB_DIMS = (2, 3, 5, 10, 20, 40)


def _bbob_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dims",
        type=argument_type(int, lambda v: v in BBOB_DIMS, f"a BBOB dimension in {BBOB_DIMS}"),
        nargs="+",
        action=Distinct,
        default=[10],
        help=f"dimensions, from COCO's {BBOB_DIMS} (default 10)",
    )
    parser.add_argument(
        "--functions",
        type=argument_type(int, lambda v: 1 <= v <= 24, "a BBOB function id in 1..24"),
        nargs="+",
        action=Distinct,
        default=[1, 2, 8, 10, 11, 12, 13, 14],
        help="BBOB functions (default: 1 2 8 10 11 12 13 14; at D = 20 only 1 2 8 10 11 12 "
        "14 run); the whole protocol is benchmarks/bench_bbob.py",
    )
    parser.add_argument(
        "--instances",
        type=positive_int,
        nargs="+",
        action=Distinct,
        default=[1, 2, 3],
        help="COCO problem instances (each a shifted and rotated version of the function) "
        "(default 1 2 3)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        action=Distinct,
        choices=BBOB_METHODS,
        default=list(BBOB_METHODS),
        help="spectral NES and pycma, without restarts and with IPOP, and spectral NES with "
        "BIPOP (default: all five)",
    )
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=2e4,
        help="evaluations / D; budget x D must give at least one evaluation (default 2e4)",
    )


def _bbob_check(args: argparse.Namespace) -> str | None:
    """``--budget`` gives each run ``int(budget * D)`` evaluations: at least one; and the
    functions run at one of the ``--dims`` at least (``bbob.jobs`` leaves out those the
    protocol does not run at D = 20)."""
    small = min(args.dims)
    if int(args.budget * small) < 1:
        return (
            f"argument --budget: {args.budget:g} x D = {small} gives no evaluation "
            f"(need budget >= {1 / small:g} at D = {small})"
        )
    from ..experiments import bbob

    if not bbob.jobs(args.dims, args.functions, args.instances, args.methods, args.budget):
        return (
            f"argument --functions: none of {' '.join(map(str, args.functions))} runs at D = "
            f"{' '.join(map(str, args.dims))} (at D = 20 the protocol runs only "
            f"{' '.join(map(str, bbob.D20))}); add another of --dims or --functions"
        )
    return None


def _run_bbob(args: argparse.Namespace, out: Path) -> None:
    from ..experiments import bbob

    result = bbob.run_bbob(
        dims=args.dims,
        functions=args.functions,
        instances=args.instances,
        methods=args.methods,
        budget=args.budget,
        **runtime_kwargs(args),
    )
    _outputs.write_outputs(bbob, result, out, "bbob")


NES = Reproduction(
    "nes",
    "Sec. 4.3 / Fig. 3 right, 9: gradient-free NES on the App. C problems, d = 60 by default",
    _nes_arguments,
    _run_nes,
    title=lambda a: (
        f"Sec. 4.3 / Fig. 3 right, 9: gradient-free NES on the App. C problems, d = {a.n}"
    ),
    needs=lambda a: ["cma"] if "cma" in a.methods else [],
    device_note="the NES states and samples (drawn by a generator on that device, so "
    "cuda gives other, equally valid runs); CMA-ES (pycma, numpy) stays on the CPU",
    # one seed, 10000 evaluations (Ackley and Griewank converge). The defaults (three
    # seeds, 50000 evaluations) are timed by benchmarks/bench_reproduce_nes.py, which
    # writes the measured time into docs/nes.md.
    quick={"seeds": 1, "max_evals": 10_000},
)

BBOB = Reproduction(
    "bbob",
    "spectral NES vs (IPOP-)CMA-ES on COCO's BBOB suite (needs cocoex, pip coco-experiment)",
    _bbob_arguments,
    _run_bbob,
    needs=lambda a: ["cocoex", "cma"],  # run_bbob imports both, whatever the methods
    check=_bbob_check,
    device_note="spectral NES's state only; COCO's functions and pycma are numpy and run "
    "on the CPU",
    # f1 at D = 5, instance 1, all five methods: the smallest case (the defaults are 8
    # functions x 3 instances x 5 methods at D = 10). benchmarks/bench_reproduce_all.py
    # measures the quick run's time into README.md.
    quick={"functions": [1], "instances": [1], "dims": [5]},
)
