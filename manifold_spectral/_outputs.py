"""What every ``manifold-spectral reproduce`` run writes under ``--out``: the PNG (the
experiment module's ``plot``), the table as text, every table as CSV and the result (curves
and settings) as JSON. Split from ``cli`` so that the command line stays about options.

The number of CSV tables depends on the options (one per ``--beta2``, per task, per pair of
methods), so a run into a folder that holds an earlier run of the same reproduction removes
the ``stem``_table<k>.csv files it did not write (and says so): left there, they would read
as part of this run's results. Only that exact name pattern of its own stem is touched; every
other file name a run writes is fixed, so rewriting it replaces the earlier one."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["jsonable", "write_data", "remove_stale", "run_rows", "write_outputs"]


def jsonable(value: Any) -> Any:
    """A result as JSON values: dataclasses and dicts as objects, arrays/tensors/tuples as
    lists, non-finite floats as null, anything else by ``str``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    if isinstance(value, (list, tuple, range)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_data(
    results: Any,
    table: str,
    out: Path,
    stem: str,
    csv_tables: list[list[list[Any]]] | None = None,
) -> list[Path]:
    """Every curve and setting as ``stem``.json and every table as ``stem``_table<k>.csv
    (k = 1, 2, ...): ``csv_tables`` (rows, header first) where the module provides them (its
    printed table is fixed-width text), else the markdown tables of ``table``; removes the
    stale tables of an earlier run (``remove_stale``); returns the paths written."""
    import csv
    import json

    paths = [out / f"{stem}.json"]
    paths[0].write_text(json.dumps(jsonable(results), indent=1) + "\n")
    tables: list[list[list[str]]] = []
    previous = ""
    for line in table.splitlines():
        row = line.strip()
        if not row.startswith("|"):
            previous = row
            continue
        cells = [c.strip() for c in row.strip("|").split("|")]
        if all(set(c) <= set(":-") for c in cells):
            continue  # the header separator
        if not previous.startswith("|"):
            tables.append([])
        tables[-1].append(cells)
        previous = row
    if csv_tables is not None:
        tables = [[[str(c) for c in row] for row in t] for t in csv_tables]
    for k, rows in enumerate(tables, 1):
        path = out / f"{stem}_table{k}.csv"
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
        paths.append(path)
    remove_stale(out, stem, paths)
    return paths


def remove_stale(out: Path, stem: str, written: list[Path]) -> list[Path]:
    """Remove the files of ``out`` named ``stem``_table<k>.csv (k digits, exactly) that are
    not in ``written``: the tables of an earlier run that wrote more of them. Prints one line
    naming them when there are any; returns them. Any other file is left alone."""
    pattern = re.compile(re.escape(stem) + r"_table[0-9]+\.csv")
    keep = {p.name for p in written}
    found = [p for p in out.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    stale = sorted((p for p in found if p.name not in keep), key=lambda p: (len(p.name), p.name))
    for path in stale:
        path.unlink()
    if stale:
        print(
            f"removed stale {', '.join(str(p) for p in stale)} (an earlier run's tables, "
            f"not written by this one)",
            flush=True,
        )
    return stale


def run_rows(run: Callable[[float], Any], beta2s: Sequence[float], out: Path, stem: str) -> None:
    """One ``run(beta2)`` per step size: print each table, then write ``stem``.png (one plot
    row per step size), ``stem``.txt (the tables), ``stem``.json (the results) and one CSV
    per table under ``out``."""
    from .experiments import curvature

    results = []
    for beta2 in beta2s:
        result = run(beta2)
        table = curvature.format_table(result)
        print(table, end="\n\n", flush=True)
        results.append((result, table))
    png, txt = out / f"{stem}.png", out / f"{stem}.txt"
    curvature.plot([r for r, _ in results], png)
    tables = "\n\n".join(t for _, t in results)
    txt.write_text(tables + "\n")
    rows = [t for r, _ in results for t in curvature.csv_tables(r)]
    data = write_data([r for r, _ in results], tables, out, stem, rows)
    print(f"wrote {png}, {txt}, " + ", ".join(str(p) for p in data))


def write_outputs(module: Any, result: Any, out: Path, stem: str) -> None:
    """Print ``module.format_table(result)``, write ``stem``.png (``module.plot``, which
    returns the paths it wrote when it writes more than the PNG),
    ``stem``.txt (the table), ``stem``.json (the result: curves and settings) and one CSV
    per table under ``out``."""
    table = module.format_table(result)
    print(table, flush=True)
    png, txt = out / f"{stem}.png", out / f"{stem}.txt"
    plotted = module.plot(result, png) or [png]  # a plot that writes more returns its paths
    txt.write_text(table + "\n")
    csv_tables = getattr(module, "csv_tables", None)  # modules whose table is not markdown
    data = write_data(result, table, out, stem, csv_tables(result) if csv_tables else None)
    print("wrote " + ", ".join(str(p) for p in [*plotted, txt, *data]))
