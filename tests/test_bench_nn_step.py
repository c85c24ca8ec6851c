"""``benchmarks/bench_nn_step.py``: every timed run spans a whole number of refresh periods,
and the table's ratios are the measured times' (issue 13 item 3's figures)."""

from __future__ import annotations

import argparse

import pytest
from _benchmarks import import_benchmark


@pytest.fixture(scope="module")
def nn_step():
    yield from import_benchmark("bench_nn_step")


@pytest.mark.parametrize("period, expected", [(1, 10), (2, 10), (3, 12), (10, 10), (25, 25)])
def test_timed_steps_are_whole_periods(nn_step, monkeypatch, period, expected):
    """At least ``--min-steps`` (10) timed steps, rounded up to a multiple of the period: each
    run then holds the same number of refreshes, whatever their phase."""
    seen = []
    monkeypatch.setattr(nn_step, "make", lambda task: task)
    monkeypatch.setattr(
        nn_step, "ms_per_step", lambda t, m, p, steps, prec: seen.append((p, steps)) or 1.0
    )
    args = argparse.Namespace(methods=["soap"], rounds=2, min_steps=10, precision="fp32")
    nn_step.bench("mlp", period, args)
    assert seen == [(period, expected)] * 2


def test_table_ratios_are_the_measured_times(nn_step):
    """ours / SOAP, ours bf16 state / SOAP and ours / AdamW from the row's own times."""
    ms = {"adamw": 2.0, "muon": 3.0, "soap": 8.0, "spectral-p2": 10.0, "spectral-p2-bf16": 6.0}
    table = nn_step.table({("digits/full", 2): ms}, list(nn_step.METHODS))
    row = table.splitlines()[-1].split("|")[1:-1]
    assert [c.strip() for c in row] == [
        "digits/full", "2", "2.0", "3.0", "8.0", "10.0", "6.0", "1.25", "0.75", "5.00"
    ]  # fmt: skip


def test_an_option_is_timed_as_one_more_method(nn_step, monkeypatch, capsys):
    """``--option``: the defaults with the option, built as the quality scripts build
    SpectralKron, in its own column with its ratios to SOAP and to the defaults."""
    built = []
    monkeypatch.setattr(nn_step, "make", lambda task: task)
    # main registers the variant: in a copy that the test's end drops
    monkeypatch.setattr(nn_step.optimizers, "ABLATIONS", dict(nn_step.optimizers.ABLATIONS))

    def fake(task, method, period, steps, precision):
        spec = nn_step.optimizers.optimizer_spec(method)
        built.append(method)
        return {"soap": 8.0, "spectral-p2": 10.0}.get(spec.name, 4.0)

    monkeypatch.setattr(nn_step, "ms_per_step", fake)
    argv = ["--tasks", "mlp", "--periods", "2", "--methods", "soap", "spectral-p2"]
    nn_step.main([*argv, "--rounds", "1", "--option", "max_aspect=10.0", "--no-write"])
    assert sorted(built) == sorted(["soap", "spectral-p2", nn_step.VARIANT])
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")[1:-1]
    assert [c.strip() for c in row] == ["mlp", "2", "8.0", "10.0", "4.0", "1.25", "0.50", "0.40"]
