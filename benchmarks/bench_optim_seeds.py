"""Seed statistics of ``SpectralKron`` options on the four NN tasks (issue 13).

The tables of ``bench_optim_quality.py`` and ``bench_nn_real.py`` re-run each tuned method
on three seeds, too few to tell a change of a default from luck: on ``digits`` one
confidently wrong test image moves the mean test cross-entropy by about 0.03. This script
trains ``SpectralKron``'s defaults and the defaults with the ``--option`` values on the same
``--seeds`` seeds (the same initialisation and minibatches per seed for both), at one
learning rate per task (``--lr``; default: the defaults' tuned draw of the tables), with the
tables' settings: ``transformer`` and ``mlp`` as ``bench_optim_quality.py`` (bfloat16
autocast, curvature period 2), ``stdlib`` and ``digits`` at ``bench_nn_real.py --small``'s
sizes (float32, period 1), 200 steps, warm-up and cosine decay (``nn_training.lr_schedule``).

Reported per task: mean and standard error of the final held-out loss of both, the paired
difference (option minus defaults; the seed-to-seed spread cancels in it), on how many seeds
the option is lower, and the paired difference of the training loss over the last 10% of
the steps (fitting vs generalising).

Run:  python benchmarks/bench_optim_seeds.py --option nesterov=False
      python benchmarks/bench_optim_seeds.py --option nesterov=False --tasks mlp --seeds 4
"""

from __future__ import annotations

import argparse
import ast
import datetime
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)
from bench_nn_real import SIZES  # noqa: E402

from manifold_spectral._threads import torch_threads
from manifold_spectral.experiments import nn_training
from manifold_spectral.experiments.nn_training import optimizers
from manifold_spectral.experiments.nn_training.tasks import make_task

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- optim-seeds:start -->", "<!-- optim-seeds:end -->"

#: Per task: task sizes, precision and curvature period of the table that reports it.
SETTINGS = {
    "transformer": ({}, "bf16", 2),
    "mlp": ({}, "bf16", 2),
    "stdlib": (SIZES["small"]["stdlib"], "fp32", 1),
    "digits": (SIZES["small"]["digits"], "fp32", 1),
}
#: The defaults' tuned learning rates of the README tables (their random-search draws).
TUNED_LR = {"transformer": 0.002956, "mlp": 0.001047, "stdlib": 0.004882, "digits": 0.004882}


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with a Python literal value (``nesterov=False``, ``beta2=0.03``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option: expected key=value, got {text!r}")
    return key, ast.literal_eval(value)


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def compare(task_name: str, options: dict[str, object], seeds: list[int], lr: float) -> dict:
    """Final held-out losses and training tails of the defaults and the variant per seed."""
    kw, precision, period = SETTINGS[task_name]
    task = make_task(task_name, **kw)
    # The variant as a registered method, so that ``nn_training.train`` builds it as it
    # builds every other method.
    name = "_seeds_variant"
    optimizers.ABLATIONS[name] = optimizers.OptimizerSpec(
        name, _label(options), "k", {}, optimizers._spectral(**options)
    )
    try:
        out: dict[str, list[tuple[float, float]]] = {"spectral-p2": [], name: []}
        for seed in seeds:
            for method in out:
                run = nn_training.train(
                    task, method, {"lr": lr}, seed, 200, update_every=period,
                    precision=precision, evals=1,
                )  # fmt: skip
                out[method].append((run.final, run.train_tail))
    finally:
        del optimizers.ABLATIONS[name]
    base, var = (np.array(v) for v in out.values())
    return dict(task=task_name, lr=lr, period=period, precision=precision, base=base, var=var)


def _label(options: dict[str, object]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def format_table(rows: list[dict], options: dict[str, object]) -> str:
    lines = [
        f"| task | lr | seeds | defaults: final loss | `{_label(options)}`: final loss | "
        "paired difference | lower on | training-tail difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b, v = r["base"], r["var"]
        d, dt = v[:, 0] - b[:, 0], v[:, 1] - b[:, 1]
        lines.append(
            f"| {r['task']} ({r['precision']}, period {r['period']}) | {r['lr']:.4g} | {len(d)} "
            f"| {b[:, 0].mean():.4f} ± {_se(b[:, 0]):.4f} | {v[:, 0].mean():.4f} ± "
            f"{_se(v[:, 0]):.4f} | {d.mean():+.4f} ± {_se(d):.4f} | {int((d < 0).sum())}/"
            f"{len(d)} | {dt.mean():+.4f} ± {_se(dt):.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--option", type=parse_option, nargs="+", required=True, help="key=value ..."
    )
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1 .. N")
    parser.add_argument("--lr", type=float, default=None, help="one lr for every task")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    seeds = list(range(1, args.seeds + 1))
    with torch_threads(1):
        options = dict(args.option)
        rows = [compare(t, options, seeds, args.lr or TUNED_LR[t]) for t in args.tasks]
    header = (
        f"Measured {datetime.date.today().isoformat()} "
        f"(`{' '.join(['bench_optim_seeds.py', *(argv if argv is not None else sys.argv[1:])])}`); "
        f"200 steps; mean ± standard error over seeds; torch {torch.__version__}; {machine()}; "
        f"load average {load:.1f} at start."
    )
    block = f"{header}\n\n{format_table(rows, options)}"
    print(block)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
