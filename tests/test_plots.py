"""The reproduction figures (issue 16, item 3): ours drawn on top and distinguishable, curves
hidden under another named in the legend (from the data), no y-axis clipping a curve, a caption
per panel and a note per figure, the ablation colours distinct. The figures are captured by
replacing ``_compat.agg_figure``'s Figure class with one that keeps its instances."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from manifold_spectral import _compat  # noqa: E402
from manifold_spectral.experiments import _plotstyle as ps  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """The Figures the plot functions build (in order)."""
    made: list[Figure] = []
    real = _compat.agg_figure

    class Kept(Figure):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(_compat, "agg_figure", lambda *a: (Kept, real(*a)[1]))
    return made


def data_lines(ax):
    """The curves of a panel (horizontal reference lines excluded)."""
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]


def base_label(label: str) -> str:
    """A legend label without its overlap note ("(within ...)", "(coincides with ...)")."""
    for note in (" (within ", " (coincides with ", " (under "):
        label = label.split(note)[0]
    return label


def check_panels(fig: Figure, ours: str = "(ours)") -> None:
    """Every panel: a title plus a caption line, ours above every other curve and thicker,
    every finite point of every curve inside the y-limits (nothing clipped); a figure note."""
    assert fig._suptitle is not None and len(fig._suptitle.get_text()) > 80
    for ax in fig.axes:
        title = ax.get_title(loc="left")
        assert "\n" in title and len(title.split("\n", 1)[1]) > 20, title
        lines = data_lines(ax)
        mine = [ln for ln in lines if ours in base_label(ln.get_label())]
        others = [ln for ln in lines if ours not in base_label(ln.get_label())]
        mine = [ln for ln in mine if ln.get_linestyle() == "-"] or mine  # ablations: dashed
        assert mine and others
        assert min(ln.get_zorder() for ln in mine) > max(ln.get_zorder() for ln in others)
        assert min(ln.get_linewidth() for ln in mine) > max(ln.get_linewidth() for ln in others)
        lo, hi = ax.get_ylim()
        for ln in lines:
            y = np.asarray(ln.get_ydata(), dtype=float)
            y = y[np.isfinite(y)]
            if ax.get_yscale() == "log":
                y = y[y > 0]
            assert y.size == 0 or (lo < y.min() and y.max() < hi), (ln.get_label(), lo, hi)


# The helpers -----------------------------------------------------------------------------------


def test_overlap_notes_and_labels():
    x = np.geomspace(1, 100, 50)
    curves = {
        "ours": x,
        "near": x * 1.03,
        "same": x * (1 + 1e-9),
        "partly": np.where(np.arange(50) < 45, x, 10 * x),
        "far": 3 * x,
        "nan": np.full(50, np.nan),
    }
    notes = ps.overlap_notes(curves)
    assert set(notes) == {"same", "near", "partly"}
    labels = {k: k.upper() for k in curves}
    assert ps.label_with_overlap("S", notes["same"], labels) == "S (coincides with OURS)"
    near = ps.label_with_overlap("N", notes["near"], labels)
    assert near.startswith("N (within 2.") and "of OURS)" in near
    assert ps.label_with_overlap("P", notes["partly"], labels) == (
        "P (under OURS for 90% of the points)"
    )
    assert ps.label_with_overlap("F", None, labels) == "F"
    # a tighter tolerance (linear axes): 3% apart everywhere is no overlap
    assert "near" not in ps.overlap_notes(curves, tol=0.01)


def test_line_style_puts_ours_on_top():
    mine, other = ps.line_style(True, 100), ps.line_style(False)
    assert mine["zorder"] > other["zorder"] and mine["lw"] > other["lw"]
    assert mine["marker"] and mine["markevery"] >= 1


# The figures -----------------------------------------------------------------------------------


def test_curvature_figures(figures, tmp_path):
    from manifold_spectral.experiments import curvature as cv
    from manifold_spectral.experiments import curvature_kronecker as ck

    full = cv.run_full_matrix(n=6, steps=60, beta2=0.1, progress=False)
    cv.plot([full], tmp_path / "c.png")
    check_panels(figures[-1])
    kron = ck.run_kronecker(a=2, b=3, steps=60, beta2=0.1, progress=False)
    ck.plot(kron, tmp_path / "k.png")
    fig = figures[-1]
    check_panels(fig)
    note = fig._suptitle.get_text()
    assert "Fixed-point matching" in note and "Iterate matching" in note and "floor" in note
    iterate = fig.axes[2]
    assert "not divergence" in iterate.get_title(loc="left").replace("\n", " ")
    labels = [ln.get_label() for ln in data_lines(fig.axes[0])]
    # The practical scheme lies on the exact one most of the way: its label says so.
    assert labels[1].startswith("Spectral practical (ours) (under Spectral (ours) for"), labels


def test_spd_figure(figures, tmp_path):
    from manifold_spectral.experiments import spd as ex

    r = ex.run_spd(8, steps_nearness=60, steps_logdet=60, progress=False)
    ex.plot(r, tmp_path / "s.png")
    fig = figures[-1]
    check_panels(fig)
    for ax in fig.axes:
        assert "iterations to 1e-06" in ax.get_title(loc="left").replace("\n", " ")


def test_nes_figure(figures, tmp_path):
    from manifold_spectral.experiments import nes as ex

    r = ex.run_nes(
        n=4, seeds=2, max_evals=300, functions=["ackley"], methods=["spectral", "xnes", "cma"],
        progress=False,
    )  # fmt: skip
    ex.plot(r, tmp_path / "n.png")
    fig = figures[-1]
    check_panels(fig)
    assert "shaded bands: min-max over the seeds" in fig._suptitle.get_text()
    assert len(fig.axes[0].collections) == 3  # one band per method with two seeds
    caption = fig.axes[0].get_title(loc="left").replace("\n", " ")
    reached = [m for m in r.methods if any(x.evals_to(r.target) for x in r.select("ackley", m))]
    assert ("no method reaches" in caption) == (not reached)


def _nn_result(ours_final: float):
    """A hand-made QualityResult: AdamW ends at 1.5, ours (p=2) at ``ours_final``, with the
    two ablations and the eigenvalue-correction method."""
    from manifold_spectral.experiments import nn_training as nt

    steps = [0, 5, 10]

    def run(method: str, final: float) -> nt.Run:
        losses = [2.3, 1.9 if method != "spectral-p2" else 3.0, final]  # ours spikes
        secs = np.array([0.1] * 10).cumsum()
        return nt.Run(method, {"lr": 0.01}, 1, np.zeros(10), secs, steps, losses, final)

    methods = {"adamw": 1.5, "spectral-p2": ours_final, "spectral-p2-paper": 1.7}
    ablations = {"spectral-p2-bf16": 1.8, "spectral-p2-exact": 1.9}
    runs = {m: [run(m, f)] for m, f in {**methods, **ablations}.items()}
    best = {m: {"lr": 0.01} for m in methods}
    task = nt.TaskResult("mlp", "mlp", 1.0, 2.3, 10, {m: [] for m in methods}, best, runs)
    return nt.QualityResult([task], 2, [1], "bf16", 2, 1, 1.0)


@pytest.mark.parametrize("ours_final,shown", [(1.4, True), (1.6, False)])
def test_nn_figure(figures, tmp_path, ours_final, shown):
    from manifold_spectral.experiments import nn_training as nt

    nt.plot(_nn_result(ours_final), tmp_path / "nn.png")
    fig = figures[-1]
    check_panels(fig)
    note = fig._suptitle.get_text().replace("\n", " ")
    assert ("This run shows it" in note) == shown
    assert ("does NOT show it on mlp" in note) == (not shown)
    color = {ln.get_label(): ln.get_color() for ln in data_lines(fig.axes[0])}
    assert color["SpectralKron defaults, bf16 state"] != color["Spectral p=2, paper scheme (ours)"]
    assert len(set(color.values())) == len(color)  # every method its own colour
    # The spike of ours (3.0) is inside the axis: no hard upper limit.
    assert fig.axes[0].get_ylim()[1] > 3.0 > 2.3 + 0.1


def test_bbob_figure(figures, tmp_path):
    from manifold_spectral.experiments import bbob

    hits = " ".join(["1"] * 10 + ["-1"] * 41)
    rows = [
        {"method": m, "function": 1, "dim": 2, "instance": 1, "hits": hits}
        for m in ("nes", "nes-ipop", "cma", "cma-ipop")
    ]
    bbob.ecdf(rows, list(bbob.METHODS), tmp_path / "b.png", 100.0)
    fig = figures[-1]
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo < 0 and hi > 1  # the fractions 0 and 1 are not on the frame
    labels = [ln.get_label() for ln in data_lines(ax)]
    assert "spectral NES, IPOP (ours) (coincides with spectral NES (ours))" in labels
    assert "IPOP-CMA-ES (coincides with spectral NES (ours))" in labels


def test_nn_table_reports_the_training_loss_of_the_last_tenth_of_the_steps():
    """The table's training-loss column is the mean minibatch loss over the last 10% of the
    steps, averaged over the seeds: here the last 2 of 20 steps (1.0, 3.0 and 5.0, 7.0)."""
    from manifold_spectral.experiments import nn_training as nt

    def run(method: str, seed: int, tail: list[float]) -> nt.Run:
        loss = np.concatenate([np.full(18, 9.0), tail])
        secs = np.arange(1, 21) * 0.1
        return nt.Run(method, {"lr": 0.01}, seed, loss, secs, [0, 20], [2.3, 1.5], 1.5)

    runs = {"adamw": [run("adamw", 1, [1.0, 3.0]), run("adamw", 2, [5.0, 7.0])]}
    task = nt.TaskResult("mlp", "mlp", None, 2.3, 20, {"adamw": []}, {"adamw": {"lr": 0.01}}, runs)
    table = nt.format_table(nt.QualityResult([task], 2, [1, 2], "fp32", 1, 1, 1.0))
    row = next(line for line in table.splitlines() if line.startswith("| AdamW"))
    assert row.split("|")[6].strip() == "4.0000"  # (2 + 6) / 2
    assert math.isnan(run("adamw", 1, [1.0, float("nan")]).train_tail)


def test_nn_ms_per_step_is_the_mean_after_the_first_step_not_the_median():
    """A refresh every 10th step costs 10 ms, the steps between it 1 ms, the first 50 ms (state
    initialisation): the time per step a user pays is (9 * 1 + 10) / 10 = 1.9 ms; the median
    step (1 ms) would hide the refresh, and the first step is a one-off left out."""
    from manifold_spectral.experiments import nn_training as nt

    secs = np.cumsum([0.05, *[0.001] * 9, 0.01]) * 1.0
    run = nt.Run("soap", {"lr": 0.01}, 1, np.zeros(11), secs, [0, 11], [2.3, 1.5], 1.5)
    assert run.ms_per_step == pytest.approx(1.9)
    stopped = np.where(np.arange(11) < 5, secs, np.nan)  # a run that stopped at step 5
    assert math.isnan(
        nt.Run("soap", {}, 1, np.zeros(11), stopped, [0], [2.3], math.inf).ms_per_step
    )
