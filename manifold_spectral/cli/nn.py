"""``reproduce nn``: NN training (bfloat16 autocast by default, ``--precision``), ``SpectralKron``
vs AdamW, SOAP and Muon, each tuned by random search (paper Sec. 4.4, Figs. 4, 10-12)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _outputs
from .options import Distinct, Reproduction, nonnegative_int, positive_int

__all__ = ["NN_METHODS", "NN_ABLATIONS", "training_arguments", "NN"]


#: ``experiments.nn_training.OPTIMIZERS``, spelled out so ``--help`` stays free of torch
#: (tests/test_real_tasks.py checks that they agree).
NN_METHODS = ("adamw", "soap", "muon", "spectral-p2", "spectral-p1", "spectral-p2-paper")
#: The labels of ``experiments.nn_training.ABLATIONS`` (of ``spectral-p2``), spelled out for
#: ``--no-ablations``'s help (tests/test_cli_outputs.py checks that they agree).
NN_ABLATIONS = ("SpectralKron defaults, bf16 state", "SpectralKron defaults, exact Cayley")


def training_arguments(parser: argparse.ArgumentParser, steps: int = 100, seeds: int = 1) -> None:
    """The comparison's protocol options, shared by ``reproduce nn`` and
    benchmarks/bench_nn_real.py (each with its own default ``steps`` and ``seeds``):
    ``--methods``, ``--trials``, ``--refine``, ``--steps``, ``--seeds``, ``--precision``,
    ``--update-every`` (the arguments of ``nn_training.run_quality`` of the same names)."""
    parser.add_argument(
        "--methods",
        nargs="+",
        action=Distinct,
        choices=NN_METHODS,
        default=list(NN_METHODS),
        help="methods to tune and compare (default: all)",
    )
    parser.add_argument(
        "--trials", type=positive_int, default=8, help="random-search trials per method (8)"
    )
    parser.add_argument(
        "--refine",
        type=nonnegative_int,
        default=0,
        help="refinement rounds after the draws, 2 runs each at the best run's lr divided and "
        "multiplied by half a stratum of the draws, halved every round (0)",
    )
    parser.add_argument(
        "--steps", type=positive_int, default=steps, help=f"steps per run ({steps})"
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=seeds,
        help=f"evaluation seeds for the best trial ({seeds})",
    )
    parser.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="forward/backward under bfloat16 autocast (default) or in float32",
    )
    parser.add_argument(
        "--update-every",
        type=positive_int,
        default=2,
        help="preconditioner period of SOAP and SpectralKron (default 2, as the paper)",
    )


def _nn_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        nargs="+",
        action=Distinct,
        choices=("mlp", "transformer", "stdlib", "digits"),
        default=["mlp"],
        help="tasks (default: mlp; transformer: a small GPT on an order-2 Markov chain; "
        "stdlib: a byte-level GPT on standard-library source text; digits: a conv net on "
        "scikit-learn's digits, needs the baselines extra)",
    )
    training_arguments(parser)
    parser.add_argument(
        "--no-ablations",
        dest="ablations",
        action="store_false",
        help="skip the ablations of 'SpectralKron defaults (ours)' (spectral-p2), run at its "
        f"tuned hyper-parameters: {' and '.join(repr(a) for a in NN_ABLATIONS)}; they run "
        "only when spectral-p2 is among --methods",
    )


def _run_nn(args: argparse.Namespace, out: Path) -> None:
    from ..experiments import nn_training

    result = nn_training.run_quality(
        tasks=args.task,
        methods=args.methods,
        ablations=args.ablations,
        trials=args.trials,
        refine=args.refine,
        steps=args.steps,
        seeds=range(args.seed + 1, args.seed + args.seeds + 1),
        search_seed=args.seed,
        precision=args.precision,
        update_every=args.update_every,
        threads=args.threads,
        progress=args.progress,
        device=args.device,
    )
    _outputs.write_outputs(nn_training, result, out, "nn")


NN = Reproduction(
    "nn",
    "Sec. 4.4 / Fig. 4, 10-12: NN training (bf16 by default), ours vs AdamW, SOAP, Muon (tuned)",
    _nn_arguments,
    _run_nn,
    title=lambda a: (
        f"Sec. 4.4 / Fig. 4, 10-12: {a.precision} NN training, ours vs AdamW, SOAP, Muon (tuned)"
    ),
    needs=lambda a: (
        (["sklearn"] if "digits" in a.task else [])
        + (["pytorch_optimizer"] if {"soap", "muon"} & set(a.methods) else [])
    ),
    device_note="the models, minibatches (drawn on the CPU) and optimizer states; "
    "evaluation runs on the CPU",
    # 3 trials of 40 steps, one seed, the MLP. Three, not two: two stratified draws cut
    # each method's learning-rate range (2.5 decades) in halves, one draw in each, so a
    # method whose good learning rates fill only part of one half is often judged on a draw
    # about a decade from them; three draws, a third of the range each, narrow that gap.
    # benchmarks/bench_reproduce_all.py measures the quick run's time into README.md.
    quick={"trials": 3, "steps": 40},
)
