"""Command line: ``manifold-spectral reproduce <experiment> [options]`` (also ``python -m
manifold_spectral``).

Every reproduction is one ``Reproduction`` entry in ``REPRODUCTIONS``: a function
adding its options to an argparse sub-parser, a function running it from the parsed options,
and the option overrides ``reproduce all`` uses for a quick run. Each run prints its table,
writes its PNG plots, the table as text and as CSV (one file per table) and the result
(curves and settings) as JSON under ``--out``, and prints its wall time.
Experiments are imported lazily, so ``--help`` stays fast. Every subcommand also takes the
run-time options of ``_runtime_arguments`` (``--device``, ``--threads``, ``--seed``). Plots
and progress bars need the ``plots`` extra; without it a run stops before it starts, saying
``pip install 'manifold_spectral[plots]'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._outputs import run_rows as _run_rows
from ._outputs import write_data as _write_data  # noqa: F401 (tests use cli._write_data)
from ._outputs import write_outputs as _write_outputs

__all__ = ["main", "build_parser", "Reproduction", "REPRODUCTIONS"]


# Argument types: argparse turns ArgumentTypeError into "error: argument --x: ..." + exit 2.


def _argument_type(
    convert: Callable[[str], Any], valid: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert(text)`` if it succeeds and is ``valid``, else an
    ``ArgumentTypeError`` saying what was ``expected``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected.replace(" ", "_")
    return parse


positive_int = _argument_type(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _argument_type(int, lambda v: v >= 0, "an integer >= 0")
#: A float strictly between 0 and 1 (a step size of a moving average).
unit_interval = _argument_type(
    float, lambda v: math.isfinite(v) and 0 < v < 1, "a number in (0, 1)"
)
#: A finite float > 0 (a step size).
positive_float = _argument_type(float, lambda v: math.isfinite(v) and v > 0, "a number > 0")


# Registry ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """One paper reproduction behind ``manifold-spectral reproduce <name>``.

    ``add_arguments(parser)`` adds the experiment's own options (``--out`` and
    ``--no-progress`` are common); ``run(args, out)`` runs it, prints its table and writes
    its files under the directory ``out``; ``quick`` overrides option defaults for
    ``reproduce all``.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Path], None]
    quick: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Devices the run supports (``--device``); the others are refused before it starts.
    devices: tuple[str, ...] = ("cpu", "cuda")
    #: Why a CPU-only run cannot use an accelerator (said by ``--help`` and the refusal).
    cpu_only: str = ""
    #: What ``--device`` moves and what it leaves on the CPU (said by ``--help``).
    device_note: str = ""


