"""``run_quality(cache=DIR)``: an interrupted comparison resumes from its finished runs, with
the same result as one uninterrupted run, and nothing it did not compute itself is ever read
(another hyper-parameter, seed, size or package source is a miss)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from manifold_spectral.experiments.nn_training import run_cache, training
from manifold_spectral.experiments.nn_training.training import Run, run_quality

TINY = {"mlp": {"d_in": 8, "width": 16, "batch": 8, "eval_size": 64}}
KW = dict(
    tasks=["mlp"],
    methods=["adamw", "spectral-p2"],
    ablations=False,
    trials=2,
    steps=6,
    seeds=[1],
    precision="fp32",
    update_every=1,
    task_kw=TINY,
    progress=False,
)


def _finals(result):
    t = result.tasks[0]
    return {
        m: [(r.hp, r.final, r.loss.tolist(), r.eval_loss) for r in rs]
        for m, rs in (t.trials | {f"{m}/seed": v for m, v in t.runs.items()}).items()
    }


REAL_TRAIN = training.train


class Stopped(Exception):
    """The run stopped from outside (a session's end, a kill)."""


def _count_trains(monkeypatch, fail_after: int | None = None) -> list[int]:
    calls = [0]
    real = REAL_TRAIN

    def counted(*args, **kw):
        if fail_after is not None and calls[0] >= fail_after:
            raise Stopped
        calls[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(training, "train", counted)
    return calls


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    plain = run_quality(**KW)  # no cache: 2 methods x (2 trials + 1 seed) = 6 runs
    assert plain.cached == 0
    calls = _count_trains(monkeypatch, fail_after=4)
    with pytest.raises(Stopped):
        run_quality(**KW, cache=tmp_path)
    assert calls[0] == 4 and len(list(tmp_path.glob("*.json"))) == 4
    calls = _count_trains(monkeypatch)
    resumed = run_quality(**KW, cache=tmp_path)
    assert calls[0] == 2 and resumed.cached == 4  # only the two missing runs trained
    assert _finals(resumed) == _finals(plain)  # the same bits
    calls = _count_trains(monkeypatch)
    again = run_quality(**KW, cache=tmp_path)
    assert calls[0] == 0 and again.cached == 6
    assert _finals(again) == _finals(plain)
    # the seed runs' timing comes back too (the table's ms / step column)
    np.testing.assert_array_equal(
        again.tasks[0].runs["adamw"][0].seconds, resumed.tasks[0].runs["adamw"][0].seconds
    )


@pytest.mark.parametrize(
    "change",
    [
        dict(seeds=[2]),
        dict(steps=7),
        dict(update_every=2),
        dict(precision="bf16"),
        dict(task_kw={"mlp": TINY["mlp"] | {"width": 17}}),
    ],
)
def test_a_different_run_is_a_miss(tmp_path, monkeypatch, change):
    run_quality(**KW, cache=tmp_path)
    calls = _count_trains(monkeypatch)
    other = run_quality(**(KW | change), cache=tmp_path)
    # the random-search trials train on seed 0: a new evaluation seed re-uses them alone
    expect_hits = 4 if "seeds" in change else 0
    assert other.cached == expect_hits and calls[0] == 6 - expect_hits


def test_a_changed_package_source_is_a_miss(tmp_path, monkeypatch):
    run_quality(**KW, cache=tmp_path)
    monkeypatch.setattr(run_cache, "source_digest", lambda: "an edited optimizer")
    calls = _count_trains(monkeypatch)
    assert run_quality(**KW, cache=tmp_path).cached == 0 and calls[0] == 6


def test_the_source_digest_reads_the_package_files(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    monkeypatch.setattr(run_cache, "_PACKAGE", pkg)
    run_cache.source_digest.cache_clear()
    try:
        first = run_cache.source_digest()
        run_cache.source_digest.cache_clear()
        (pkg / "sub" / "b.py").write_text("y = 3\n")
        assert run_cache.source_digest() != first
        run_cache.source_digest.cache_clear()
        (pkg / "sub" / "b.py").write_text("y = 2\n")
        (pkg / "notes.txt").write_text("not source")
        assert run_cache.source_digest() == first
    finally:
        run_cache.source_digest.cache_clear()


def test_a_diverged_run_round_trips(tmp_path):
    run = Run(
        "soap",
        {"lr": 0.1},
        3,
        np.array([1.5, np.nan]),
        np.array([0.01, np.nan]),
        [0, 2],
        [2.0],
        math.inf,
        "step 1: non-finite loss",
    )
    run_cache.store(tmp_path, "k", training._run_fields(run))
    back = training._run_from_fields(run_cache.load(tmp_path, "k"))
    assert back.final == math.inf and back.error == run.error and back.hp == run.hp
    np.testing.assert_array_equal(back.loss, run.loss)
    assert run_cache.load(tmp_path, "missing") is None
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed
