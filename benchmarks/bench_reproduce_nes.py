"""``manifold-spectral reproduce nes`` with its defaults, timed; its table into docs/nes.md.

Runs the command's own entry point (``manifold_spectral.cli.main``, so the same defaults:
n = 60, 3 seeds, 50 000 evaluations, every method), measures its wall and CPU seconds and
the load average, and writes the measurement with the table (median best value over the
seeds [min, max], runs that reached the target, median evaluations of those runs) into
docs/nes.md between the ``reproduce-nes`` markers, so the time the docs quote is the one this
script measured. The PNG goes to docs/nes.png.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_reproduce_nes.py [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _readme import machine, replace_between  # noqa: E402 (benchmarks/ is on sys.path)

from manifold_spectral import cli
from manifold_spectral.experiments import nes as ex

DOCS = Path(__file__).resolve().parents[1] / "docs"
START, END = "<!-- reproduce-nes:start -->", "<!-- reproduce-nes:end -->"


def _g(v: float) -> str:
    return f"{v:.2g}" if v < 1e-3 else f"{v:.3g}"


def cell(runs: list[ex.Run], target: float) -> str:
    finals = np.array([r.final for r in runs])
    hits = [e for e in (r.evals_to(target) for r in runs) if e is not None]
    text = _g(float(np.median(finals)))
    if finals.max() > finals.min() * 1.5 or (hits and len(hits) < len(runs)):
        text += f" [{_g(finals.min())}, {_g(finals.max())}]"
    if hits:
        text += f", {len(hits)}/{len(runs)}, {int(np.median(hits))}"
    elif np.median(finals) < 1e-3:
        text += f", 0/{len(runs)}"
    return text


def table(result: ex.NESExperiment) -> str:
    heads = [ex.METHODS[m][0] for m in result.methods]
    lines = [
        "| function | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for f in result.functions:
        cells = [cell(result.select(f, m), result.target) for m in result.methods]
        lines.append(f"| {f.capitalize()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-write", action="store_true", help="print only (docs unchanged)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    captured: list[ex.NESExperiment] = []
    run_nes = ex.run_nes

    def recording(**kwargs):
        captured.append(run_nes(**kwargs))
        return captured[-1]

    ex.run_nes = recording  # the CLI calls experiments.nes.run_nes: keep its result
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        status = cli.main(["reproduce", "nes", "--out", out, "--no-progress"])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if status != 0:
            return status
        if not args.no_write:
            shutil.copy(Path(out) / "nes.png", DOCS / "nes.png")
    r = captured[0]
    block = (
        f"Measured {datetime.date.today().isoformat()} with the defaults "
        f"(`manifold-spectral reproduce nes`: n = {r.n}, {r.seeds} seeds, {r.max_evals} "
        f"evaluations per run) on {machine()}, load average {load:.1f} at start: "
        f"**{wall:.0f} s wall, {cpu:.0f} s CPU** (the machine's other load stretches the wall "
        "time). Cells: median best value over the seeds [min, max], runs that reached "
        f"\\(10^{{-8}}\\), and the median evaluations of those runs.\n\n{table(r)}"
    )
    print(block)
    if not args.no_write:
        replace_between(DOCS / "nes.md", START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