def _moving_average_arguments(
    parser: argparse.ArgumentParser, steps_help: str, init_help: str
) -> None:
    """Options shared by the two curvature-tracking reproductions (Figs. 1-2)."""
    parser.add_argument("--steps", type=positive_int, default=None, help=steps_help)
    parser.add_argument(
        "--beta2",
        type=unit_interval,
        nargs="+",
        default=[1e-2, 1e-3],
        metavar="BETA2",
        help="one or more step sizes in (0, 1); one plot row each (default: 0.01 0.001)",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
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
    from .experiments import curvature

    def run(beta2: float) -> Any:
        return curvature.run_full_matrix(
            n=args.n,
            steps=args.steps,
            beta2=beta2,
            seed=args.seed,
            progress=args.progress,
            init=args.init,
            w2=args.w2,
            num_threads=args.threads,
            device=args.device,
        )

    _run_rows(run, args.beta2, out, "curvature_full")


def _kronecker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a", type=positive_int, default=9, help="left factor size (default 9)")
    parser.add_argument("--b", type=positive_int, default=11, help="right factor size (default 11)")
    _moving_average_arguments(
        parser,
        steps_help="gradients per run (default: 10 / beta2, capped at 5000 to keep the run short)",
        init_help="S0: random Kronecker factors (default) or the NKP of a sample covariance",
    )


def _run_kronecker(args: argparse.Namespace, out: Path) -> None:
    from .experiments import curvature_kronecker

    def run(beta2: float) -> Any:
        return curvature_kronecker.run_kronecker(
            a=args.a,
            b=args.b,
            steps=args.steps,
            beta2=beta2,
            seed=args.seed,
            progress=args.progress,
            init=args.init,
            w2=args.w2,
            num_threads=args.threads,
            device=args.device,
        )

    _run_rows(run, args.beta2, out, "curvature_kronecker")


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
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")


def _run_spd(args: argparse.Namespace, out: Path) -> None:
    from .experiments import spd

    result = spd.run_spd(
        d=args.d,
        steps_nearness=args.steps_nearness,
        steps_logdet=args.steps_logdet,
        lr_nearness=args.lr_nearness,
        lr_logdet=args.lr_logdet,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=args.progress,
        num_threads=args.threads,
        device=args.device,
    )
    _write_outputs(spd, result, out, "spd")


def _nn_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        nargs="+",
        choices=("mlp", "transformer", "stdlib", "digits"),
        default=["mlp"],
        help="tasks (default: mlp; transformer: a small GPT on an order-2 Markov chain; "
        "stdlib: a byte-level GPT on standard-library source text; digits: a conv net on "
        "scikit-learn's digits, needs the baselines extra)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=("adamw", "soap", "muon", "spectral-p2", "spectral-p1", "spectral-p2-paper"),
        default=["adamw", "soap", "muon", "spectral-p2", "spectral-p1", "spectral-p2-paper"],
        help="methods to tune and compare (default: all)",
    )
    parser.add_argument(
        "--trials", type=positive_int, default=8, help="random-search trials per method (8)"
    )
    parser.add_argument("--steps", type=positive_int, default=100, help="steps per run (100)")
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="evaluation seeds for the best draw (1)"
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
    parser.add_argument(
        "--no-ablations",
        dest="ablations",
        action="store_false",
        help="skip the fp32-state and exact-Cayley runs of spectral p=2",
    )


def _run_nn(args: argparse.Namespace, out: Path) -> None:
    from .experiments import nn_training

    result = nn_training.run_quality(
        tasks=args.task,
        methods=args.methods,
        ablations=args.ablations,
        trials=args.trials,
        steps=args.steps,
        seeds=range(args.seed + 1, args.seed + args.seeds + 1),
        search_seed=args.seed,
        precision=args.precision,
        update_every=args.update_every,
        threads=args.threads,
        progress=args.progress,
        device=args.device,
    )
    _write_outputs(nn_training, result, out, "nn")


#: ``experiments.nes.APPENDIX_C`` and ``DEFAULT_METHODS``, spelled out so ``--help`` stays
#: free of torch (tests/test_experiment_nes.py checks that they agree).
NES_FUNCTIONS = ("ackley", "rosenbrock", "bohachevsky", "schaffer", "griewank")
NES_METHODS = ("spectral", "xnes", "cholesky", "cma", "xnes-plain")


def _nes_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=positive_int, default=60, help="dimension (default 60)")
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
        choices=NES_FUNCTIONS,
        default=list(NES_FUNCTIONS),
        help="App. C problems (default: all five)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=NES_METHODS,
        default=list(NES_METHODS),
        help="methods (default: all)",
    )


def _run_nes(args: argparse.Namespace, out: Path) -> None:
    from .experiments import nes

    result = nes.run_nes(
        n=args.n,
        seeds=args.seeds,
        max_evals=args.max_evals,
        functions=args.functions,
        methods=args.methods,
        progress=args.progress,
        threads=args.threads,
        seed=args.seed,
        device=args.device,
    )
    _write_outputs(nes, result, out, "nes")


#: ``experiments.bbob.METHODS``, spelled out so ``--help`` stays free of torch.
BBOB_METHODS = ("nes", "nes-ipop", "cma", "cma-ipop")


