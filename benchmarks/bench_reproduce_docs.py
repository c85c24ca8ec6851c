"""``manifold-spectral reproduce spd`` and ``reproduce kronecker`` with their defaults; their
tables into the docs.

Runs the command's own entry point (``manifold_spectral.cli.main``, so the same defaults as
on the command line) for each reproduction, and writes what the command wrote to its text
file (the settings line and the tables), after a line with the date, the machine and the load
average, into the page that quotes it:

* ``spd``: docs/spd.md between the ``spd-table`` markers; the PNG goes to docs/spd.png;
* ``kronecker``: docs/kronecker.md between the ``kronecker-table`` markers.

So every number of those tables is one this script's run produced.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_reproduce_docs.py [spd] [kronecker] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral import cli

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: reproduction -> (page, marker name, text file of the command, figure copied to docs/ or None)
TARGETS = {
    "spd": ("spd.md", "spd-table", "spd.txt", "spd.png"),
    "kronecker": ("kronecker.md", "kronecker-table", "curvature_kronecker.txt", None),
}


def block(name: str, text: str, load: float, fenced: bool) -> str:
    head = (
        f"Written {datetime.date.today().isoformat()} by `benchmarks/bench_reproduce_docs.py` "
        f"(`manifold-spectral reproduce {name}`, its defaults) on {machine()}, load average "
        f"{load:.1f} at the start."
    )
    body = text.strip()
    return f"{head}\n\n```text\n{body}\n```" if fenced else f"{head}\n\n{body}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    p.add_argument("--no-write", action="store_true", help="print only (docs unchanged)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.names) - set(TARGETS))
    if unknown:
        p.error(f"unknown reproduction(s) {unknown}; choose from {list(TARGETS)}")
    for name in args.names or list(TARGETS):
        page, marker, txt, png = TARGETS[name]
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as out:
            status = cli.main(["reproduce", name, "--out", out, "--no-progress"])
            if status != 0:
                return status
            text = (Path(out) / txt).read_text()
            if png is not None and not args.no_write:
                shutil.copy(Path(out) / png, DOCS / png)
        # the spd text file is markdown tables; kronecker's is fixed-width columns
        result = block(name, text, load, fenced=name == "kronecker")
        print(result)
        if not args.no_write:
            replace_between(
                DOCS / page, f"<!-- {marker}:start -->", f"<!-- {marker}:end -->", result
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
