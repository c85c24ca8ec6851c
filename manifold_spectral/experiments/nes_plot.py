"""The figure of ``reproduce nes`` (Fig. 9): ``plot`` of ``experiments.nes`` (re-exported there).

One panel per function: best value so far versus evaluations (log-log, scaled to the data),
the median over seeds as a line and the min-max over seeds as a shaded band. Ours is drawn on
top and thicker, curves lying on another one say so in the legend, and each panel's caption
says which methods reached the target and when (from the runs), or that none did.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._plotstyle import caption, figure_note, label_with_overlap, line_style, overlap_notes

__all__ = ["plot"]

OURS = "spectral"


def _grid(result: Any) -> np.ndarray:
    """The evaluation counts the curves are drawn at: log-spaced from 10 to the budget, or to
    the first generation of the runs when that lies beyond it. A generation is evaluated
    whole, so a budget below one population ends every run after its first generation, at
    more evaluations than the budget: a grid ending at the budget would hold no point of any
    curve, and the log-scaled panel could not be drawn."""
    first = max((int(run.nfev[0]) for run in result.runs if run.nfev.size), default=0)
    return np.unique(np.geomspace(10, max(result.max_evals, first), 200).astype(int))


def _curve_on_grid(run: Any, grid: np.ndarray) -> np.ndarray:
    """Best value so far at each evaluation count of ``grid`` (NaN before the first
    generation, flat after the run stopped)."""
    idx = np.searchsorted(run.nfev, grid, side="right") - 1
    return np.where(idx >= 0, run.fbest[np.clip(idx, 0, None)], np.nan)


@contextlib.contextmanager
def _ignore_all_nan() -> Iterator[None]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before generation 1
        yield


def _reached(result: Any, function: str, methods: list[str], labels: dict[str, str]) -> str:
    """Caption text: which methods reached the target on ``function`` (median evaluations of
    the runs that did, and how many of the seeds), or that none did."""
    parts = []
    for m in methods:
        runs = result.select(function, m)
        hits = [e for e in (r.evals_to(result.target) for r in runs) if e is not None]
        if hits:
            seeds = "" if len(runs) == 1 else f" ({len(hits)}/{len(runs)} seeds)"
            parts.append(f"{labels[m]} at {int(np.median(hits))}{seeds}")
    if not parts:
        return (
            f"no method reaches {result.target:g} within {result.max_evals} evaluations, too "
            f"few for this problem at n = {result.n} (docs/nes.md); compare the levels (lower "
            "is better)"
        )
    return f"reached {result.target:g}: " + ", ".join(parts)


def plot(result: Any, path: Any) -> None:
    """Fig. 9-style PNG of an ``NESExperiment`` at ``path`` (matplotlib's Agg canvas)."""
    from .._compat import agg_figure
    from .nes import METHODS

    Figure, FigureCanvasAgg = agg_figure()

    r = result
    k = len(r.functions)
    methods = [m for m in r.methods if m == OURS] + [m for m in r.methods if m != OURS]
    labels = {m: METHODS[m][0] for m in methods}
    short = {m: labels[m].split(" (")[0] + ("*" if m == OURS else "") for m in methods}
    fig = Figure(figsize=(3.9 * k, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, k, squeeze=False)[0]
    grid = _grid(r)
    for ax, function in zip(axes, r.functions, strict=True):
        medians, bands = {}, {}
        for method in methods:
            curves = np.array([_curve_on_grid(x, grid) for x in r.select(function, method)])
            with _ignore_all_nan():
                medians[method] = np.nanmedian(curves, axis=0)
                bands[method] = (np.nanmin(curves, axis=0), np.nanmax(curves, axis=0))
        notes = overlap_notes(medians)
        for method in methods:
            color = METHODS[method][1]
            label = label_with_overlap(labels[method], notes.get(method), labels)
            style = line_style(method == OURS, grid.size)
            ax.plot(grid, medians[method], color=color, label=label, **style)
            if r.seeds > 1:
                lo, hi = bands[method]
                ax.fill_between(grid, lo, hi, color=color, alpha=0.15, lw=0, zorder=1)
        ax.axhline(r.target, color="gray", ls=":", lw=1.0, label=f"target {r.target:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")  # autoscaled to the data: nothing is clipped
        caption(
            ax,
            f"{r.n}-dim {function.capitalize()}",
            "best f so far vs evaluations; " + _reached(r, function, methods, short),
            width=58,
        )
        ax.set_xlabel("function evaluations")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    axes[0].set_ylabel("best f so far")
    seeds = (
        f"lines: median over {r.seeds} seeds, shaded bands: min-max over the seeds"
        if r.seeds > 1
        else "one seed per method (no band; `--seeds 3` draws the min-max over seeds)"
    )
    figure_note(
        fig,
        f"Gradient-free minimisation with NES (paper Sec. 4.3, App. C, Fig. 9), n = {r.n}: "
        f"every method starts from the same x0 and sigma0 per seed and stops at {r.max_evals} "
        f"evaluations or below the target (dotted); {seeds}. Ours (thick, markers) is drawn on "
        "top; * in a caption marks ours. The paper's finding: spectral NES performs like the "
        "Riemannian baselines with the same techniques (xNES, Cholesky) and ahead of CMA-ES.",
        width=int(45 * k),
    )
    fig.savefig(path, dpi=110)
