"""The report of the NN comparison: ``format_table`` (a markdown table per task) and ``plot``
(evaluation loss vs steps and vs training seconds, Fig. 11-12 analogue) of a
``QualityResult``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .optimizers import OPTIMIZERS, optimizer_spec
from .training import QualityResult

__all__ = ["format_table", "plot"]


def _fmt_hp(hp: dict[str, float] | None) -> str:
    if hp is None:
        return "all trials diverged"
    return ", ".join(f"{k}={v:.2g}" for k, v in hp.items())


def _search(result: QualityResult) -> str:
    """Where the random search's numbers come from: its draws from ``search_seed`` (the
    command line's ``--seed``), every trial trained on seed 0, and the refinement rounds of
    the best learning rate after them (``OptimizerSpec.neighbours``)."""
    refine = result.refine
    rounds = (
        f"; then {refine} refinement round{'s' * (refine > 1)} of 2 runs at the best run's "
        "lr divided and multiplied by half a stratum of the draws, halved every round"
        if refine
        else ""
    )
    return f"draws from seed {result.search_seed}, each trial trained on seed 0{rounds}"


def format_table(result: QualityResult) -> str:
    """Markdown table per task: tuned hyper-parameters, final evaluation loss (mean and per
    seed), excess over the Bayes loss, training loss over the last 10% of the steps (mean
    of the seeds; a lower training but higher evaluation loss is overfitting, not slower
    optimisation), ms per step, diverged trials."""
    r = result
    lines = [
        f"NN training (Sec. 4.4 / Fig. 4, 10-12 analogue): random search with {r.trials} trials "
        f"per method ({_search(r)}), best trial re-run on seeds {r.seeds}; forward/backward "
        f"{'bfloat16 autocast' if r.precision == 'bf16' else 'float32'}; preconditioner "
        f"period {r.update_every} (SOAP and ours); torch threads {r.threads}; run "
        f"{r.wall_time:.0f} s"
        + (f" ({r.cached} runs read from the cache of an earlier run)" if r.cached else "")
    ]
    for t in r.tasks:
        lines += [
            "",
            f"{t.describe}; {t.steps} steps; "
            + ("no known Bayes loss" if t.floor is None else f"Bayes loss {t.floor:.3f}")
            + f", initial {t.initial:.3f}",
            "",
            "| method | tuned hyper-parameters | final eval loss (mean) | per seed "
            "| excess over Bayes | train loss, last 10% of steps | ms / step | diverged trials |",
            "|---|---|---:|---|---:|---:|---:|---:|",
        ]
        for m, runs in t.runs.items():
            spec = optimizer_spec(m)
            tuned = t.best.get(spec.tuned_as or m)
            hp = (
                _fmt_hp(tuned)
                if spec.tuned_as is None
                else f"as {optimizer_spec(spec.tuned_as).label}"
            )
            bad = sum(not math.isfinite(x.final) for x in t.trials.get(m, []))
            ntr = len(t.trials.get(m, []))
            div = f"{bad}/{ntr}" if ntr else "-"
            if not runs:
                lines.append(f"| {spec.label} | {hp} | - | - | - | - | - | {div} |")
                continue
            finals = [x.final for x in runs]
            mean = float(np.mean(finals))
            excess = "-" if t.floor is None else f"{mean - t.floor:.3f}"
            per = " / ".join("diverged" if not math.isfinite(v) else f"{v:.3f}" for v in finals)
            timed = [x.ms_per_step for x in runs if math.isfinite(x.ms_per_step)]
            ms = f"{float(np.median(timed)):.1f}" if timed else "-"  # too few steps to time
            tails = [x.train_tail for x in runs]
            fit = f"{np.mean(tails):.4f}" if all(map(math.isfinite, tails)) else "-"
            lines.append(
                f"| {spec.label} | {hp} | {mean:.3f} | {per} | {excess} | {fit} | {ms} | {div} |"
            )
    return "\n".join(lines)


def plot(result: QualityResult, path: Any) -> None:
    """Evaluation loss vs steps and vs training seconds (mean over seeds), one row per task,
    the Bayes loss dotted where known (Fig. 11-12 analogue). Ours on top and thicker, the
    ablations dashed in their own colours, axes scaled to the data (no clipping), a caption
    per panel and a figure note saying whether this run shows the paper's finding."""
    from ..._compat import agg_figure
    from .._plotstyle import caption, figure_note, label_with_overlap, line_style, overlap_notes

    Figure, FigureCanvasAgg = agg_figure()
    # The bf16-state ablation must not share the paper scheme's brown.
    colors = {"spectral-p2-bf16": "tab:olive", "spectral-p2-exact": "tab:pink"}

    def ours(m: str) -> bool:
        return m.startswith("spectral")

    rows = len(result.tasks)
    fig = Figure(figsize=(11, 4.6 * rows + 1.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2, squeeze=False)
    verdicts = []
    drawn_ours = False  # whether any method of ours has a curve (the note's "thick, markers")
    for (ax_k, ax_t), t in zip(axes, result.tasks, strict=True):
        curves = {}
        for m, runs in t.runs.items():
            ok = [x for x in runs if math.isfinite(x.final)]
            if ok:
                curves[m] = (
                    np.array(ok[0].eval_steps),
                    np.mean([x.eval_loss for x in ok], axis=0),
                    np.mean([np.concatenate([[0.0], x.seconds])[x.eval_steps] for x in ok], 0),
                    float(np.mean([x.final for x in ok])),
                )
        drawn_ours |= any(map(ours, curves))
        order = [m for m in curves if ours(m)] + [m for m in curves if not ours(m)]
        labels = {m: optimizer_spec(m).label for m in order}
        notes = overlap_notes({m: curves[m][1] for m in order}, tol=0.01)  # a linear axis
        for m in order:
            steps, loss, secs, _ = curves[m]
            spec = optimizer_spec(m)
            style = line_style(ours(m), len(steps))
            if spec.tuned_as:  # ablation: ours, dashed, below the tuned methods
                style.update(ls="--", lw=1.8, zorder=4, marker=None)
            color = colors.get(m, spec.color)
            label = label_with_overlap(spec.label, notes.get(m), labels, tol=0.01)
            ax_k.plot(steps, loss, color=color, label=label, **style)
            ax_t.plot(secs, loss, color=color, label=label, **style)
        best = {
            side: min(
                ((curves[m][3], m) for m in curves if ours(m) == side and m in OPTIMIZERS),
                default=None,
            )
            for side in (True, False)
        }
        summary = ""
        if best[True] and best[False]:
            (mine, m1), (theirs, m2) = best[True], best[False]
            summary = (
                f"final: best of ours {labels[m1]} {mine:.3f}, best baseline {labels[m2]} "
                f"{theirs:.3f} (lower is better)"
            )
            verdicts.append((t.task, mine <= theirs, summary))
        what = [f"evaluation loss vs steps, mean over seeds {result.seeds}"]
        of = sorted({optimizer_spec(m).tuned_as for m in curves} - {None})  # ablations drawn
        if of:
            ablated = " and ".join(optimizer_spec(m).label for m in of)
            what.append(f"dashed: ablations of {ablated} at its tuned values")
        for ax, xlabel, text in (
            (ax_k, "steps", "; ".join([*what, *([summary] if summary else [])])),
            (ax_t, "training seconds", "the same runs vs training time (forward, backward, "
             "optimizer step; data and evaluation excluded; CPU time on a CPU)"),
        ):  # fmt: skip
            if t.floor is not None:
                ax.axhline(t.floor, color="gray", ls=":", lw=1, label="Bayes loss")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("eval loss")
            caption(ax, f"{t.task} ({result.precision}), {t.steps} steps", text, width=75)
            ax.grid(alpha=0.3)  # y autoscaled to every curve (spikes included): no clipping
        handles, names = ax_k.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    shown = [v for v in verdicts if v[1]]
    if verdicts and len(shown) == len(verdicts):
        verdict = "This run shows it: ours is at least as good as the best tuned baseline."
    elif verdicts:
        verdict = (
            f"This run does NOT show it on {', '.join(v[0] for v in verdicts if not v[1])}: "
            f"{result.trials} random-search draws per method and {result.tasks[0].steps} steps "
            "are too few to tune and separate the methods at this size; the paper trains "
            "much longer with tuned hyper-parameters."
        )
    else:
        verdict = "No comparison: it needs a method of ours and a baseline that did not diverge."
    figure_note(
        fig,
        f"NN training (paper Sec. 4.4, Figs. 4, 10-12): each method's hyper-parameters by a "
        f"random search of {result.trials} draws ({_search(result)}), the best trial re-run on "
        f"seeds {result.seeds}; forward/backward in {result.precision}. "
        + ("Ours (thick, markers) is drawn on top. " if drawn_ours else "")
        + "The paper's finding: our spectral Kronecker method in bfloat16 matches "
        f"or beats AdamW, SOAP and Muon. {verdict}",
        width=180,
    )
    fig.savefig(path, dpi=120)
