"""The options every ``manifold-spectral reproduce`` subcommand shares: argparse types that
say what they expected, the ``Reproduction`` record of a subcommand, and the run-time options
(``--device``, ``--threads``, ``--seed``)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "argument_type",
    "Distinct",
    "positive_int",
    "nonnegative_int",
    "unit_interval",
    "positive_float",
    "SEED_MAX",
    "seed_int",
    "Reproduction",
    "runtime_arguments",
    "runtime_kwargs",
]


# Argument types: argparse turns ArgumentTypeError into "error: argument --x: ..." + exit 2.


def argument_type(
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


class Distinct(argparse.Action):
    """The store action of a ``nargs="+"`` list option whose values must be distinct.

    A repeated name (``--functions griewank griewank``) would run and count the same cell
    twice: the tables' success counts and medians would be over copies while the header
    reports the distinct settings. Refused as a usage error naming the option (argparse's
    "error: argument --functions: ..." and exit status 2) rather than silently de-duplicated,
    so the command line says what runs.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen: list[Any] = []
        repeated: list[Any] = []
        for value in values:
            if value in seen and value not in repeated:
                repeated.append(value)
            seen.append(value)
        if repeated:
            listed = " ".join(str(v) for v in repeated)
            raise argparse.ArgumentError(self, f"each value at most once, repeated: {listed}")
        setattr(namespace, self.dest, list(values))


positive_int = argument_type(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = argument_type(int, lambda v: v >= 0, "an integer >= 0")
#: A float strictly between 0 and 1 (a step size of a moving average).
unit_interval = argument_type(float, lambda v: math.isfinite(v) and 0 < v < 1, "a number in (0, 1)")
#: A finite float > 0 (a step size).
positive_float = argument_type(float, lambda v: math.isfinite(v) and v > 0, "a number > 0")
#: The largest ``--seed``: pycma seeds numpy's legacy generator (which takes < 2**32) with
#: ``seed + 1`` and the runs add small offsets (one per seed), so 2**31 - 1 leaves room.
SEED_MAX = 2**31 - 1
seed_int = argument_type(int, lambda v: 0 <= v <= SEED_MAX, f"an integer in [0, {SEED_MAX}]")


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
    #: The header of a run from its options (sizes the options change); default ``help``.
    title: Callable[[argparse.Namespace], str] | None = None
    #: The modules of the ``baselines`` extra a run with these options imports.
    needs: Callable[[argparse.Namespace], list[str]] | None = None
    #: Checks between options argparse cannot make: a message naming the option, or None.
    check: Callable[[argparse.Namespace], str | None] | None = None

    def header(self, args: argparse.Namespace) -> str:
        return self.title(args) if self.title is not None else self.help

    def baselines(self, args: argparse.Namespace) -> list[str]:
        return self.needs(args) if self.needs is not None else []


def _has_option(parser: argparse.ArgumentParser, flag: str) -> bool:
    return any(flag in action.option_strings for action in parser._actions)


def runtime_arguments(parser: argparse.ArgumentParser, device_help: str) -> None:
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
        parser.add_argument(
            "--seed", type=seed_int, default=0, help=f"base random seed, 0 .. {SEED_MAX} (0)"
        )


def runtime_kwargs(args: argparse.Namespace, threads: str = "threads") -> dict[str, Any]:
    """The run-time options of ``runtime_arguments`` (and ``--no-progress``) as the keyword
    arguments of an experiment's run function, whose thread count is named ``threads``
    (``"threads"`` or ``"num_threads"``)."""
    return {
        "seed": args.seed,
        "progress": args.progress,
        threads: args.threads,
        "device": args.device,
    }
