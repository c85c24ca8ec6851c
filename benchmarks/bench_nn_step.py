"""Whole training step time (forward, backward, optimizer step) on issue 13's tasks:
SpectralKron's defaults (float32 and bfloat16 state) against AdamW, SOAP and Muon, at equal
preconditioner refresh periods.

Tasks: ``stdlib`` (byte-level GPT on standard-library source text) and ``digits`` (conv net on
scikit-learn's digits) at issue 13's sizes (``full``: GPT 4 layers, width 128, context 128,
batch 32; convs 32 / 64, batch 64) and at ``bench_nn_real.py --small``'s, and the synthetic
``transformer`` and ``mlp`` of ``bench_optim_quality.py``. Each optimizer is built as
``nn_training.build_optimizer`` builds it for the quality tables (``update_every`` = the period:
SOAP's ``precondition_frequency``, ours' curvature step; AdamW and Muon have none).

Timing: ``nn_training.train`` (its CPU time on a CPU) for ``1 + k * period`` steps, one torch
thread; the first step (state
initialisation, SOAP's first eigendecomposition, our warm start: one-off costs) is left out and
the rest averaged, so every run holds the same number of refreshes whatever their phase (a
median over single steps would report the cheap step of a periodic optimizer). Methods run in
turn, their order rotated every round; the table gives the median over rounds. Ratios are
taken within this run. A table's row is the cost per step a user sees; the optimizer's own
step alone is measured by ``bench_optim_step.py`` and ``bench_optim_batched.py``.

``--option KEY=VALUE ...`` adds the defaults with those options as one more method ("ours,
KEY=VALUE"), its ratio to SOAP and to the defaults in the table (``--block NAME`` writes it
into README block NAME instead of the precision's).

Run:  python benchmarks/bench_nn_step.py                  # fp32, periods 1 2 10 (minutes)
      python benchmarks/bench_nn_step.py --precision bf16  # under bfloat16 autocast
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)
from bench_nn_real import SIZES  # noqa: E402
from bench_optim_seeds import parse_option  # noqa: E402

from manifold_spectral.experiments import nn_training
from manifold_spectral.experiments.nn_training import optimizers

README = Path(__file__).resolve().parent / "README.md"
METHODS = ("adamw", "muon", "soap", "spectral-p2", "spectral-p2-bf16")
LABELS = {"adamw": "AdamW", "muon": "Muon", "soap": "SOAP", "spectral-p2": "ours"}
LABELS["spectral-p2-bf16"] = "ours, bf16 state"
#: Timing only: a learning rate every method trains with on every task (no step is skipped),
#: and the other knob each peer's search draws (AdamW, SOAP: 1 - beta2; Muon: its AdamW lr).
HP = {"adamw": {"1-beta2": 0.01}, "soap": {"1-beta2": 0.01}, "muon": {"adamw_lr": 1e-3}}
TASKS = ("stdlib/full", "digits/full", "stdlib/small", "digits/small", "transformer", "mlp")
#: The method ``--option`` registers (``nn_training.optimizers.ABLATIONS``) for this run.
VARIANT = "_step_variant"


def markers(precision: str) -> tuple[str, str]:
    """The README block of a precision."""
    return f"<!-- nn-step-{precision}:start -->", f"<!-- nn-step-{precision}:end -->"


def make(task: str) -> Any:
    """The task ``name`` or ``name/size`` (sizes of ``bench_nn_real.SIZES``)."""
    name, _, size = task.partition("/")
    return nn_training.make_task(name, **(SIZES[size][name] if size else {}))


def ms_per_step(task: Any, method: str, period: int, steps: int, precision: str) -> float:
    """Mean milliseconds per step over ``steps`` (a multiple of ``period``) after the first:
    ``nn_training.train``'s CPU time (with one torch thread the step's whole cost; a busy
    neighbour on a shared machine does not enter it)."""
    hp = {"lr": 1e-3, **HP.get(method, {})}
    run = nn_training.train(
        task, method, hp, seed=0, steps=steps + 1, update_every=period, precision=precision, evals=1
    )
    if run.error is not None:
        raise SystemExit(f"{method}: {run.error}")
    return run.ms_per_step


def bench(task: str, period: int, args: argparse.Namespace) -> dict[str, float]:
    """Median over rounds of each method's ms / step on ``task`` at ``period``."""
    t = make(task)
    steps = period * max(1, -(-args.min_steps // period))
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    for r in range(args.rounds):
        order = list(args.methods)
        order = order[r % len(order) :] + order[: r % len(order)]
        for m in order:
            times[m].append(ms_per_step(t, m, period, steps, args.precision))
    return {m: statistics.median(v) for m, v in times.items()}


def table(rows: dict[tuple[str, int], dict[str, float]], methods: list[str]) -> str:
    """Milliseconds per step and the ratios issue 13 item 3 names."""
    ratios = [("spectral-p2", "soap"), ("spectral-p2-bf16", "soap"), ("spectral-p2", "adamw")]
    ratios += [(VARIANT, "soap"), (VARIANT, "spectral-p2")]
    ratios = [(a, b) for a, b in ratios if a in methods and b in methods]
    head = ["task", "period", *(f"{LABELS[m]} ms" for m in methods)]
    head += [f"{LABELS[a]} / {LABELS[b]}" for a, b in ratios]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for (task, period), ms in rows.items():
        cells = [task, str(period), *(f"{ms[m]:.1f}" for m in methods)]
        cells += [f"{ms[a] / ms[b]:.2f}" for a, b in ratios]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--periods", type=int, nargs="+", default=[1, 2, 10])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--rounds", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--min-steps", type=int, default=10, help="timed steps per run (at least)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    parser.add_argument("--option", nargs="+", type=parse_option, default=[], metavar="KEY=VALUE")
    parser.add_argument("--block", help="README block NAME (markers <!-- NAME:start/end -->)")
    args = parser.parse_args(argv)
    if min(args.periods) < 1 or args.rounds < 1 or args.min_steps < 1:
        parser.error("--periods, --rounds and --min-steps must be positive")
    variant: contextlib.AbstractContextManager = contextlib.nullcontext()
    if args.option:
        options = dict(args.option)
        LABELS[VARIANT] = "ours, " + ", ".join(f"{k}={v}" for k, v in options.items())
        variant = optimizers.spectral_variant(VARIANT, options, LABELS[VARIANT])
        args.methods = [*args.methods, VARIANT]
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    rows: dict[tuple[str, int], dict[str, float]] = {}
    with variant:
        for task in args.tasks:
            for period in args.periods:
                rows[(task, period)] = bench(task, period, args)
                print(f"  {task} period {period}: {rows[(task, period)]}", file=sys.stderr)
    wall = time.perf_counter() - start
    cmd = " ".join(["bench_nn_step.py", *(argv if argv is not None else sys.argv[1:])])
    header = (
        f"Measured {datetime.date.today().isoformat()} (`{cmd.strip()}`); torch "
        f"{torch.__version__}; {machine()}; {torch.get_num_threads()} thread(s); load average "
        f"{load:.1f} at start; whole run {wall:.0f} s. Forward and backward in "
        f"{'float32' if args.precision == 'fp32' else 'bfloat16 autocast'}; mean CPU "
        f"milliseconds per training step over {args.min_steps}+ steps after the first (a whole "
        "number of periods), "
        f"median of {args.rounds} rounds; `full` = issue 13's sizes, `small` = "
        "`bench_nn_real.py --small`'s; ratios < 1: ours is faster."
    )
    block = f"{header}\n\n{table(rows, list(args.methods))}"
    print(block)
    if not args.no_write:
        where = markers(args.precision)
        if args.block:
            where = (f"<!-- {args.block}:start -->", f"<!-- {args.block}:end -->")
        replace_between(README, *where, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
