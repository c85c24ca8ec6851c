"""Training quality: SpectralKron (p = 1, 2) vs AdamW, SOAP and Muon, each tuned by random search.

The comparison of ``manifold_spectral.experiments.nn_training`` (paper Sec. 4.4, Fig. 4 and
10-12 at CPU scale): a small transformer on an order-2 Markov chain and an MLP on a
teacher-student task, data generated on the fly; ``trials`` random-search draws per method
(learning rate and one key knob, log-uniform) on seed 0, the best draw re-run on ``seeds``
fresh seeds, and the ablations of ``spectral p=2`` at its tuned hyper-parameters: float32
instead of bfloat16 state (Fig. 4) and exact instead of truncated (Neumann) Cayley (Fig. 10).
Forward/backward under bfloat16 autocast; SOAP and ours refresh their preconditioners every
2 steps.

Prints the table, writes the plots (loss vs steps and vs seconds) and, unless ``--no-write``,
the table into benchmarks/README.md between the ``optim-quality`` markers.

Run:  python benchmarks/bench_optim_quality.py                 # default, ~6 min on 2 cores
      python benchmarks/bench_optim_quality.py --big           # 2 blocks, 600 steps, 16 trials
      python benchmarks/bench_optim_quality.py --tasks mlp --trials 8 --steps 300 --seeds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral.experiments import nn_training

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- optim-quality:start -->", "<!-- optim-quality:end -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["transformer", "mlp"])
    parser.add_argument("--methods", nargs="+", default=list(nn_training.OPTIMIZERS))
    parser.add_argument("--trials", type=int, default=None, help="per method (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="per run (default 200)")
    parser.add_argument("--seeds", type=int, default=None, help="evaluation seeds (default 2)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--update-every", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--big",
        action="store_true",
        help="a 2-block transformer (d=64) and 600 steps, 16 trials, 3 seeds (about 1 hour)",
    )
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--cache", type=Path, help="directory of finished runs (read instead of trained)"
    )
    args = parser.parse_args(argv)
    trials = args.trials or (16 if args.big else 8)
    steps = args.steps or (600 if args.big else 200)
    seeds = args.seeds or (3 if args.big else 2)
    task_kw = {"transformer": {"model": {"layers": 2}}} if args.big else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = nn_training.run_quality(
        tasks=args.tasks,
        methods=args.methods,
        ablations=args.ablations,
        trials=trials,
        steps=steps,
        seeds=range(1, seeds + 1),
        precision=args.precision,
        update_every=args.update_every,
        threads=args.threads,
        task_kw=task_kw,
        progress=args.progress,
        cache=args.cache,
    )
    command = " ".join(["bench_optim_quality.py", *(argv if argv is not None else sys.argv[1:])])
    header = (
        f"Measured {datetime.date.today().isoformat()} (`{command}`); "
        f"torch {torch.__version__}; {machine()}; load average {load:.1f} at start."
    )
    block = f"{header}\n\n{nn_training.format_table(result)}"
    print(block)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"optim_quality_{args.precision}.png"
    nn_training.plot(result, png)
    print(f"\nplot: {png}", file=sys.stderr)
    if not args.no_write:
        replace_between(README, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
