"""The tables of the curvature-learning runs: ``format_table`` (plain text, both matchings at
iterations 1, 10, 100, ... and the last one) and ``csv_tables`` (the same rows as CSV, with
the Wasserstein-2 columns when recorded). The Kronecker run uses both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .curvature_track import CurvatureResult

__all__ = ["format_table", "csv_tables"]


def _table_rows(result: CurvatureResult) -> list[int]:
    """Indices into ``result.iterations`` of 1, 10, 100, ... and the last iteration."""
    its = result.iterations
    want = [int(p) for p in 10 ** np.arange(int(math.log10(result.steps)) + 1)] + [result.steps]
    return sorted({int(np.searchsorted(its, w)) for w in want if w in set(its.tolist())})


def _block(title: str, result: CurvatureResult, fp: dict, it: dict, fmt: str) -> list[str]:
    cols = [f"fixed-point {k}" for k in fp] + [f"iterate {k}" for k in it]
    series = list(fp.values()) + list(it.values())
    widths = [max(len(c), 8) + 2 for c in cols]
    head = "".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))
    lines = [title, "iteration".rjust(10) + head]
    for i in _table_rows(result):
        vals = "".join(format(s[i], fmt).rjust(w) for s, w in zip(series, widths, strict=True))
        lines.append(str(int(result.iterations[i])).rjust(10) + vals)
    return lines


def csv_tables(result: CurvatureResult) -> list[list[list[Any]]]:
    """``format_table``'s numbers as one CSV table (header first): ``beta2``, the iteration,
    then both matchings of every scheme in relative Frobenius error and, when recorded, W2."""
    r = result
    cols = [(f"fixed-point {k}", v) for k, v in r.fixed_point.items()]
    cols += [(f"iterate {k}", v) for k, v in r.iterate.items()]
    cols += [(f"fixed-point W2 {k}", v) for k, v in r.fixed_point_w2.items()]
    cols += [(f"iterate W2 {k}", v) for k, v in r.iterate_w2.items()]
    rows: list[list[Any]] = [["beta2", "iteration"] + [c for c, _ in cols]]
    for i in _table_rows(r):
        rows.append([r.beta2, int(r.iterations[i])] + [f"{float(v[i]):.6g}" for _, v in cols])
    return [rows]


def format_table(result: CurvatureResult) -> str:
    """Plain-text table of both matchings at iterations 1, 10, 100, ... and the final one."""
    r = result
    head = (
        f"Curvature learning ({r.structure} matrix), {r.size_label}, beta2={r.beta2:g}, "
        f"gamma={r.gamma:g}, steps={r.steps}, seed={r.seed}, dtype={r.dtype}, init={r.init}"
    )
    lines = [head]
    lines += _block("relative Frobenius error", r, r.fixed_point, r.iterate, ".4g")
    if r.fixed_point_w2:
        lines += _block("Wasserstein-2 distance", r, r.fixed_point_w2, r.iterate_w2, ".4g")
    for name, k in r.diverged.items():
        lines.append(f"{name}: diverged at iteration {k} (beta2 too large for this scheme)")
    secs = ", ".join(f"{k} {v:.2f} s" for k, v in r.update_seconds.items())
    lines.append(
        f"update time: {secs}; ||B^T B - I||_F (spectral) = "
        f"{r.orthogonality_error:.1e}; run {r.wall_time:.1f} s"
    )
    lines += r.notes()
    return "\n".join(lines)
