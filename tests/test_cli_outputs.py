"""Findings of a second outside test of the command line: a run into an ``--out`` folder of an
earlier run removes that run's stale tables (and only those); ``reproduce nn`` says what
``--no-ablations`` skips, which precision runs, what its figure draws and both seeds of its
random search; ``reproduce bbob`` records its seed and reports NES alone; the missing-extras
check names every missing extra at once. The bbob, nn and curvature runs are tiny real runs;
the extras check imports nothing that is missing."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli_options import RUNNERS  # the run functions the recorders replace

from manifold_spectral import _outputs, cli


def _main(argv: list[str], out: Path) -> None:
    assert cli.main(["reproduce", *argv, "--no-progress", "--out", str(out)]) == 0


# 1. stale tables of an earlier run into the same --out


@pytest.mark.parametrize(
    "name, size, stem",
    [
        ("curvature", ["--n", "4"], "curvature_full"),
        ("kronecker", ["--a", "2", "--b", "3"], "curvature_kronecker"),
    ],
)
def test_rerun_removes_its_stale_tables_only(name, size, stem, tmp_path, capsys):
    quick = [name, *size, "--steps", "20", "--no-w2"]
    _main([*quick, "--beta2", "0.05", "0.02"], tmp_path)
    assert (tmp_path / f"{stem}_table2.csv").exists()
    others = [f"{stem}_table2.csv.bak", f"{stem}_tables.csv", "curvature_spd_table9.csv"]
    others += ["curvature_full_x_table3.csv", "notes.txt"]
    for other in others:  # not this run's name pattern: kept
        (tmp_path / other).write_text("keep")
    capsys.readouterr()
    _main([*quick, "--beta2", "0.05"], tmp_path)
    out = capsys.readouterr().out
    assert not (tmp_path / f"{stem}_table2.csv").exists()
    assert (tmp_path / f"{stem}_table1.csv").exists()
    assert all((tmp_path / other).read_text() == "keep" for other in others)
    removed = [line for line in out.splitlines() if line.startswith("removed stale")]
    assert len(removed) == 1 and str(tmp_path / f"{stem}_table2.csv") in removed[0]
    rows = (tmp_path / f"{stem}_table1.csv").read_text().splitlines()[1:]
    assert {r.split(",")[0] for r in rows} == {"0.05"}
    capsys.readouterr()
    _main([*quick, "--beta2", "0.05"], tmp_path)  # nothing stale: nothing said
    assert "removed stale" not in capsys.readouterr().out


# 2. nn: --no-ablations' help and the banner's precision


def test_no_ablations_help_names_the_ablation_rows():
    from manifold_spectral.cli.nn import NN_ABLATIONS
    from manifold_spectral.experiments import nn_training

    assert NN_ABLATIONS == tuple(s.label for s in nn_training.ABLATIONS.values())
    assert {s.tuned_as for s in nn_training.ABLATIONS.values()} == {"spectral-p2"}
    text = " ".join(cli.build_parser().subcommand_parsers["nn"].format_help().split())
    said = text[text.index("--no-ablations") :]
    assert all(label in said for label in NN_ABLATIONS)
    assert nn_training.OPTIMIZERS["spectral-p2"].label in said
    assert "fp32-state" not in text and "spectral p=2" not in said


def _record_runs(monkeypatch) -> None:
    """Every run replaced by a recorder; nothing written."""
    for module, fn in RUNNERS.values():
        monkeypatch.setattr(importlib.import_module(module), fn, lambda **kw: None)
    monkeypatch.setattr(_outputs, "write_outputs", lambda *a: None)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_nn_banner_follows_precision(precision, monkeypatch, tmp_path, capsys):
    _record_runs(monkeypatch)
    _main(["nn", "--precision", precision], tmp_path)
    header = capsys.readouterr().out.splitlines()[0]
    other = {"bf16": "fp32", "fp32": "bf16"}[precision]
    assert header.startswith("== reproduce nn") and f"{precision} NN training" in header
    assert other not in header


# 3. and 4. nn: the figure's captions and the search seed


def _captured(monkeypatch) -> list[str]:
    """The texts of the figure's panel captions and note, as ``plot`` passes them."""
    from manifold_spectral.experiments import _plotstyle

    texts: list[str] = []
    monkeypatch.setattr(_plotstyle, "caption", lambda ax, title, text, width=60: texts.append(text))
    monkeypatch.setattr(_plotstyle, "figure_note", lambda fig, text, width=150: texts.append(text))
    return texts


