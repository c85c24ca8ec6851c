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
