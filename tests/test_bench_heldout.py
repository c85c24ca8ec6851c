"""``benchmarks/bench_heldout.py``: the grid's edge extension, the split, and a tiny run."""

from __future__ import annotations

import math
import types

import pytest
from _benchmarks import import_benchmark


@pytest.fixture(scope="module")
def heldout():
    pytest.importorskip("sklearn")
    yield from import_benchmark("bench_heldout")


@pytest.mark.parametrize("slope, expected", [(-1.0, 3e-1), (1.0, 3e-5)])
def test_tune_extends_a_winning_edge_twice(heldout, monkeypatch, slope, expected):
    """A loss monotone in lr wins at a grid edge: the grid grows by two half decades past
    that edge (AdamW's grid: 3e-4 .. 3e-2, so up to 3e-1 or down to 3e-5)."""
    calls = []

    def fake_run(task, method, hp, seed, steps):
        calls.append(hp["lr"])
        return types.SimpleNamespace(final=slope * math.log(hp["lr"]) + 10 * hp["1-beta2"])

    monkeypatch.setattr(heldout, "_run", fake_run)
    best, per_lr = heldout.tune(None, "adamw", steps=1)
    assert best["lr"] == pytest.approx(expected)
    assert best["1-beta2"] == 1e-3  # the second knob's better value
    assert len(per_lr) == 7 and len(calls) == 14  # 5 lrs x 2 knobs, then 2 x 2 more


def test_tune_stops_at_an_interior_winner(heldout, monkeypatch):
    monkeypatch.setattr(
        heldout,
        "_run",
        lambda task, method, hp, seed, steps: types.SimpleNamespace(
            final=abs(math.log(hp["lr"] / 1e-3))
        ),
    )
    best, per_lr = heldout.tune(None, "spectral-p2", steps=1)
    assert best == {"lr": pytest.approx(1e-3)} and len(per_lr) == 5


def test_refinement_bisects_the_log_lr_around_the_best_point(heldout, monkeypatch):
    """SOAP's grid is 3e-4 .. 3e-2 in half decades; with the optimum 0.2 decade above its
    second point g, g wins the grid and gets a quarter decade each side; the better one
    (g + 0.25) then an eighth each side, the second knob kept."""
    calls = []
    g = math.log10(3e-4) + 0.5

    def fake_run(task, method, hp, seed, steps):
        calls.append(hp)
        return types.SimpleNamespace(final=abs(math.log10(hp["lr"]) - g - 0.2) - hp["1-beta2"])

    monkeypatch.setattr(heldout, "_run", fake_run)
    best, per_lr = heldout.tune(None, "soap", steps=1, refine=2)
    assert len(calls) == 10 + 4 and len(per_lr) == 5 + 4
    refined = [math.log10(hp["lr"]) - g for hp in calls[10:]]
    assert refined == pytest.approx([-0.25, 0.25, 0.125, 0.375], abs=1e-12)
    assert all(hp["1-beta2"] == 5e-2 for hp in calls[10:])  # the winner's, not the first
    assert math.log10(best["lr"]) - g == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("name", ["cancer", "digits-mlp", "stdlib-bow"])
def test_held_out_rows_are_not_the_training_rows(heldout, name):
    """The held-out set is a different part of the data (not the training rows)."""
    task = heldout.make_task(name)
    rows = {tuple(r.flatten().tolist()) for r in task.tx}
    held = [tuple(r.flatten().tolist()) for r in task.ex]
    # identical source lines (``return None``) may sit on both sides of the text task's split
    assert sum(h in rows for h in held) < 0.5 * len(held)
    assert len(task.ty) == len(task.tx) and len(task.ey) == len(task.ex)


def test_tiny_run_prints_both_tables(heldout, capsys):
    argv = ["--tasks", "cancer", "--steps", "3", "--seeds", "2", "--no-write"]
    assert heldout.main(argv) == 0
    out = capsys.readouterr().out
    for label in heldout.LABEL.values():
        assert out.count(label) == 2  # the result table and the lr-grid table
    assert "| cancer |" in out


def test_an_option_run_compares_the_defaults_with_the_variant_only(heldout, monkeypatch, capsys):
    """``--option``: the defaults and the variant, each tuned on the defaults' grid, on the
    same seeds (no peers); the variant is registered for the run only."""
    from manifold_spectral.experiments.nn_training import optimizers

    calls = []

    def fake_run(task, method, hp, seed, steps):
        calls.append(method)
        final = abs(math.log(hp["lr"] / 1e-3)) + seed + (0.5 if method == heldout.VARIANT else 0)
        return types.SimpleNamespace(final=final, train_tail=0.0)

    monkeypatch.setattr(heldout, "_run", fake_run)
    argv = ["--tasks", "cancer", "--seeds", "2", "--option", "basis_scale=1.0", "--no-write"]
    assert heldout.main(argv) == 0
    assert set(calls) == {"spectral-p2", heldout.VARIANT}
    assert heldout.VARIANT not in optimizers.ABLATIONS and heldout.VARIANT not in heldout.GRID
    # both tuned to lr 1e-3 on seed 0; seeds 1, 2: defaults 1, 2; the variant 1.5, 2.5
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row == (
        "| cancer | 1.5000 ± 0.5000 (lr 0.001) | 2.0000 ± 0.5000 (lr 0.001) "
        "| +0.5000 ± 0.0000 | 0/2 |"
    )


def test_the_option_table_pairs_seeds(heldout):
    res = {
        "cancer": {
            "spectral-p2": {"final": [1.0, 2.0], "best": {"lr": 1e-3}},
            heldout.VARIANT: {"final": [0.5, 2.5], "best": {"lr": 3e-3}},
        }
    }
    row = heldout.format_option(res, "basis_scale=1.0").splitlines()[-1]
    assert row == (
        "| cancer | 1.5000 ± 0.5000 (lr 0.001) | 1.5000 ± 1.0000 (lr 0.003) "
        "| +0.0000 ± 0.5000 | 1/2 |"
    )