def _result(methods: list[str]):
    """A ``QualityResult`` of one task with one finite run per method (no training)."""
    from manifold_spectral.experiments import nn_training as nt

    def run(m: str, final: float):
        seconds = np.arange(1.0, 5.0)
        return nt.Run(m, {"lr": 1e-3}, 1, np.ones(4), seconds, [0, 4], [2.0, final], final)

    runs = {m: [run(m, 1.0 + 0.1 * k)] for k, m in enumerate(methods)}
    best = {m: {"lr": 1e-3} for m in methods if m in nt.OPTIMIZERS}
    task = nt.TaskResult("mlp", "an MLP", 0.5, 2.0, 4, {}, best, runs)
    return nt.QualityResult([task], 1, [1], "bf16", 2, 1, 0.0)


@pytest.mark.parametrize(
    "methods, dashed",
    [
        (["adamw"], False),
        (["adamw", "spectral-p2"], False),
        (["adamw", "spectral-p2", "spectral-p2-bf16", "spectral-p2-exact"], True),
    ],
)
def test_nn_caption_describes_only_what_is_drawn(methods, dashed, monkeypatch, tmp_path):
    from manifold_spectral.experiments import nn_training

    texts = _captured(monkeypatch)
    nn_training.plot(_result(methods), tmp_path / "nn.png")
    steps = texts[0]
    assert ("dashed" in steps) == dashed and ("ablations" in steps) == dashed
    assert not steps.rstrip().endswith((";", "values"))
    if dashed:
        assert "ablations of SpectralKron defaults (ours) at its tuned values" in steps


def test_nn_reports_both_seeds_of_the_search(monkeypatch, tmp_path):
    texts = _captured(monkeypatch)
    argv = ["nn", "--trials", "1", "--steps", "2", "--methods", "adamw", "--no-ablations"]
    _main([*argv, "--seed", "3"], tmp_path)
    header = (tmp_path / "nn.txt").read_text().splitlines()[0]
    note = " ".join(texts[-1].split())
    for said in (header, note):
        assert "draws from seed 3" in said and "trained on seed 0" in said, said
        assert "(seed 0)" not in said
    assert json.loads((tmp_path / "nn.json").read_text())["search_seed"] == 3
    steps = texts[0]
    assert "dashed" not in steps and not steps.rstrip().endswith((";", "values"))


# 5. bbob: the seed, and NES without CMA-ES


def _bbob(tmp_path: Path, *extra: str) -> str:
    """A tiny ``reproduce bbob`` of NES and NES-IPOP (no CMA-ES); returns what it printed."""
    pytest.importorskip("cocoex")
    pytest.importorskip("cma")
    argv = ["bbob", "--functions", "1", "--instances", "1", "--dims", "2", "--budget", "20"]
    _main([*argv, "--methods", "nes", "nes-ipop", *extra], tmp_path)
    return "\n".join((tmp_path / "bbob.txt").read_text().splitlines())


def test_bbob_records_its_seed(tmp_path):
    header = _bbob(tmp_path, "--seed", "4").splitlines()[0]
    assert "seed 4" in header
    assert json.loads((tmp_path / "bbob.json").read_text())["seed"] == 4


def test_bbob_reports_nes_without_cma(tmp_path, capsys):
    _bbob(tmp_path)
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1:-1] == [
        " f ", " D ", " spectral NES solved ", " spectral NES ERT ",
        " spectral NES, IPOP solved ", " spectral NES, IPOP ERT ",
    ]  # fmt: skip
    assert table[2].startswith("| 1 | 2 | ") and "| ratio |" not in out
    assert "Triples solved: spectral NES " in out
    assert (tmp_path / "bbob_table1.csv").exists()


# 6. every missing extra named at once


@pytest.mark.parametrize(
    "name, missing, extras",
    [
        ("nes", ["matplotlib", "tqdm", "cma"], "plots,baselines"),
        ("bbob", ["matplotlib", "cocoex", "cma"], "plots,baselines"),
        ("nn", ["tqdm", "pytorch_optimizer"], "plots,baselines"),
        ("nes", ["cma"], "baselines"),
        ("spd", ["matplotlib", "tqdm"], "plots"),
        ("all", ["matplotlib", "cma"], "plots,baselines"),
    ],
)
def test_every_missing_extra_named_at_once(name, missing, extras, monkeypatch, tmp_path, capsys):
    for module in missing:  # None in sys.modules: importing it raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    assert cli.main(["reproduce", name, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("manifold-spectral: error:") == 1
    assert all(module in err for module in missing), err
    assert f"pip install 'manifold_spectral[{extras}]'" in err
    assert err.count("pip install") == 1
    assert not list(tmp_path.iterdir())  # refused before running
