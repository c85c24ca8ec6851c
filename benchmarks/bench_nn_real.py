"""Training quality on real data: SpectralKron vs AdamW, SOAP and Muon, each tuned by random search.

Tasks (``manifold_spectral.experiments.real_tasks``, nothing downloaded):

* ``stdlib``: a byte-level GPT (``TinyGPT``, vocabulary 256) on the source text of a fixed
  list of 12 Python standard-library files (``real_tasks.STDLIB_FILES``), concatenated in
  order; first 90% of the bytes train, last 10% validate; loss: validation bits per byte on
  fixed, evenly spaced windows.
* ``digits``: a conv net (3x3 convolutions, max-pool, linear head) on scikit-learn's 8x8
  digits, split by a seeded permutation (80% train / 20% test); loss: test cross-entropy.

Protocol (the same for every optimizer; ``nn_training.run_quality``):

1. Random search: ``--trials`` draws per optimizer of its learning rate and one key knob
   (AdamW and SOAP: 1 - beta2; Muon: its AdamW lr for embeddings, head and vectors; the
   paper's scheme: damping; SpectralKron's defaults: none, the learning rate only),
   log-uniform and stratified over the ranges of ``nn_training.OPTIMIZERS``, each trained on
   seed 0; then ``--refine`` rounds of two runs at the best run's learning rate divided and
   multiplied by half a stratum of the draws, the step halved every round (the draws leave
   up to two strata unseen around the best one; ``OptimizerSpec.neighbours``); the best
   trial (lowest final held-out loss) wins. Same budget for all.
2. The best trial is re-run on seeds 1 .. ``--seeds`` (default 3: fresh initialisation and
   minibatch order per seed, identical across optimizers); the table reports the mean and
   each seed.
3. Schedule: linear warm-up over 5% of the steps, then cosine decay to 10% of the lr, for
   every optimizer. Weight decay: none, for every optimizer. SOAP and ours refresh their
   preconditioners every ``--update-every`` steps. "SpectralKron defaults" is
   ``SpectralKron(model.parameters(), lr=..., update_every=...)``; the paper's scheme runs
   ``nn_training.PAPER_SCHEME``.
4. Forward and backward under bfloat16 autocast (``--precision bf16``, default) or in
   float32 (``--precision fp32``). Time is training time only (forward, backward, step).

Writes ``nn_real_<precision>.png`` (held-out loss vs steps and vs training seconds, mean of
the seeds), ``nn_real_<precision>.csv`` (every evaluation point of every run) under
``--out``, and, unless ``--no-write``, the table into benchmarks/README.md between the
``nn-real-<precision>`` markers.

Run:  python benchmarks/bench_nn_real.py                     # full size (hours on a CPU)
      python benchmarks/bench_nn_real.py --small --precision fp32 --trials 3 --steps 60
                                                             # minutes on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
from pathlib import Path

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral.cli.nn import training_arguments
from manifold_spectral.experiments import nn_training

README = Path(__file__).resolve().parent / "README.md"


def markers(block: str) -> tuple[str, str]:
    """The README block ``nn-real-<block>`` (default: the precision, one table per autocast
    setting; ``--block`` names another, e.g. a run at the full sizes)."""
    return f"<!-- nn-real-{block}:start -->", f"<!-- nn-real-{block}:end -->"


#: Task sizes: issue 13's (GPT: 4 layers, width 128, context 128, batch 32; conv 32/64) and
#: the ``--small`` ones that run in minutes on 2 CPU cores.
SIZES = {
    "full": {
        "stdlib": {"seq_len": 128, "batch": 32, "model": dict(dim=128, heads=4, ff=512, layers=4)},
        "digits": {"batch": 64, "channels": (32, 64)},
    },
    "small": {
        "stdlib": {"seq_len": 32, "batch": 8, "model": dict(dim=32, heads=2, ff=64, layers=1)},
        "digits": {"batch": 32, "channels": (8, 16)},
    },
}


def write_csv(result: nn_training.QualityResult, path: Path) -> None:
    """One row per evaluation point of every seed run (the tuned draws)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "method", "hp", "seed", "step", "train_seconds", "eval_loss"])
        for t in result.tasks:
            for m, runs in t.runs.items():
                for r in runs:
                    secs = [0.0, *r.seconds.tolist()]
                    for k, loss in zip(r.eval_steps, r.eval_loss, strict=True):
                        w.writerow([t.task, m, json.dumps(r.hp), r.seed, k, f"{secs[k]:.4f}", loss])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["stdlib", "digits"])
    training_arguments(parser, steps=400, seeds=3)  # the options of `reproduce nn`
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="the small task sizes (CPU)")
    parser.add_argument("--ablations", action="store_true", help="fp32 state, exact Cayley")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    parser.add_argument(
        "--block", help="README block nn-real-BLOCK to write (default: the precision)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="directory of finished runs: read instead of trained, trained ones stored "
        "(an interrupted run resumes; any change of the package's source is a miss)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    size = "small" if args.small else "full"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = nn_training.run_quality(
        tasks=args.tasks,
        methods=args.methods,
        ablations=args.ablations,
        trials=args.trials,
        refine=args.refine,
        steps=args.steps,
        seeds=range(1, args.seeds + 1),
        precision=args.precision,
        update_every=args.update_every,
        threads=args.threads,
        task_kw=SIZES[size],
        progress=args.progress,
        cache=args.cache,
    )
    header = (
        f"Measured {datetime.date.today().isoformat()} at the **{size}** task sizes "
        f"(`{' '.join(['bench_nn_real.py', *(argv if argv is not None else sys.argv[1:])])}`); "
        f"{args.steps} steps; torch {torch.__version__}; {machine()}; load average {load:.1f} "
        "at start."
    )
    block = f"{header}\n\n{nn_training.format_table(result)}"
    print(block)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"nn_real_{args.precision}.png"
    nn_training.plot(result, png)
    write_csv(result, args.out / f"nn_real_{args.precision}.csv")
    print(f"\nplot: {png}; csv: {png.with_suffix('.csv')}", file=sys.stderr)
    if not args.no_write:
        replace_between(README, *markers(args.block or args.precision), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