def _bbob_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dims", type=positive_int, nargs="+", default=[10], help="dimensions (default 10)"
    )
    parser.add_argument(
        "--functions",
        type=_argument_type(int, lambda v: 1 <= v <= 24, "a BBOB function id in 1..24"),
        nargs="+",
        default=[1, 2, 8, 10, 11, 12, 13, 14],
        help="BBOB functions (default: 1 2 8 10 11 12 13 14; at D = 20 only 1 2 8 10 11 12 "
        "14 run); the whole protocol is benchmarks/bench_bbob.py",
    )
    parser.add_argument(
        "--instances", type=positive_int, nargs="+", default=[1, 2, 3], help="(default 1 2 3)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=BBOB_METHODS,
        default=list(BBOB_METHODS),
        help="spectral NES and pycma, without restarts and with IPOP (default: all four)",
    )
    parser.add_argument(
        "--budget", type=positive_float, default=2e4, help="evaluations / D (default 2e4)"
    )


def _run_bbob(args: argparse.Namespace, out: Path) -> None:
    from .experiments import bbob

    result = bbob.run_bbob(
        dims=args.dims,
        functions=args.functions,
        instances=args.instances,
        methods=args.methods,
        budget=args.budget,
        progress=args.progress,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
    )
    _write_outputs(bbob, result, out, "bbob")


_SAME_NUMBERS = (
    "the problem and the gradient stream are drawn on the CPU and moved (the same numbers)"
)

REPRODUCTIONS: dict[str, Reproduction] = {
    r.name: r
    for r in [
        Reproduction(
            "curvature",
            "Sec. 4.1 / Fig. 2, 7: curvature learning from a gradient stream (full matrix)",
            _curvature_arguments,
            _run_curvature,
            device_note=_SAME_NUMBERS,
            quick={},  # the defaults are already small: about 15-20 s on 2 CPU cores
        ),
        Reproduction(
            "kronecker",
            "Sec. 4.1 / Fig. 2 right, 8: curvature learning with Kronecker structure (9 x 11)",
            _kronecker_arguments,
            _run_kronecker,
            device_note=_SAME_NUMBERS,
            # beta2 = 0.01 only (1000 steps, ten time constants): about 6 s on 2 CPU cores;
            # the defaults (0.01 and 0.001, 1000 and 5000 steps) take about 30 s.
            quick={"beta2": [1e-2]},
        ),
        Reproduction(
            "spd",
            "Sec. 4.2 / Fig. 3 left: SPD matrix optimisation (metric nearness, log-det), d = 60",
            _spd_arguments,
            _run_spd,
            device_note="the problems are drawn on the CPU and moved",
            quick={},  # the defaults are already small: about 3-5 s on 2 CPU cores
        ),
        Reproduction(
            "nn",
            "Sec. 4.4 / Fig. 4, 10-12: bf16 NN training, ours vs AdamW, SOAP, Muon (tuned)",
            _nn_arguments,
            _run_nn,
            device_note="the models, minibatches (drawn on the CPU) and optimizer states; "
            "evaluation runs on the CPU",
            # 2 trials of 40 steps, one seed, the MLP: about 6 s on 2 CPU cores (the
            # defaults, 8 trials of 100 steps, take about 35 s).
            quick={"trials": 2, "steps": 40},
        ),
        Reproduction(
            "nes",
            "Sec. 4.3 / Fig. 3 right, 9: gradient-free NES on the App. C problems, d = 60",
            _nes_arguments,
            _run_nes,
            device_note="the NES states and samples (drawn by a generator on that device, so "
            "cuda gives other, equally valid runs); CMA-ES (pycma, numpy) stays on the CPU",
            # one seed, 10000 evaluations (Ackley and Griewank converge). The defaults (three
            # seeds, 50000 evaluations) are timed by benchmarks/bench_reproduce_nes.py, which
            # writes the measured time into docs/nes.md.
            quick={"seeds": 1, "max_evals": 10_000},
        ),
        Reproduction(
            "bbob",
            "issue 14: spectral NES vs (IPOP-)CMA-ES on COCO's BBOB suite (needs cocoex, "
            "pip coco-experiment)",
            _bbob_arguments,
            _run_bbob,
            device_note="spectral NES's state only; COCO's functions and pycma are numpy "
            "(at these sizes cuda is slower than the CPU)",
            # f1 at D = 5, instance 1, all four methods: seconds (the defaults are 8
            # functions x 3 instances x 4 methods at D = 10).
            quick={"functions": [1], "instances": [1], "dims": [5]},
        ),
    ]
}


