"""BBOB runner (``manifold_spectral.experiments.bbob``): the evaluation counter, ERT, the
tables, the ECDF files and ``manifold-spectral reproduce bbob`` at toy scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from manifold_spectral import cli
from manifold_spectral.experiments import bbob

pytest.importorskip("cocoex")
pytest.importorskip("cma")


def test_counter_stops_at_budget_and_records_first_hits():
    suite, problem, fopt = bbob._problem(1, 2, 1)  # the sphere: f(x_opt) = f_opt
    counter = bbob.Counter(problem, fopt, budget=5)
    far = np.full(2, 4.0)
    d1 = counter(far) - fopt
    assert d1 > 1.0 and counter.hits[-1] == -1
    counter(far)
    with bbob._in_tmpdir():
        problem._best_parameter("print")
        xopt = np.loadtxt("._bbob_problem_best_parameter.txt")
    assert counter(xopt) == fopt  # evaluation 3 reaches every target
    np.testing.assert_array_equal(counter.hits, np.where(d1 < bbob.TARGETS, 1, 3))
    assert counter.best == 0.0 and counter.evals == 3
    with pytest.raises(bbob.Stop):  # after the final target: no more evaluations
        counter(far)
    other = bbob.Counter(problem, fopt, budget=2)
    other.batch(np.stack([far, far]))
    with pytest.raises(bbob.Stop):
        other(far)
    assert other.evals == 2
    problem.free()
    suite.free()


def _row(method, f, success, evals, hits):
    return {"method": method, "function": f, "dim": 2, "instance": 1, "evals": evals,
            "success": success, "best": 0.0, "seconds": 0.0, "hits": hits}  # fmt: skip


def test_ert_tables_and_ecdf(tmp_path):
    hit = " ".join(["10"] * 51)
    miss = " ".join(["10"] * 25 + ["-1"] * 26)
    rows = [
        _row("nes", 1, 1, 100, hit),
        _row("nes", 1, 0, 400, miss),
        _row("cma", 1, 1, 50, hit),
        _row("cma", 1, 1, 150, hit),
    ]
    assert bbob.ert(rows[:2]) == (1, 500.0)  # (100 + 400) / 1 success
    assert bbob.ert(rows[2:]) == (2, 100.0)
    assert bbob.ert([rows[1]]) == (0, math.inf)
    text = bbob.tables(rows, ["nes", "cma"])
    assert "| 1 | 2 | 1/2 | 500 | 2/2 | 100 | 5.00 |" in text
    assert "worse than 1.2x: f1 D=2 5.00" in text and "IPOP" not in text
    png = tmp_path / "ecdf.png"
    bbob.ecdf(rows, ["nes", "cma"], png, budget_mult=100)
    assert png.read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "ecdf.csv").read_text().splitlines()
    assert lines[0] == "evals_per_dim,nes_D2,cma_D2"
    last = lines[-1].split(",")  # every hit at 10 evaluations = 5 evaluations / D
    assert float(last[0]) == 100 and float(last[1]) == pytest.approx(76 / 102, abs=1e-4)
    assert float(last[2]) == 1.0
    bbob.write_runs(rows, tmp_path / "runs.csv")
    back = bbob.read_runs(tmp_path / "runs.csv")
    assert [(r["evals"], r["success"]) for r in back] == [(r["evals"], r["success"]) for r in rows]


def test_reproduce_bbob_cli_runs_every_method(tmp_path, capsys):
    argv = ["reproduce", "bbob", "--dims", "2", "--functions", "1", "--instances", "1",
            "--budget", "300", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Triples solved: spectral NES 1/1, CMA-ES 1/1" in out
    assert "Triples solved: spectral NES, IPOP 1/1, IPOP-CMA-ES 1/1" in out
    assert "Triples solved: spectral NES, BIPOP 1/1, IPOP-CMA-ES 1/1" in out
    rows = bbob.read_runs(tmp_path / "runs.csv")
    assert sorted(r["method"] for r in rows) == sorted(bbob.METHODS)
    assert all(0 < r["evals"] <= 600 and r["best"] < 1e-8 for r in rows)
    assert (tmp_path / "bbob.png").exists() and (tmp_path / "bbob.csv").exists()
    assert cli.BBOB_METHODS == tuple(bbob.METHODS)
    with pytest.raises(ValueError, match="functions"):
        bbob.jobs([2], [25], [1], ["nes"], 1.0)
    with pytest.raises(ValueError, match="methods"):
        bbob.jobs([2], [1], [1], ["nope"], 1.0)
    assert [j[1] for j in bbob.jobs([20], [1, 3], [1], ["nes"], 1.0)] == [1]  # D20 only
    with pytest.raises(ValueError, match=r"^functions: no run at D in \[20\] for functions \[13\]"):
        bbob.run_bbob(dims=[20], functions=[13], instances=[1], methods=["nes"], budget=1.0)


@pytest.mark.parametrize("method,regime", [("nes-bipop", "small"), ("nes-ipop", "large")])
def test_nes_bipop_runs_bipop_and_nes_ipop_stays_ipop(monkeypatch, method, regime):
    """``nes-bipop`` is ``RestartNES`` with ``bipop=True``: on Rastrigin (f3, D = 2, instance
    2) the first run stops at a local minimum and BIPOP's next run is a small-population one
    (IPOP's is a large one); ``nes-ipop`` keeps IPOP. Fails when ``run_one`` drops
    ``bipop=True`` or passes it to every NES method."""
    from manifold_spectral.solvers import restarts

    made = []

    class Spy(restarts.RestartNES):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(restarts, "RestartNES", Spy)
    row = bbob.run_one((method, 3, 2, 2, 1000.0))
    assert len(made) == 1
    es = made[0]
    assert es.bipop is (method == "nes-bipop") and es.restarts == 9
    assert len(es.runs) >= 2 and es.runs[1]["regime"] == regime
    label = "BIPOP" if method == "nes-bipop" else "IPOP"
    assert es.result.method.split("(")[1].startswith(label + ",")
    assert row["method"] == method and row["evals"] > es.runs[0]["nfev"]
