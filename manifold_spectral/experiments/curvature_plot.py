"""The figure of the curvature-learning reproductions (Figs. 2, 7, 8): ``plot`` of
``curvature`` and ``curvature_kronecker`` (both re-export it).

One row per result (a step size ``beta2``); columns fixed-point and iterate matching in
relative Frobenius error (and Wasserstein-2 when recorded); log-log axes scaled to the data.
Ours is drawn on top and thicker; a curve that lies on another one says so in the legend;
each panel has a caption and the figure a note on what fixed-point and iterate matching are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._plotstyle import caption, figure_note, label_with_overlap, line_style, overlap_notes

__all__ = ["SCHEME_STYLE", "OURS", "plot"]

#: Colours/labels of the schemes (paper Fig. 7 order).
SCHEME_STYLE = {
    "default": ("Default", "tab:blue"),
    "spectral": ("Spectral (ours)", "tab:red"),
    "spectral practical": ("Spectral practical (ours)", "tab:orange"),
    "cholesky": ("Cholesky", "tab:green"),
    "projection": ("Projection (impractical)", "tab:purple"),
}
#: Our schemes: drawn first in the legend, on top and thick.
OURS = ("spectral", "spectral practical")

_FIXED = (
    "distance of S_k to the target Sigma = E[g g^T] (lower is better)",
    "Wasserstein-2 distance of N(0, S_k) to N(0, Sigma)",
)
_ITERATE = (
    "distance of S_k to the default scheme's S_k at the same step (0: follows it exactly)",
    "Wasserstein-2 distance of N(0, S_k) to the default's N(0, S_k)",
)
_KRON_ITERATE = (
    "; starts at 0 (the same S0) and grows while the unstructured default leaves the "
    "Kronecker set: a structure gap, not divergence"
)


def _note(results: Sequence[Any]) -> str:
    kron = any(r.structure != "full" for r in results)
    text = (
        "Curvature learning (paper Sec. 4.1): every scheme estimates Sigma from the same stream "
        "of gradients g_k ~ N(0, Sigma), one per step, from the same S0, with step size beta2. "
        "Fixed-point matching: how close S_k is to Sigma. Iterate matching: how close S_k is to "
        "the default moving average's S_k. Ours (thick, markers) is drawn on top; "
        "'coincides with X' / 'within p% of X' in a legend marks a curve hidden under X."
    )
    if kron:
        text += (
            " Kronecker-structured schemes cannot represent an unstructured Sigma: their "
            "fixed-point error stops at the dashed floor NKP(Sigma) (the best Kronecker "
            "approximation), not at 0; the paper's finding is that ours matches the impractical "
            "projection scheme there."
        )
    return text


def _final(values: dict[str, np.ndarray]) -> str:
    """``name value`` of each curve's last finite entry (the caption's data summary)."""
    parts = []
    for name, v in values.items():
        finite = v[np.isfinite(v)]
        short = SCHEME_STYLE.get(name, (name, None))[0].replace(" (ours)", "*")
        parts.append(f"{short} {finite[-1]:.2g}" if finite.size else f"{short} diverged")
    return "final: " + ", ".join(parts) + " (* ours)"


def plot(result: Any, path: Any) -> None:
    """Fig. 7/8-style PNG of one ``CurvatureResult`` or a sequence of them (one row each).

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from .._compat import agg_figure

    Figure, FigureCanvasAgg = agg_figure()

    results = list(result) if isinstance(result, (list, tuple)) else [result]
    if not results:
        raise ValueError("plot: no results")
    panels = [("fixed_point", "Fixed-point matching", 0), ("iterate", "Iterate matching", 0)]
    if all(r.fixed_point_w2 for r in results):
        panels = [
            ("fixed_point", "Fixed-point matching", 0),
            ("fixed_point_w2", "Fixed-point matching, W2", 1),
            ("iterate", "Iterate matching", 0),
            ("iterate_w2", "Iterate matching, W2", 1),
        ]
    fig = Figure(figsize=(4.3 * len(panels), 5.0 * len(results) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), len(panels), squeeze=False)
    for row, r in zip(axes, results, strict=True):
        keep = r.iterations > 0  # log axis: iteration 0 (where iterate matching is 0) is off
        for ax, (field, title, w2) in zip(row, panels, strict=True):
            data = getattr(r, field)
            order = [k for k in OURS if k in data] + [k for k in data if k not in OURS]
            curves = {k: data[k][keep] for k in order}
            notes = overlap_notes(curves)
            labels = {k: SCHEME_STYLE.get(k, (k, None))[0] for k in order}
            for name in order:
                label, color = SCHEME_STYLE.get(name, (name, None))
                if name == "default" and r.structure != "full":
                    label += " (full matrix)"
                style = line_style(name in OURS, int(keep.sum()))
                if name == "spectral practical":  # dashed over the solid red: both visible
                    style.update(ls="--", lw=2.0, zorder=6, marker=None)
                ax.plot(
                    r.iterations[keep],
                    curves[name],
                    label=label_with_overlap(label, notes.get(name), labels),
                    color=color,
                    **style,
                )
            if field == "fixed_point":
                for label, level in r.fixed_point_floors().items():
                    ax.axhline(level, color="gray", ls="--", lw=1.0, label=f"floor {label}")
            ax.set_xscale("log")
            ax.set_yscale("log")  # autoscaled to the data: nothing is clipped
            text = (_FIXED if field.startswith("fixed") else _ITERATE)[w2]
            if field == "iterate" and r.structure != "full":
                text += _KRON_ITERATE
            if field in ("fixed_point", "iterate"):
                text += "; " + _final(data)
            caption(ax, f"{title} ({r.size_label}, beta2={r.beta2:g})", text)
            ax.set_xlabel("iterations (gradients seen)")
            ax.set_ylabel(
                "Wasserstein-2 distance" if field.endswith("w2") else "relative Frobenius error"
            )
            ax.grid(True, which="both", alpha=0.3)
            # Below the panel: the long "within p% of X" labels must not cover the curves.
            ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    figure_note(fig, _note(results), width=int(62 * len(panels)))
    fig.savefig(path, dpi=110)