# Parser and entry point --------------------------------------------------------------------


def _has_option(parser: argparse.ArgumentParser, flag: str) -> bool:
    return any(flag in action.option_strings for action in parser._actions)


def _runtime_arguments(parser: argparse.ArgumentParser, device_help: str) -> None:
    """The run-time options every subcommand takes (one factory; a subcommand that defines
    one of them itself keeps its own): ``--device``, ``--threads``, ``--seed``."""
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="cpu",
        help=device_help,
    )
    if not _has_option(parser, "--threads"):
        parser.add_argument(
            "--threads",
            type=positive_int,
            default=1,
            help="torch intra-op threads (default 1: these sizes gain nothing from more, "
            "and more oversubscribe a loaded machine)",
        )
    if not _has_option(parser, "--seed"):
        parser.add_argument("--seed", type=nonnegative_int, default=0, help="base random seed")


def _device_help(rep: Reproduction | None) -> str:
    """``--device``'s help: what it moves, or why the run is CPU-only."""
    if rep is not None and "cuda" not in rep.devices:
        return f"cpu only (--device cuda is refused): {rep.cpu_only}"
    where = "where the torch computations run: cpu (default), cuda, or auto (cuda when available)"
    if rep is None:  # reproduce all
        cpu = [r.name for r in REPRODUCTIONS.values() if "cuda" not in r.devices]
        return f"{where}; the CPU-only reproductions ({', '.join(cpu)}) run on the CPU, saying so"
    return f"{where}; {rep.device_note}" if rep.device_note else where


def _common_arguments(parser: argparse.ArgumentParser, rep: Reproduction | None = None) -> None:
    _runtime_arguments(parser, _device_help(rep))
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        help="directory for plots and tables (default: results/)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manifold-spectral",
        description="Spectral-factorized curvature learning (Lin et al., ICML 2025): "
        "reproduce the paper's experiments.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    reproduce = commands.add_parser(
        "reproduce", help="run a paper reproduction; tables on stdout, PNGs under --out"
    )
    experiments = reproduce.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    # The leaf parsers, so that main() reports an unknown option with the subcommand's usage.
    parser.subcommand_parsers = {}  # type: ignore[attr-defined]
    for rep in REPRODUCTIONS.values():
        sub = experiments.add_parser(rep.name, help=rep.help, description=rep.help)
        rep.add_arguments(sub)
        _common_arguments(sub, rep)
        parser.subcommand_parsers[rep.name] = sub  # type: ignore[attr-defined]
    every = experiments.add_parser(
        "all",
        help="every reproduction above with its quick defaults",
        description="Run every available reproduction with its quick defaults: "
        + "; ".join(f"{r.name} ({_quick_settings(r)})" for r in REPRODUCTIONS.values())
        + f". The {_expected_time()}.",
    )
    _common_arguments(every)
    parser.subcommand_parsers["all"] = every  # type: ignore[attr-defined]
    return parser


def _quick_settings(rep: Reproduction) -> str:
    """``rep``'s quick overrides against its defaults, e.g. ``"seeds=1 (default 3)"``."""
    if not rep.quick:
        return "its defaults"
    sub = argparse.ArgumentParser(add_help=False)
    rep.add_arguments(sub)
    defaults = sub.parse_args([])
    return ", ".join(
        f"{k.replace('_', '-')}={v} (default {getattr(defaults, k)})" for k, v in rep.quick.items()
    )


