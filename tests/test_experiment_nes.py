"""NES reproduction (paper Sec. 4.3, Fig. 9): experiment runner, table, plot and CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from manifold_spectral import cli
from manifold_spectral.experiments import nes as ex


@pytest.fixture(scope="module")
def small():
    # n = 6, 2 seeds, 1500 evaluations: every method and function, at a toy size so that the
    # suite stays short.
    return ex.run_nes(n=6, seeds=2, max_evals=1500, progress=False)


def test_runs_cover_every_cell_and_curves_are_monotone(small):
    assert len(small.runs) == len(ex.APPENDIX_C) * len(ex.DEFAULT_METHODS) * 2
    for run in small.runs:
        assert run.nfev.shape == run.fbest.shape and run.nfev.size > 0
        assert np.all(np.diff(run.fbest) <= 0) and np.all(np.diff(run.nfev) > 0)
        assert run.nfev[-1] <= 1500 + 20  # at most one generation past the budget
    # Seed s starts every method from the same x0: the first generation's best values agree
    # in order of magnitude (same box, same sigma0).
    firsts = [r.fbest[0] for r in small.select("griewank", "spectral")]
    assert all(np.isfinite(firsts))


def test_spectral_matches_the_riemannian_baselines(small):
    # Fig. 9's claim at toy scale: ours within a factor 10 of DX-NES and Cholesky NES in
    # final value on the smooth problems (a factor wide enough for other seeds and platforms).
    for function in ("rosenbrock", "griewank"):
        ours = np.median([r.final for r in small.select(function, "spectral")])
        for other in ("xnes", "cholesky"):
            ref = np.median([r.final for r in small.select(function, other)])
            assert ours <= 10 * ref + 1e-8, (function, other, ours, ref)


def test_table_and_plot(small, tmp_path):
    table = ex.format_table(small)
    assert "n=6, 2 seeds" in table
    for method in ex.DEFAULT_METHODS:
        assert ex.METHODS[method][0] in table
    png = tmp_path / "nes.png"
    ex.plot(small, png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_run_method_rejects_unknown_names():
    with pytest.raises(ValueError, match="method"):
        ex.run_method("nope", "ackley", 4, 0, 100)
    with pytest.raises(ValueError, match="function"):
        ex.run_method("spectral", "nope", 4, 0, 100)
    with pytest.raises(ValueError, match="seeds"):
        ex.run_nes(seeds=0, progress=False)


def test_cli_choices_match_the_experiment():
    assert cli.NES_FUNCTIONS == ex.APPENDIX_C
    assert cli.NES_METHODS == ex.DEFAULT_METHODS
    assert set(cli.NES_METHODS) == set(ex.METHODS)


def test_cli_nes_end_to_end(tmp_path, capsys):
    argv = ["reproduce", "nes", "--n", "5", "--seeds", "1", "--max-evals", "300"]
    argv += ["--functions", "ackley", "griewank", "--methods", "spectral", "cma"]
    assert cli.main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "n=5, 1 seed, budget 300" in text and "wall time (nes)" in text
    assert (tmp_path / "nes.png").read_bytes()[:4] == b"\x89PNG"
    assert "Spectral NES (ours)" in (tmp_path / "nes.txt").read_text()


def test_cli_all_runs_the_quick_nes(tmp_path, capsys, reproductions):
    for name in list(reproductions):
        if name != "nes":  # the other reproductions are tested elsewhere
            del reproductions[name]
    rep = reproductions["nes"]
    assert rep.quick == {"seeds": 1, "max_evals": 10_000}
    tiny = {"n": 4, "seeds": 1, "max_evals": 200, "methods": ["spectral"]}
    reproductions["nes"] = dataclasses.replace(rep, quick=tiny)
    assert cli.main(["reproduce", "all", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "wall time (all)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "0"], "argument --n: expected an integer >= 2"),
        (["--seeds", "x"], "argument --seeds: expected a positive integer"),
        (["--methods", "bogus"], "argument --methods: invalid choice"),
        (["--functions", "sphere"], "argument --functions: invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["reproduce", "nes", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
