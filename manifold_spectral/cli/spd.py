"""``reproduce spd``: SPD matrix optimisation, metric nearness and log-det (paper Sec. 4.2,
Fig. 3 left)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _outputs
from .options import (
    SEED_MAX,
    Reproduction,
    positive_float,
    positive_int,
    runtime_kwargs,
    seed_int,
)

__all__ = ["SPD"]


def _spd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--d", type=positive_int, default=60, help="matrix size (default 60)")
    parser.add_argument(
        "--steps-nearness", type=positive_int, default=1200, help="iterations (default 1200)"
    )
    parser.add_argument(
        "--steps-logdet", type=positive_int, default=400, help="iterations (default 400)"
    )
    parser.add_argument(
        "--lr-nearness", type=positive_float, default=0.01, help="step size (default 0.01)"
    )
    parser.add_argument(
        "--lr-logdet", type=positive_float, default=0.02, help="step size (default 0.02)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=20,
        help="metric-nearness samples per iteration, of N = 10 d (default 20)",
    )
    parser.add_argument(
        "--seed", type=seed_int, default=0, help=f"random seed, 0 .. {SEED_MAX} (0)"
    )


def _run_spd(args: argparse.Namespace, out: Path) -> None:
    from ..experiments import spd

    result = spd.run_spd(
        d=args.d,
        steps_nearness=args.steps_nearness,
        steps_logdet=args.steps_logdet,
        lr_nearness=args.lr_nearness,
        lr_logdet=args.lr_logdet,
        batch_size=args.batch_size,
        **runtime_kwargs(args, "num_threads"),
    )
    _outputs.write_outputs(spd, result, out, "spd")


SPD = Reproduction(
    "spd",
    "Sec. 4.2 / Fig. 3 left: SPD matrix optimisation (metric nearness, log-det), d = 60 by default",
    _spd_arguments,
    _run_spd,
    device_note="the problems are drawn on the CPU and moved",
    title=lambda a: (
        f"Sec. 4.2 / Fig. 3 left: SPD matrix optimisation (metric nearness, log-det), d = {a.d}"
    ),
    # no quick overrides: the defaults are the paper's size (d = 60);
    # benchmarks/bench_reproduce_all.py measures its time into README.md.
    quick={},
)
