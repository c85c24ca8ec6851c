"""What every reproduction figure shares (issue 16): our method drawn on top and thicker,
curves that lie on top of each other named in the legend (from the data), a short caption per
panel saying what is measured, and a figure note explaining the conventions.

Matplotlib is imported by the callers (``_compat.agg_figure``); this module only computes
styles and texts and calls methods of the axes/figures it is given.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "COINCIDE",
    "OVERLAP",
    "line_style",
    "overlap_notes",
    "label_with_overlap",
    "caption",
    "figure_note",
]

#: Largest relative difference at which two curves are called identical ("coincides with").
COINCIDE = 1e-6
#: Relative difference at which two curves are drawn over each other on a log axis at these
#: figure sizes (0.05 decades: under a point, our line is 2.6 points wide and a decade about
#: 18 points): named "within p% of" in the legend. Linear axes pass a smaller ``tol``.
OVERLAP = 0.1
#: A curve within ``OVERLAP`` of another on at least this fraction of its points is hidden
#: there: the legend says "under X for q% of the points".
PARTLY = 0.8


def line_style(ours: bool, points: int = 0) -> dict[str, Any]:
    """Line keywords: ours thick, on top (zorder) and with sparse markers; others thinner
    and below, so no baseline hides our curve."""
    if ours:
        style: dict[str, Any] = {"lw": 2.6, "zorder": 5, "marker": "o", "ms": 3.5}
        style["markevery"] = max(1, points // 12) if points else None
        return style
    return {"lw": 1.3, "zorder": 3}


def _relative_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b| / max(|a|, |b|)`` at the points where both are finite (0 where both are 0);
    empty when the shapes differ or no point is finite in both."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return np.empty(0)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    scale = np.maximum(np.abs(a), np.abs(b))
    diff = np.abs(a - b)
    return np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)


#: ``(other curve, max relative difference, fraction of points within the tolerance)``.
Overlap = tuple[str, float, float]


def overlap_notes(curves: Mapping[str, np.ndarray], tol: float = OVERLAP) -> dict[str, Overlap]:
    """For each curve (in drawing order: list ours first, so the baselines hidden under it
    are the ones marked), the earlier curve it lies on: within ``tol`` on at least ``PARTLY``
    of its points (the largest share wins, then the smallest mean difference on those
    points). Curves with no such partner are left out."""
    notes: dict[str, Overlap] = {}
    names = list(curves)
    for i, name in enumerate(names):
        best: tuple[tuple[float, float], Overlap] | None = None
        for other in names[:i]:
            rel = _relative_differences(curves[name], curves[other])
            if rel.size == 0:
                continue
            close = rel <= tol
            if close.mean() < PARTLY:
                continue
            # Rank: the larger share of close points, then the closer on those points.
            rank = (float(close.mean()), -float(rel[close].mean()))
            if best is None or rank > best[0]:
                best = (rank, (other, float(rel.max()), float(close.mean())))
        if best is not None:
            notes[name] = best[1]
    return notes


def label_with_overlap(
    label: str, note: Overlap | None, labels: Mapping[str, str], tol: float = OVERLAP
) -> str:
    """``label`` plus ``(coincides with X)`` (max relative difference <= ``COINCIDE``),
    ``(within p% of X)`` (<= ``tol`` everywhere) or ``(under X for q% of the points)``,
    ``X`` being ``labels[other]``."""
    if note is None:
        return label
    other, diff, fraction = note
    what = labels.get(other, other)
    if diff <= COINCIDE:
        return f"{label} (coincides with {what})"
    if diff <= tol:
        return f"{label} (within {100 * diff:.2g}% of {what})"
    return f"{label} (under {what} for {100 * fraction:.0f}% of the points)"


def caption(ax: Any, title: str, text: str, width: int = 60) -> None:
    """Panel title in bold-ish size 9 and, below it, a caption (size 7.5) saying what the
    panel measures, wrapped to ``width`` characters."""
    ax.set_title(f"{title}\n" + "\n".join(textwrap.wrap(text, width)), fontsize=7.5, loc="left")


def figure_note(fig: Any, text: str, width: int = 150) -> None:
    """A note above the panels explaining the figure's conventions (left-aligned)."""
    fig.suptitle("\n".join(textwrap.wrap(text, width)), fontsize=8, x=0.01, ha="left")
