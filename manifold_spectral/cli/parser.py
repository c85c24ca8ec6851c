"""The parser of ``manifold-spectral``: ``REPRODUCTIONS`` (one ``Reproduction`` per
subcommand of ``reproduce``, in the order ``reproduce all`` runs them), ``build_parser`` and
the quick settings of ``reproduce all``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from .curvature import CURVATURE, KRONECKER
from .nes import BBOB, NES
from .nn import NN
from .options import Reproduction, runtime_arguments
from .spd import SPD

__all__ = [
    "REPRODUCTIONS",
    "device_help",
    "common_arguments",
    "build_parser",
    "quick_settings",
    "quick_args",
    "expected_time",
]

REPRODUCTIONS: dict[str, Reproduction] = {
    r.name: r for r in [CURVATURE, KRONECKER, SPD, NN, NES, BBOB]
}


def device_help(rep: Reproduction | None) -> str:
    """``--device``'s help: what it moves, or why the run is CPU-only."""
    if rep is not None and "cuda" not in rep.devices:
        return f"cpu only (--device cuda is refused): {rep.cpu_only}"
    where = "where the torch computations run: cpu (default), cuda, or auto (cuda when available)"
    if rep is None:  # reproduce all
        cpu = [r.name for r in REPRODUCTIONS.values() if "cuda" not in r.devices]
        if not cpu:
            return f"{where}; every reproduction runs there"
        return f"{where}; the CPU-only reproductions ({', '.join(cpu)}) run on the CPU, saying so"
    return f"{where}; {rep.device_note}" if rep.device_note else where


def common_arguments(parser: argparse.ArgumentParser, rep: Reproduction | None = None) -> None:
    runtime_arguments(parser, device_help(rep))
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
    # No abbreviations: `spd --n 5` (nes's size option, spd's is --d) was read as
    # --no-progress and refused "unrecognized arguments: 5", naming no option, and
    # `spd --n` alone silently switched the progress bars off.
    parser.subcommand_parsers = {}  # type: ignore[attr-defined]
    for rep in REPRODUCTIONS.values():
        sub = experiments.add_parser(
            rep.name, help=rep.help, description=rep.help, allow_abbrev=False
        )
        rep.add_arguments(sub)
        common_arguments(sub, rep)
        parser.subcommand_parsers[rep.name] = sub  # type: ignore[attr-defined]
    every = experiments.add_parser(
        "all",
        allow_abbrev=False,
        help="every reproduction above with its quick defaults",
        description="Run every available reproduction with its quick defaults: "
        + "; ".join(f"{r.name} ({quick_settings(r)})" for r in REPRODUCTIONS.values())
        + f". The {expected_time()}.",
    )
    common_arguments(every)
    parser.subcommand_parsers["all"] = every  # type: ignore[attr-defined]
    return parser


def quick_settings(rep: Reproduction) -> str:
    """``rep``'s quick overrides against its defaults, e.g. ``"seeds=1 (default 3)"``."""
    if not rep.quick:
        return "its defaults"
    sub = argparse.ArgumentParser(add_help=False)
    rep.add_arguments(sub)
    defaults = sub.parse_args([])
    return ", ".join(
        f"{k.replace('_', '-')}={v} (default {getattr(defaults, k)})" for k, v in rep.quick.items()
    )


def quick_args(rep: Reproduction, common: argparse.Namespace) -> argparse.Namespace:
    """Defaults of ``rep``'s options, its quick overrides, and ``all``'s common options."""
    sub = argparse.ArgumentParser(add_help=False)
    rep.add_arguments(sub)
    common_arguments(sub)
    args = sub.parse_args([])
    shared = ("out", "progress", "device", "threads", "seed")
    for key, value in {**rep.quick, **{k: getattr(common, k) for k in shared}}.items():
        setattr(args, key, value)
    return args


def expected_time() -> str:
    """The measured wall time of ``reproduce all`` (``_measured.REPRODUCE_ALL``, written by
    benchmarks/bench_reproduce_all.py), as a sentence; says so when there is none."""
    from .._measured import REPRODUCE_ALL as m

    if not m:
        return "expected wall time: not measured yet (benchmarks/bench_reproduce_all.py)"
    return (
        f"expected wall time: about {m['wall_s']:.0f} s ({m['wall_s'] / 60:.1f} min) on "
        f"{m['cpus']} CPU cores, measured {m['date']} by benchmarks/bench_reproduce_all.py "
        f"(load average {m['load']:.1f}; a busier machine takes longer)"
    )
