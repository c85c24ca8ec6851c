"""Held-out check of ``SpectralKron``'s defaults on tasks the tuned benchmarks do not contain.

Issue 13 judges the default "also on tasks that are not named here". This script runs, as an
outsider would, real data that ships offline and that neither the package's tasks nor its
benchmarks use, with models unlike theirs:

* ``cancer``, ``wine``, ``diabetes``: scikit-learn's breast-cancer (569 rows, 2 classes),
  wine (178 rows, 3 classes) and diabetes (442 rows, regression; MSE of the standardised
  target) tables, standardised on the training rows; an MLP ``d -> 64 -> 64 -> k`` (GELU).
* ``digits-mlp``: the 8x8 digits as 64 raw pixels, MLP ``64 -> 128 -> 128 -> 10``.
* ``digits-ae``: an autoencoder ``64 -> 32 -> 8 -> 32 -> 64`` of the digits (squared error
  summed over the 64 pixels).
* ``digits-vit``: a one-layer ViT (``nn.TransformerEncoderLayer``, pre-norm, width 32, two
  heads) on the 16 2x2 patches of a digit, mean-pooled.
* ``stdlib-gru``: a byte-level GRU (embedding 32, hidden 64) on three standard-library
  modules that ``real_tasks.STDLIB_FILES`` does not list, split 90/10 by position (nats/byte).
* ``stdlib-bow``: which of four standard-library modules a source line comes from, from the
  mean embedding of its hashed tokens (``nn.EmbeddingBag(256, 32)``, then ``32 -> 64 -> 4``).

Splits are fixed by a seeded permutation (75/25 for the tables, 80/20 for the digits and the
lines; the digits split differs from ``real_tasks.DigitsTask``'s).

Protocol (issue 13's, in float32, one thread): each optimizer gets a 5-point half-decade lr
grid centred on its usual range (AdamW, SOAP: 3e-4 .. 3e-2 with 1 - beta2 in {1e-3, 5e-2};
Muon: 3e-3 .. 3e-1 with its AdamW lr in {1e-3, 1e-2}; ``SpectralKron(model.parameters(),
lr=...)``: 1e-4 .. 1e-2, the lr alone), extended by up to two points past an edge that wins,
then ``--refine`` rounds (default 1) of two points at the best lr divided and multiplied by
a quarter decade (an eighth in a second round), the best point's second knob kept;
every point trains on seed 0 and the lowest final held-out loss wins; the winner is re-run on
seeds 1 .. ``--seeds``. ``nn_training.train`` runs every training (``nn_training.
lr_schedule``: 5% warm-up, cosine to 10%; no weight decay; fresh minibatches per step; SOAP's
and ours' preconditioners refreshed every step).

Run:  python benchmarks/bench_heldout.py                    # the default tasks, minutes
      python benchmarks/bench_heldout.py --tasks wine stdlib-gru stdlib-bow --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _heldout_tasks import TASKS, Task, make_task  # noqa: E402 (benchmarks/ is on sys.path)
from _readme import machine, replace_between  # noqa: E402
from bench_optim_seeds import parse_option  # noqa: E402

from manifold_spectral._threads import torch_threads
from manifold_spectral.cli.options import nonnegative_int
from manifold_spectral.experiments import nn_training
from manifold_spectral.experiments.nn_training import optimizers

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- heldout:start -->", "<!-- heldout:end -->"
DEFAULT_TASKS = ("cancer", "diabetes", "digits-mlp", "digits-vit")
LABEL = {"adamw": "AdamW", "soap": "SOAP", "muon": "Muon", "spectral-p2": "SpectralKron defaults"}


def _half_decades(lo: float) -> list[float]:
    return [lo * 10 ** (i / 2) for i in range(5)]


#: Each optimizer's grid: its usual lr range in half decades, and its second knob.
GRID: dict[str, list[dict[str, float]]] = {
    "adamw": [{"lr": lr, "1-beta2": b} for lr in _half_decades(3e-4) for b in (1e-3, 5e-2)],
    "soap": [{"lr": lr, "1-beta2": b} for lr in _half_decades(3e-4) for b in (1e-3, 5e-2)],
    "muon": [{"lr": lr, "adamw_lr": a} for lr in _half_decades(3e-3) for a in (1e-3, 1e-2)],
    "spectral-p2": [{"lr": lr} for lr in _half_decades(1e-4)],
}


def _run(task: Task, method: str, hp: dict[str, float], seed: int, steps: int):
    return nn_training.train(task, method, hp, seed, steps, update_every=1, precision="fp32")


def tune(
    task: Task, method: str, steps: int, refine: int = 0
) -> tuple[dict[str, float], dict[float, float]]:
    """The grid on seed 0, extended by one half decade past a winning edge (twice at most),
    then ``refine`` rounds of two points at the best point's lr divided and multiplied by
    ``10 ** (0.5 / 2 ** r)`` in round ``r`` (a quarter decade, then an eighth: a bisection of
    the log-lr around the best, its second knob kept): the best point and the best held-out
    loss per lr (over the second knob)."""
    trials = [(hp, _run(task, method, hp, 0, steps).final) for hp in GRID[method]]
    for _ in range(2):
        best = min(trials, key=lambda t: t[1])[0]
        lrs = sorted({hp["lr"] for hp, _ in trials})
        if best["lr"] not in (lrs[0], lrs[-1]):
            break
        edge, f = (lrs[0], 10**-0.5) if best["lr"] == lrs[0] else (lrs[-1], 10**0.5)
        more = [dict(hp, lr=hp["lr"] * f) for hp, _ in trials if hp["lr"] == edge]
        trials += [(hp, _run(task, method, hp, 0, steps).final) for hp in more]
    for r in range(1, refine + 1):
        best = min(trials, key=lambda t: t[1])[0]
        more = optimizers.lr_neighbours(best, 10**0.5, r)  # the grid's half decade, bisected
        trials += [(hp, _run(task, method, hp, 0, steps).final) for hp in more]
    per_lr: dict[float, float] = {}
    for hp, final in trials:
        per_lr[hp["lr"]] = min(per_lr.get(hp["lr"], math.inf), final)
    return min(trials, key=lambda t: t[1])[0], per_lr


def _mean_se(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan


def measure(
    name: str, steps: int, seeds: int, methods: list[str] | None = None, refine: int = 0
) -> dict[str, dict]:
    """Per method (default: every one of ``GRID``): tuned hp (``tune``), seed-0 grid, and the
    held-out / training-tail losses of seeds 1 .. ``seeds`` at the tuned hp."""
    task, out = make_task(name), {}
    for method in GRID if methods is None else methods:
        best, per_lr = tune(task, method, steps, refine)
        runs = [_run(task, method, best, s, steps) for s in range(1, seeds + 1)]
        out[method] = dict(
            best=best,
            grid=per_lr,
            final=[r.final for r in runs],
            train=[r.train_tail for r in runs],
        )
        print(f"{name:10s} {method:12s} {_mean_se(out[method]['final'])} {best}", file=sys.stderr)
    return out


def format_table(results: dict[str, dict[str, dict]]) -> str:
    """Task x optimizer: held-out mean ± standard error over the seeds (bold: lowest mean),
    training tail, tuned lr; last column: ours minus the best peer."""
    head = "| task | " + " | ".join(LABEL[m] for m in GRID) + " | ours - best peer |"
    lines = [head, "|---|" + "---:|" * (len(GRID) + 1)]
    for name, res in results.items():
        means = {m: _mean_se(r["final"])[0] for m, r in res.items()}
        low = min(means, key=means.get)
        cells = []
        for m, r in res.items():
            mu, se = _mean_se(r["final"])
            txt = f"{mu:.4f} ± {se:.4f}"
            txt = f"**{txt}**" if m == low else txt
            cells.append(f"{txt} (train {np.mean(r['train']):.4f}, lr {r['best']['lr']:.2g})")
        peer = min(v for m, v in means.items() if m != "spectral-p2")
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {means['spectral-p2'] - peer:+.4f} |"
        )
    return "\n".join(lines)


def format_grid(results: dict[str, dict[str, dict]]) -> str:
    """Task x optimizer: the seed-0 held-out loss of every lr of the grid (best second knob)
    relative to the winner's, lowest lr first: how sharp each optimizer's lr basin is, i.e.
    what a half decade off the best lr costs."""
    lines = ["| task | " + " | ".join(LABEL[m] for m in GRID) + " |", "|---|" + "---|" * len(GRID)]
    for name, res in results.items():
        cells = []
        for r in res.values():
            best = min(r["grid"].values())
            cells.append(" ".join(f"{r['grid'][lr] / best:.2f}" for lr in sorted(r["grid"])))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The registered name of ``--option``'s variant of the defaults, tuned on the defaults' grid.
VARIANT = "_heldout_variant"


def format_option(results: dict[str, dict[str, dict]], label: str) -> str:
    """Task x (defaults, the variant): held-out mean ± standard error at each one's tuned lr,
    and the difference per seed (the same seeds: the same data and initialisation)."""
    lines = [
        f"| task | SpectralKron defaults | `{label}` | `{label}` minus defaults (per seed) "
        "| lower on |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        cells = []
        for r in res.values():
            mu, se = _mean_se(r["final"])
            cells.append(f"{mu:.4f} ± {se:.4f} (lr {r['best']['lr']:.2g})")
        d = np.asarray(res[VARIANT]["final"]) - np.asarray(res["spectral-p2"]["final"])
        mu, se = _mean_se(list(d))
        lower = f"{int((d < 0).sum())}/{d.size}"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {mu:+.4f} ± {se:.4f} | {lower} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds 1 .. N")
    parser.add_argument(
        "--refine",
        type=nonnegative_int,
        default=1,
        help="rounds of two points at the best lr divided and multiplied by a quarter decade, "
        "then an eighth, ... (the same for every optimizer; default 1)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    parser.add_argument(
        "--option",
        type=parse_option,
        nargs="+",
        help="key=value ...: the defaults against the defaults with these SpectralKron "
        "options, each tuned on the defaults' grid (no peers); writes --block",
    )
    parser.add_argument("--block", default=None, help="README block NAME (with --option)")
    args = parser.parse_args(argv)
    if (args.option is None) != (args.block is None) and not args.no_write:
        parser.error("--option and --block go together (or --no-write)")
    methods = None
    variant: contextlib.AbstractContextManager = contextlib.nullcontext()
    if args.option is not None:
        options = dict(args.option)
        label = ", ".join(f"{k}={v!r}" for k, v in options.items())
        variant = optimizers.spectral_variant(VARIANT, options, label)
        GRID[VARIANT] = GRID["spectral-p2"]
        methods = ["spectral-p2", VARIANT]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    try:
        with variant, torch_threads(1):
            results = {
                name: measure(name, args.steps, args.seeds, methods, args.refine)
                for name in args.tasks
            }
    finally:
        GRID.pop(VARIANT, None)  # registered for this run only
    describe = "; ".join(f"`{n}`: {make_task(n).describe}" for n in args.tasks)
    header = (
        f"Measured {datetime.date.today().isoformat()} "
        f"(`{' '.join(['bench_heldout.py', *(argv if argv is not None else sys.argv[1:])])}`); "
        f"{args.steps} steps, float32, one thread; held-out loss mean ± standard error over "
        f"seeds 1-{args.seeds} at the lr (and second knob) that won on seed 0; train: the mean "
        f"training minibatch loss over the last 10% of the steps; torch {torch.__version__}; "
        f"{machine()}; load average {load:.1f} at start; run {time.perf_counter() - t0:.0f} s. "
        f"Tasks: {describe}."
    )
    grid = (
        "Seed-0 held-out loss at each lr of the grid (lowest lr first, half a decade apart, "
        "with the edge extensions"
        + (f" and {args.refine} refinement round(s) around the best" if args.refine else "")
        + "), divided by the winner's:"
    )
    if methods is None:
        block = f"{header}\n\n{format_table(results)}\n\n{grid}\n\n{format_grid(results)}"
        start, end = START, END
    else:
        block = f"{header}\n\n{format_option(results, label)}"
        start, end = f"<!-- {args.block}:start -->", f"<!-- {args.block}:end -->"
    print(block)
    if not args.no_write:
        replace_between(README, start, end, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
