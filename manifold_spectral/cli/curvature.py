"""``reproduce curvature`` and ``reproduce kronecker``: curvature learning from a gradient
stream (paper Sec. 4.1, Figs. 2, 7 and 8), full matrix and Kronecker-structured."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import _outputs
from .options import (
    SEED_MAX,
    Distinct,
    Reproduction,
    positive_int,
    runtime_kwargs,
    seed_int,
    unit_interval,
)

__all__ = ["CURVATURE", "KRONECKER"]


def _moving_average_arguments(
    parser: argparse.ArgumentParser, steps_help: str, init_help: str
) -> None:
    """Options shared by the two curvature-tracking reproductions (Figs. 1-2)."""
    parser.add_argument("--steps", type=positive_int, default=None, help=steps_help)
    parser.add_argument(
        "--beta2",
        type=unit_interval,
        nargs="+",
        action=Distinct,
        default=[1e-2, 1e-3],
        metavar="BETA2",
        help="one or more step sizes in (0, 1); one plot row each (default: 0.01 0.001)",
    )
    parser.add_argument(
        "--seed", type=seed_int, default=0, help=f"random seed, 0 .. {SEED_MAX} (0)"
    )
    parser.add_argument("--init", choices=("random", "sample"), default="random", help=init_help)
    parser.add_argument(
        "--no-w2", dest="w2", action="store_false", help="skip the Wasserstein-2 metric"
    )


def _curvature_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=positive_int, default=100, help="matrix size (default 100)")
    _moving_average_arguments(
        parser,
        steps_help="gradients per run (default: 10 / beta2, ten time constants of the average)",
        init_help="S0: an independent random SPD matrix (default) or a sample covariance",
    )


def _run_curvature(args: argparse.Namespace, out: Path) -> None:
    from ..experiments import curvature

    def run(beta2: float) -> Any:
        return curvature.run_full_matrix(
            n=args.n,
            steps=args.steps,
            beta2=beta2,
            init=args.init,
            w2=args.w2,
            **runtime_kwargs(args, "num_threads"),
        )

    _outputs.run_rows(run, args.beta2, out, "curvature_full")


def _kronecker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a", type=positive_int, default=9, help="left factor size (default 9)")
    parser.add_argument("--b", type=positive_int, default=11, help="right factor size (default 11)")
    _moving_average_arguments(
        parser,
        steps_help="gradients per run (default: 10 / beta2, capped at 5000 to keep the run short)",
        init_help="S0: random Kronecker factors (default) or the NKP of a sample covariance",
    )


def _run_kronecker(args: argparse.Namespace, out: Path) -> None:
    from ..experiments import curvature_kronecker

    def run(beta2: float) -> Any:
        return curvature_kronecker.run_kronecker(
            a=args.a,
            b=args.b,
            steps=args.steps,
            beta2=beta2,
            init=args.init,
            w2=args.w2,
            **runtime_kwargs(args, "num_threads"),
        )

    _outputs.run_rows(run, args.beta2, out, "curvature_kronecker")


_SAME_NUMBERS = (
    "the problem and the gradient stream are drawn on the CPU and moved (the same numbers)"
)

CURVATURE = Reproduction(
    "curvature",
    "Sec. 4.1 / Fig. 2, 7: curvature learning from a gradient stream (full matrix)",
    _curvature_arguments,
    _run_curvature,
    device_note=_SAME_NUMBERS,
    # no quick overrides: the defaults are the paper's size (n = 100, ten time constants per
    # beta2); benchmarks/bench_reproduce_all.py measures its time into README.md.
    quick={},
)

KRONECKER = Reproduction(
    "kronecker",
    "Sec. 4.1 / Fig. 2 right, 8: curvature learning with Kronecker structure (9 x 11 by default)",
    _kronecker_arguments,
    _run_kronecker,
    device_note=_SAME_NUMBERS,
    title=lambda a: (
        f"Sec. 4.1 / Fig. 2 right, 8: curvature learning with Kronecker structure ({a.a} x {a.b})"
    ),
    # beta2 = 0.01 only (1000 steps, ten time constants): the defaults add beta2 = 0.001
    # (5000 steps, the cap), six times the steps in all. benchmarks/bench_reproduce_all.py
    # measures the quick run's time into README.md.
    quick={"beta2": [1e-2]},
)
