"""Command line: ``manifold-spectral reproduce <experiment> [options]`` (also ``python -m
manifold_spectral``).

Every reproduction is one ``Reproduction`` entry in ``REPRODUCTIONS``: a function
adding its options to an argparse sub-parser, a function running it from the parsed options,
and the option overrides ``reproduce all`` uses for a quick run. Each run prints its table,
writes its PNG plots, the table as text and as CSV (one file per table) and the result
(curves and settings) as JSON under ``--out``, and prints its wall time.
Experiments are imported lazily, so ``--help`` stays fast. Every subcommand also takes the
run-time options of ``options.runtime_arguments`` (``--device``, ``--threads``, ``--seed``).
Plots and progress bars need the ``plots`` extra, and some options need modules of the
``baselines`` extra (``Reproduction.needs``); a run that misses any of them stops before it
starts, naming every missing module and one pip command for all their extras (e.g.
``pip install 'manifold_spectral[plots,baselines]'``). An unwritable ``--out`` and option
values the run would refuse (``Reproduction.check``) also stop it before it starts.

The modules: ``options`` (argument types, ``Reproduction``, the run-time options), one module
per group of subcommands (``curvature``: curvature and kronecker; ``spd``; ``nn``; ``nes``:
nes and bbob), ``parser`` (``REPRODUCTIONS``, ``build_parser``, the quick settings of
``reproduce all``) and this one, the entry point ``main``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .._outputs import write_data as _write_data  # noqa: F401 (tests use cli._write_data)
from .nes import BBOB_METHODS, NES_FUNCTIONS, NES_METHODS
from .options import (
    Reproduction,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from .parser import REPRODUCTIONS, build_parser, expected_time, quick_args, quick_settings

__all__ = [
    "main",
    "build_parser",
    "Reproduction",
    "REPRODUCTIONS",
    "quick_settings",
    "positive_int",
    "nonnegative_int",
    "unit_interval",
    "positive_float",
    "NES_FUNCTIONS",
    "NES_METHODS",
    "BBOB_METHODS",
]

#: ``expected_time`` under its name before the split (tests use ``cli._expected_time``).
_expected_time = expected_time


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


def _check_extras(name: str, progress: bool, baselines: list[str]) -> None:
    """Fail before a run (not after it, at the plot, or half-way) when a module of an extra
    that it needs is missing: matplotlib (and tqdm unless ``--no-progress``) of ``plots``,
    ``baselines`` (the modules these options need) of ``baselines``. Every missing module is
    named in one error, with one pip command for every extra they belong to, so that one
    install is enough (not one error, then another after installing the first extra)."""
    import importlib.util

    wanted = {"matplotlib": "plots", **({"tqdm": "plots"} if progress else {})}
    wanted.update({m: "baselines" for m in baselines if m not in wanted})
    # Found, not imported: importing cma without matplotlib warns before the error below.
    missing = [(m, extra) for m, extra in wanted.items() if importlib.util.find_spec(m) is None]
    if not missing:
        return
    extras = ",".join(e for e in ("plots", "baselines") if e in {x for _, x in missing})
    names = ", ".join(
        m + (" (for progress bars; or --no-progress)" if m == "tqdm" else "") for m, _ in missing
    )
    raise ImportError(
        f"manifold-spectral reproduce {name} needs {names}, which "
        f"{'is' if len(missing) == 1 else 'are'} not installed: "
        f"pip install 'manifold_spectral[{extras}]'"
    )


def _all_baselines(args: argparse.Namespace) -> list[str]:
    """``reproduce all``: the modules of the ``baselines`` extra its quick runs need."""
    modules: list[str] = []
    for rep in REPRODUCTIONS.values():
        modules += [m for m in rep.baselines(quick_args(rep, args)) if m not in modules]
    return modules


def _check_out(out: Path) -> None:
    """``--out`` is a writable directory, or can be created as one: checked before a run."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ValueError(f"--out {out}: not a writable directory ({exc})") from None


def _run_one(rep: Reproduction, args: argparse.Namespace) -> None:
    args.device = _resolve_device(rep, args.device)
    out = Path(args.out)
    _check_out(out)
    print(f"== reproduce {rep.name}: {rep.header(args)}", flush=True)
    start = time.perf_counter()
    rep.run(args, out)
    print(f"wall time ({rep.name}): {time.perf_counter() - start:.1f} s", flush=True)


def _run_all(args: argparse.Namespace) -> None:
    """Every reproduction with its quick settings, saying them and the expected time first."""
    print(f"reproduce all: {expected_time()}", flush=True)
    start = time.perf_counter()
    for rep in REPRODUCTIONS.values():
        quick = quick_args(rep, args)
        print(f"quick settings of {rep.name}: {quick_settings(rep)}", flush=True)
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
    rep = REPRODUCTIONS.get(args.experiment)
    problem = rep.check(args) if rep is not None and rep.check is not None else None
    if problem:
        parser.subcommand_parsers[args.experiment].error(problem)  # type: ignore[attr-defined]
    try:
        if rep is None:  # all
            _check_extras("all", args.progress, _all_baselines(args))
            _check_out(Path(args.out))
            _run_all(args)
        else:
            _check_extras(rep.name, args.progress, rep.baselines(args))
            _check_out(Path(args.out))
            _run_one(rep, args)
    except KeyboardInterrupt:
        print("manifold-spectral: interrupted", file=sys.stderr)
        return 130  # the shell's status for SIGINT
    except BrokenPipeError:  # output piped into e.g. head, which closed it: not an error
        # Python's flush of the closed stdout at exit would report it again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, FloatingPointError, ImportError) as exc:
        print(f"manifold-spectral: error: {exc}", file=sys.stderr)
        return 1
    return 0
