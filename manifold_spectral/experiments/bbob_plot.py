"""The figure of ``reproduce bbob``: ``ecdf`` of ``experiments.bbob`` (re-exported there),
COCO's ECDF of (run, target) pairs reached versus evaluations / D, one panel per dimension,
written as a PNG and its numbers as a CSV beside it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ._plotstyle import caption, figure_note, label_with_overlap, line_style, overlap_notes

__all__ = ["STYLE", "ecdf"]

#: Line colour and style of each method in the ECDF (ours red/orange/purple, drawn on top).
STYLE = {"nes": ("tab:red", "-"), "nes-ipop": ("tab:orange", "--"),
         "nes-bipop": ("tab:purple", "-."),
         "cma": ("black", "-"), "cma-ipop": ("tab:gray", "--")}  # fmt: skip


def ecdf(rows: list[dict], methods: list[str], png: Path, budget_mult: float) -> None:
    """COCO's ECDF of (run, target) pairs reached vs evaluations / D: CSV and PNG per D.
    Ours on top and thicker, overlapping curves named in the legend, a caption per panel."""
    from .._compat import agg_figure
    from .bbob import METHODS  # at call time: bbob imports this module

    Figure, FigureCanvasAgg = agg_figure()
    grid = np.unique(np.round(np.geomspace(1, budget_mult, 60), 3))
    dims = sorted({r["dim"] for r in rows})
    table, header = [], ["evals_per_dim"]
    fig = Figure(figsize=(5.0 * len(dims), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(dims), squeeze=False)[0]
    for ax, d in zip(axes, dims, strict=True):
        fracs = {}
        for m in sorted(methods, key=lambda m: not m.startswith("nes")):  # ours first
            runs = [r for r in rows if r["method"] == m and r["dim"] == d]
            if not runs:
                continue
            hits = np.array([[int(h) for h in r["hits"].split()] for r in runs]).ravel()
            hits = np.where(hits < 0, np.inf, hits / d)
            fracs[m] = (hits[None, :] <= grid[:, None]).mean(axis=1)
            header.append(f"{m}_D{d}")
            table.append(fracs[m])
        labels = {m: METHODS[m][0] + (" (ours)" if m.startswith("nes") else "") for m in fracs}
        notes = overlap_notes(fracs)
        for m, frac in fracs.items():
            color, ls = STYLE[m]
            style = {**line_style(m.startswith("nes")), "ls": ls}
            label = label_with_overlap(labels[m], notes.get(m), labels)
            ax.step(grid, frac, where="post", label=label, color=color, **style)
        fids = sorted({r["function"] for r in rows if r["dim"] == d})
        inst = sorted({r["instance"] for r in rows if r["dim"] == d})
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)  # a fraction: the margin keeps curves off the frame
        caption(
            ax,
            f"bbob, D = {d}: f{', f'.join(map(str, fids))}, instances {inst}",
            "fraction of (run, target) pairs reached vs evaluations / D (targets 1e2 .. 1e-8; "
            "higher and further left is better)",
            width=70,
        )
        ax.set_xlabel("evaluations / D")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    axes[0].set_ylabel("fraction of (run, target) pairs")
    few = len({r["function"] for r in rows}) < 5
    figure_note(
        fig,
        "COCO's ECDF (not a figure of the paper): spectral NES against pycma's "
        "CMA-ES, without and with IPOP restarts"
        + (" (and spectral NES with BIPOP restarts)" if "nes-bipop" in fracs else "")
        + ", from the same starts. "
        + (
            "Few functions here (the quick run: a pipeline check, not a comparison); "
            "benchmarks/README.md holds the full protocol's results."
            if few
            else "benchmarks/README.md holds the full protocol's results."
        ),
        width=int(60 * len(dims)),
    )
    fig.savefig(png, dpi=110)
    with open(Path(png).with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, g in enumerate(grid):
            w.writerow([g] + [f"{col[i]:.4f}" for col in table])
