"""Findings of an outsider test of the command line: a missing ``baselines`` extra, an
unwritable ``--out`` and values the runs would refuse are errors naming the option (or the pip
command) before any run starts; the run header follows the size options; the nn report says
"-" for a time it cannot measure; the bbob run lists every file it writes. The runs are
replaced by recorders, as in tests/test_cli_options.py, except the two tiny real runs."""

from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from pathlib import Path

import pytest

from manifold_spectral import _outputs, cli

ROOT = Path(__file__).resolve().parents[1]

# The reproductions' run functions: one table, kept by the option tests.
from test_cli_options import RUNNERS  # noqa: E402


def _record_runs(monkeypatch) -> list[str]:
    """Every run replaced by a recorder of its name; nothing written."""
    calls: list[str] = []
    for name, (module, fn) in RUNNERS.items():
        monkeypatch.setattr(
            importlib.import_module(module), fn, lambda name=name, **kw: calls.append(name)
        )
    monkeypatch.setattr(_outputs, "write_outputs", lambda *a: None)
    monkeypatch.setattr(
        _outputs, "run_rows", lambda run, beta2s, out, stem: [run(b) for b in beta2s]
    )
    return calls


def test_nes_without_cma_stops_before_running(monkeypatch, tmp_path, capsys):
    calls = _record_runs(monkeypatch)
    monkeypatch.setitem(sys.modules, "cma", None)
    assert cli.main(["reproduce", "nes", "--no-progress", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "needs cma" in err and "pip install 'manifold_spectral[baselines]'" in err
    assert calls == []
    argv = ["reproduce", "nes", "--methods", "spectral", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(argv) == 0  # only a selected method that needs it
    assert calls == ["nes"]


def test_all_checks_every_extra_before_running(monkeypatch, tmp_path, capsys):
    calls = _record_runs(monkeypatch)
    monkeypatch.setitem(sys.modules, "cma", None)
    assert cli.main(["reproduce", "all", "--no-progress", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cma" in err and "pip install 'manifold_spectral[baselines]'" in err  # plots: installed
    assert calls == []


@pytest.mark.parametrize("doc", ["README.md", "docs/getting-started.md"])
def test_docs_name_both_extras_for_the_reproductions(doc):
    text = (ROOT / doc).read_text()
    assert "[plots,baselines]" in text
    assert "pip install '.[plots]'" not in text  # it does not run nn, nes or bbob


def _unwritable_outs(tmp_path: Path) -> list[Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    outs = [a_file, Path(os.devnull), a_file / "below"]
    if os.geteuid() != 0:  # root writes into read-only directories
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o500)
        outs.append(read_only)
    return outs


@pytest.mark.parametrize("name", ["spd", "all"])
def test_unwritable_out_is_refused_first(name, monkeypatch, tmp_path, capsys):
    calls = _record_runs(monkeypatch)
    for out in _unwritable_outs(tmp_path):
        assert cli.main(["reproduce", name, "--no-progress", "--out", str(out)]) == 1
        assert f"--out {out}" in capsys.readouterr().err
    assert calls == []


@pytest.mark.parametrize(
    "argv, option",
    [
        (["bbob", "--budget", "1e-9"], "--budget"),
        (["bbob", "--dims", "5", "--budget", "0.1"], "--budget"),
        (["bbob", "--dims", "1"], "--dims"),
        (["bbob", "--dims", "7"], "--dims"),
        (["nes", "--n", "1"], "--n"),
        (["nes", "--seed", "99999999999999999999"], "--seed"),
        (["spd", "--seed", str(2**32)], "--seed"),
        (["curvature", "--seed", "-1"], "--seed"),
        (["all", "--seed", str(2**63)], "--seed"),
        # bbob.jobs leaves f13 out at D = 20: no run, and an empty figure failed in matplotlib
        (["bbob", "--dims", "20", "--functions", "13", "3"], "--functions"),
    ],
)
def test_values_the_runs_refuse_are_parser_errors(argv, option, monkeypatch, capsys):
    calls = _record_runs(monkeypatch)
    with pytest.raises(SystemExit) as info:
        cli.main(["reproduce", *argv, "--no-progress"])
    assert info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err
    assert calls == []


@pytest.mark.parametrize("argv", [["spd", "--n", "5"], ["spd", "--n"], ["all", "--no"]])
def test_an_option_of_another_subcommand_is_named_not_abbreviated(argv, monkeypatch, capsys):
    """`--n` is nes's size option; spd's abbreviation rule read it as --no-progress."""
    calls = _record_runs(monkeypatch)
    with pytest.raises(SystemExit) as info:
        cli.main(["reproduce", *argv])
    assert info.value.code == 2
    assert "unrecognized arguments: " + " ".join(argv[1:]) in capsys.readouterr().err
    assert calls == []


def test_help_gives_the_limits():
    subs = cli.build_parser().subcommand_parsers
    nes = " ".join(subs["nes"].format_help().split())
    assert ">= 2" in nes and f"0 .. {2**31 - 1}" in nes
    bbob = " ".join(subs["bbob"].format_help().split())
    assert "(2, 3, 5, 10, 20, 40)" in bbob and "at least one evaluation" in bbob
    device = " ".join(subs["all"].format_help().split())
    assert "()" not in device


@pytest.mark.parametrize("name", [*cli.REPRODUCTIONS, "all"])
def test_every_option_says_what_it_does(name):
    """Each option's help has words besides its default ("(default 1 2 3)" alone is not)."""
    for action in cli.build_parser().subcommand_parsers[name]._actions:
        said = re.sub(r"\(default[^)]*\)|\([0-9., ]*\)", "", action.help or "")
        assert re.search(r"[A-Za-z]{3,}", said), (name, action.option_strings, action.help)


def test_nes_budget_below_one_population_is_drawn(tmp_path, capsys):
    """Every run evaluates its first generation whole, at n = 20 a population of 12 > 10 >
    --max-evals: the curves' grid reaches that generation (it ended at the budget and the
    log-log panel, holding no point, failed in matplotlib after the table was printed)."""
    pytest.importorskip("matplotlib")
    argv = ["reproduce", "nes", "--n", "20", "--seeds", "1", "--max-evals", "5"]
    argv += ["--functions", "ackley", "--methods", "spectral", "xnes", "--no-progress"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "nes.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, said, not_said",
    [
        (["spd", "--d", "5"], "d = 5", "d = 60"),
        (["nes", "--n", "6"], "d = 6", "d = 60"),
        (["kronecker", "--a", "3", "--b", "4"], "(3 x 4)", "9 x 11"),
    ],
)
def test_header_follows_the_options(argv, said, not_said, monkeypatch, tmp_path, capsys):
    _record_runs(monkeypatch)
    assert cli.main(["reproduce", *argv, "--no-progress", "--out", str(tmp_path)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("== reproduce") and said in header and not_said not in header


def test_nn_report_with_too_few_steps_to_time(tmp_path, capsys):
    argv = ["reproduce", "nn", "--trials", "1", "--steps", "1", "--methods", "adamw"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert cli.main([*argv, "--no-ablations", "--no-progress", "--out", str(tmp_path)]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("| AdamW"))
    assert "nan" not in row and row.rstrip(" |").split("|")[-2].strip() == "-"


def test_bbob_lists_every_file_it_writes(tmp_path, capsys):
    pytest.importorskip("cocoex")
    pytest.importorskip("cma")
    argv = ["reproduce", "bbob", "--dims", "2", "--functions", "1", "--instances", "1"]
    argv += ["--methods", "nes", "--budget", "20", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    wrote = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("wrote "))
    listed = {Path(p).name for p in wrote.removeprefix("wrote ").split(", ")}
    assert listed == {p.name for p in tmp_path.iterdir()}
    assert {"bbob.csv", "runs.csv"} <= listed


def test_the_extras_check_finds_modules_without_importing_them(monkeypatch):
    """Importing cma without matplotlib printed cma's warning above the error that names the
    missing extra; the check now only looks for the modules."""
    pytest.importorskip("cma")
    monkeypatch.delitem(sys.modules, "cma", raising=False)
    cli._check_extras("nes", False, ["cma"])
    assert "cma" not in sys.modules


def test_ctrl_c_is_a_short_message_and_status_130(monkeypatch, capsys, tmp_path):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_one", interrupted)
    assert cli.main(["reproduce", "spd", "--no-progress", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "manifold-spectral: interrupted"


def test_output_piped_into_a_reader_that_stops_is_no_error(tmp_path):
    """``manifold-spectral ... | head -5``: the run's printing hits a closed pipe; that ends
    the command quietly with status 0 (it printed "error: [Errno 32] Broken pipe", status 1)."""
    import subprocess

    code = (
        "import sys\nfrom manifold_spectral import cli\n"
        "cli._run_one = lambda rep, args: [print('x' * 99) for _ in range(10 ** 6)]\n"
        f"sys.exit(cli.main(['reproduce', 'spd', '--no-progress', '--out', {str(tmp_path)!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"x")
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b"", err