def _quick_args(rep: Reproduction, common: argparse.Namespace) -> argparse.Namespace:
    """Defaults of ``rep``'s options, its quick overrides, and ``all``'s common options."""
    sub = argparse.ArgumentParser(add_help=False)
    rep.add_arguments(sub)
    _common_arguments(sub)
    args = sub.parse_args([])
    shared = ("out", "progress", "device", "threads", "seed")
    for key, value in {**rep.quick, **{k: getattr(common, k) for k in shared}}.items():
        setattr(args, key, value)
    return args


def _resolve_device(rep: Reproduction, device: str) -> str:
    """``--device`` as a torch device name: ``auto`` is cuda when available; ``ValueError``
    for cuda without CUDA or for a reproduction that runs on the CPU only."""
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and "cuda" in rep.devices else "cpu"
    elif not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available (torch.cuda.is_available())")
    if device not in rep.devices:
        raise ValueError(
            f"reproduce {rep.name} runs on the CPU only ({rep.cpu_only}); use --device cpu or auto"
        )
    return device


def _check_plots(progress: bool) -> None:
    """Fail before a run (not after it, at the plot) when the ``plots`` extra is missing."""
    from ._compat import require

    require("matplotlib", "manifold-spectral reproduce (its plots)")
    if progress:
        require("tqdm", "manifold-spectral reproduce (its progress bars; or --no-progress)")


def _run_one(rep: Reproduction, args: argparse.Namespace) -> None:
    args.device = _resolve_device(rep, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"== reproduce {rep.name}: {rep.help}", flush=True)
    start = time.perf_counter()
    rep.run(args, out)
    print(f"wall time ({rep.name}): {time.perf_counter() - start:.1f} s", flush=True)


def _expected_time() -> str:
    """The measured wall time of ``reproduce all`` (``_measured.REPRODUCE_ALL``, written by
    benchmarks/bench_reproduce_all.py), as a sentence; says so when there is none."""
    from ._measured import REPRODUCE_ALL as m

    if not m:
        return "expected wall time: not measured yet (benchmarks/bench_reproduce_all.py)"
    return (
        f"expected wall time: about {m['wall_s']:.0f} s ({m['wall_s'] / 60:.1f} min) on "
        f"{m['cpus']} CPU cores, measured {m['date']} by benchmarks/bench_reproduce_all.py "
        f"(load average {m['load']:.1f}; a busier machine takes longer)"
    )


def _run_all(args: argparse.Namespace) -> None:
    """Every reproduction with its quick settings, saying them and the expected time first."""
    print(f"reproduce all: {_expected_time()}", flush=True)
    start = time.perf_counter()
    for rep in REPRODUCTIONS.values():
        quick = _quick_args(rep, args)
        print(f"quick settings of {rep.name}: {_quick_settings(rep)}", flush=True)
        if quick.device == "cuda" and "cuda" not in rep.devices:
            print(f"reproduce {rep.name}: CPU only, running on the CPU", flush=True)
            quick.device = "cpu"
        _run_one(rep, quick)
    print(f"wall time (all): {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``manifold-spectral``; returns the exit status (argparse exits with 2
    on bad arguments, this returns 1 when a run fails with a user-facing error)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top-level one
        sub = parser.subcommand_parsers[args.experiment]  # type: ignore[attr-defined]
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        _check_plots(args.progress)
        if args.experiment == "all":
            _run_all(args)
        else:
            _run_one(REPRODUCTIONS[args.experiment], args)
    except (ValueError, TypeError, OSError, FloatingPointError, ImportError) as exc:
        print(f"manifold-spectral: error: {exc}", file=sys.stderr)
        return 1
    return 0
