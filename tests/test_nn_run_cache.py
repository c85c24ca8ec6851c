"""``run_quality(cache=DIR)``: an interrupted comparison resumes from its finished runs, with
the same result as one uninterrupted run, and nothing it did not compute itself is ever read
(another hyper-parameter, seed, size or package source is a miss)."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from manifold_spectral.experiments.nn_training import make_task, optimizers, run_cache, training
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


def test_an_edit_of_ours_misses_ours_and_keeps_the_peers(tmp_path, monkeypatch):
    """The whole package's digest changes (an edit of the optimizer): the peers' runs, which
    execute only ``PEER_SOURCES``, are read; ours train again. An edit of a file the peers
    run misses every run."""
    run_quality(**KW, cache=tmp_path)
    real = run_cache.source_digest
    monkeypatch.setattr(
        run_cache,
        "source_digest",
        lambda sources=None: "edited" if sources is None else real(sources),
    )
    calls = _count_trains(monkeypatch)
    assert run_quality(**KW, cache=tmp_path).cached == 3 and calls[0] == 3  # adamw's 3 read
    monkeypatch.setattr(run_cache, "source_digest", lambda sources=None: "edited everywhere")
    calls = _count_trains(monkeypatch)
    assert run_quality(**KW, cache=tmp_path).cached == 0 and calls[0] == 6


def test_another_builder_under_the_same_name_is_a_miss(tmp_path, monkeypatch):
    """A method re-registered under its name with other fixed options (as the benchmark
    scripts register option variants) is another method."""
    run_quality(**KW, cache=tmp_path)
    spec = optimizers.OPTIMIZERS["spectral-p2"]
    other = dataclasses.replace(spec, build=optimizers._spectral(basis_scale=3.0))
    monkeypatch.setitem(optimizers.OPTIMIZERS, "spectral-p2", other)
    calls = _count_trains(monkeypatch)
    assert run_quality(**KW, cache=tmp_path).cached == 3 and calls[0] == 3  # adamw's read


@pytest.mark.parametrize("task", ["mlp", "transformer", "stdlib", "digits"])
def test_peer_sources_are_the_files_a_peer_run_executes(task):
    """Every package file whose code runs during a peer's training run (traced) is one of
    ``PEER_SOURCES``, so a run kept under their digest cannot depend on another file; ours
    runs files outside them (the trace sees the package)."""
    sizes = {
        "mlp": TINY["mlp"],
        "transformer": {"model": dict(dim=16, heads=2, ff=32, layers=1), "batch": 4},
        "stdlib": {"seq_len": 16, "batch": 4, "model": dict(dim=16, heads=2, ff=32, layers=1)},
        "digits": {"batch": 8, "channels": (4, 4)},
    }[task]
    t = make_task(task, **sizes)
    package = Path(run_cache.__file__).resolve().parents[2]
    hp = {"lr": 1e-3, "1-beta2": 0.01, "adamw_lr": 1e-3}
    for method in ("adamw", "soap", "muon", "spectral-p2"):
        spec = optimizers.OPTIMIZERS[method]
        seen: set[str] = set()

        def profile(frame, event, arg, seen=seen):
            path = Path(frame.f_code.co_filename)
            if event == "call" and package in path.parents:
                seen.add(path.relative_to(package).as_posix())

        knobs = {k: hp[k] for k in spec.space}
        sys.setprofile(profile)
        try:
            training.train(t, method, knobs, 0, 3, update_every=1, precision="fp32", evals=1)
        finally:
            sys.setprofile(None)
        if method == "spectral-p2":
            assert spec.sources is None and seen - set(optimizers.PEER_SOURCES), sorted(seen)
        else:
            assert spec.sources == optimizers.PEER_SOURCES
            assert seen and seen <= set(optimizers.PEER_SOURCES), sorted(seen)


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


def test_another_cpu_model_is_a_miss(monkeypatch):
    """Another CPU computes other roundings: its model is part of every key, and it is the
    model name /proc/cpuinfo gives (the line the benchmark blocks print too)."""
    key = run_cache.run_key(method="adamw", seed=1)
    monkeypatch.setattr(run_cache, "cpu_model", lambda: "Another CPU")
    assert run_cache.run_key(method="adamw", seed=1) != key
    monkeypatch.undo()
    assert run_cache.run_key(method="adamw", seed=1) == key
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        re.findall(r"^model name\s*:\s*(.*?)\s*$", cpuinfo.read_text(), re.M)
        if cpuinfo.is_file()
        else []
    )
    if names:
        assert run_cache.cpu_model() == names[0]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import _readme
    finally:
        sys.path.pop(0)
    assert _readme.machine().startswith(run_cache.cpu_model() + ", ")


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


def test_a_builder_outside_the_package_is_keyed_by_its_whole_file(tmp_path, monkeypatch):
    """A builder defined in a script reads the script's module-level names: an edit of one
    of them, with the builder's own text unchanged, is another identity."""
    script = tmp_path / "variant_script.py"
    script.write_text("SCALE = 2.0\n\ndef build(model, hp, every):\n    return SCALE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("variant_script")
    first = run_cache.builder_identity(module.build)
    assert first == run_cache.builder_identity(module.build)
    script.write_text("SCALE = 3.0\n\ndef build(model, hp, every):\n    return SCALE\n")
    assert run_cache.builder_identity(module.build) != first
    # a package builder: its text and closure (the file is in the package's digest)
    inside = run_cache.builder_identity(optimizers._spectral(basis_scale=3.0))
    assert inside[-1] is None and "basis_scale" in inside[3][0]
