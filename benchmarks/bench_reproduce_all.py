"""``manifold-spectral reproduce all`` (the README's main job, install excluded), timed; the
quick settings and the measured times into README.md, the total into
``manifold_spectral/_measured.py`` (which the command prints when it starts).

Runs the command's own entry point (``manifold_spectral.cli.main``, so the same quick
settings), with progress bars as the main job has them, measures the wall and CPU seconds of
the whole run and of each reproduction (from the ``wall time (name)`` lines it prints) and
the load average, and writes

* README.md between the ``reproduce-all`` markers: one row per reproduction (its quick
  settings and wall time) and the total, with the machine;
* ``manifold_spectral/_measured.py`` between the ``reproduce-all`` markers: ``REPRODUCE_ALL``.

The figures go to ``--out`` (default: a temporary folder).

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_reproduce_all.py [--out DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral import cli

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- reproduce-all:start -->", "<!-- reproduce-all:end -->"
PY_START, PY_END = "# reproduce-all:start", "# reproduce-all:end"


class Tee(io.TextIOBase):
    """stdout that is also kept (the run's own lines say each reproduction's wall time)."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.kept = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def literal(record: dict) -> str:
    """``record`` as a Python dict literal laid out as ``ruff format`` lays it out."""
    items = "".join(f"    {json.dumps(k)}: {json.dumps(v)},\n" for k, v in record.items())
    return "{\n" + items + "}"


def _seconds(t: float) -> str:
    """Whole seconds, or tenths below 10 s (a sub-second run is not "0 s")."""
    return f"{t:.1f}" if t < 10 else f"{t:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="keep the figures here")
    p.add_argument("--no-write", action="store_true", help="print only (files unchanged)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    tee = Tee(sys.stdout)
    with contextlib.ExitStack() as stack:
        out = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        wall, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(tee):
            status = cli.main(["reproduce", "all", "--out", str(out)])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # The seconds kept in _measured.py, so that the README's minutes are the command's
    wall, cpu = round(wall, 1), round(cpu, 1)
    if status != 0:
        return status
    times = dict(re.findall(r"^wall time \((\w+)\): ([0-9.]+) s$", tee.kept.getvalue(), re.M))
    today = datetime.date.today().isoformat()
    rows = [
        f"| `{rep.name}` | {cli.quick_settings(rep)} | {_seconds(float(times[rep.name]))} s |"
        for rep in cli.REPRODUCTIONS.values()
    ]
    block = (
        f"Measured {today} by `benchmarks/bench_reproduce_all.py` (`manifold-spectral "
        f"reproduce all`, install excluded) on {machine()}, load average {load:.1f} at the "
        f"start (the machine was shared): **{wall:.0f} s wall ({wall / 60:.1f} min), "
        f"{cpu:.0f} s CPU**. A busier machine takes longer; an idle one less.\n\n"
        "| reproduction | quick settings (the rest: its defaults, `--help`) | wall time |\n"
        "|---|---|---:|\n" + "\n".join(rows)
    )
    print(block)
    if not args.no_write:
        replace_between(ROOT / "README.md", START, END, block)
        record = {
            "wall_s": wall,
            "cpu_s": cpu,
            "cpus": os.cpu_count(),
            "load": round(load, 2),
            "date": today,
        }
        replace_between(
            ROOT / "manifold_spectral" / "_measured.py",
            PY_START,
            PY_END,
            f"REPRODUCE_ALL: dict[str, Any] | None = {literal(record)}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
