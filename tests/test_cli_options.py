"""The command line's shared options and error paths (issue 16): ``--version``, the
subcommand's usage on an unknown option, ``--device`` / ``--threads`` / ``--seed`` on every
subcommand and wired into the runs, and a clear message when the ``plots`` extra is missing.
The runs themselves are replaced by recorders (the end-to-end runs are tested per
experiment)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import manifold_spectral
from manifold_spectral import _outputs, cli

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"manifold-spectral {manifold_spectral.__version__}"


@pytest.mark.parametrize("name", [*cli.REPRODUCTIONS, "all"])
def test_unknown_option_prints_the_subcommand_usage(name, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["reproduce", name, "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: manifold-spectral reproduce {name}" in err
    assert "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("name", [*cli.REPRODUCTIONS, "all"])
def test_runtime_options_on_every_subcommand(name):
    args = cli.build_parser().parse_args(
        ["reproduce", name, "--device", "cpu", "--threads", "3", "--seed", "7"]
    )
    assert (args.device, args.threads, args.seed) == ("cpu", 3, 7)
    args = cli.build_parser().parse_args(["reproduce", name])
    assert (args.device, args.threads, args.seed) == ("cpu", 1, 0)


RUNNERS = {
    "curvature": ("manifold_spectral.experiments.curvature", "run_full_matrix"),
    "kronecker": ("manifold_spectral.experiments.curvature_kronecker", "run_kronecker"),
    "spd": ("manifold_spectral.experiments.spd", "run_spd"),
    "nn": ("manifold_spectral.experiments.nn_training", "run_quality"),
    "nes": ("manifold_spectral.experiments.nes", "run_nes"),
    "bbob": ("manifold_spectral.experiments.bbob", "run_bbob"),
}
#: The reproductions whose torch work --device moves: all of them.
DEVICE_RUNS = ("curvature", "kronecker", "spd", "nes", "bbob", "nn")


def _write_nothing(monkeypatch):
    """The runs' outputs replaced: nothing written, each row of ``run_rows`` still run."""
    monkeypatch.setattr(_outputs, "write_outputs", lambda *a: None)
    monkeypatch.setattr(
        _outputs, "run_rows", lambda run, beta2s, out, stem: [run(b) for b in beta2s]
    )


@pytest.mark.parametrize("name", list(RUNNERS))
def test_threads_and_seed_reach_the_run(name, tmp_path, monkeypatch):
    import importlib

    module, fn = RUNNERS[name]
    calls = []
    monkeypatch.setattr(importlib.import_module(module), fn, lambda **kw: calls.append(kw))
    _write_nothing(monkeypatch)
    argv = ["reproduce", name, "--threads", "2", "--seed", "5", "--out", str(tmp_path)]
    assert cli.main([*argv, "--no-progress"]) == 0
    kw = calls[0]
    assert kw.get("num_threads", kw.get("threads")) == 2
    if name == "nn":
        assert kw["search_seed"] == 5 and list(kw["seeds"]) == [6]
    else:
        assert kw["seed"] == 5
    assert kw["device"] == "cpu"


@pytest.mark.parametrize("name", DEVICE_RUNS)
def test_device_reaches_every_torch_run(name, tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # recorders: nothing runs
    module, fn = RUNNERS[name]
    calls = []
    monkeypatch.setattr(importlib.import_module(module), fn, lambda **kw: calls.append(kw))
    _write_nothing(monkeypatch)
    for device in ("cuda", "auto"):
        argv = ["reproduce", name, "--device", device, "--out", str(tmp_path), "--no-progress"]
        assert cli.main(argv) == 0
        assert calls[-1]["device"] == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["reproduce", "spd", "--device", "cuda", "--out", str(tmp_path)]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


def test_device_refused_for_cpu_only_runs(monkeypatch, tmp_path, capsys):
    """A reproduction that declares itself CPU-only (none does today) refuses cuda before
    running, and --help says why; the others say what moves."""
    import dataclasses

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cpu_only = dataclasses.replace(
        cli.REPRODUCTIONS["nn"], devices=("cpu",), cpu_only="a reason for the test"
    )
    monkeypatch.setitem(cli.REPRODUCTIONS, "nn", cpu_only)
    assert cli.main(["reproduce", "nn", "--device", "cuda", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "reproduce nn runs on the CPU only (a reason for the test)" in err
    assert not list(tmp_path.iterdir())  # refused before running
    assert cli._resolve_device(cli.REPRODUCTIONS["nn"], "auto") == "cpu"
    subs = cli.build_parser().subcommand_parsers
    assert "cpu only (--device cuda is refused)" in subs["nn"].format_help()
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in DEVICE_RUNS:
        assert cli._resolve_device(cli.REPRODUCTIONS[name], "auto") == "cuda"
    subs = cli.build_parser().subcommand_parsers
    assert "CMA-ES (pycma, numpy) stays on the CPU" in " ".join(subs["nes"].format_help().split())
    assert "evaluation runs on the CPU" in " ".join(subs["nn"].format_help().split())


#: Run in a fresh interpreter with matplotlib and tqdm made unimportable (as after a plain
#: `pip install manifold_spectral`, no extras).
BLOCKER = textwrap.dedent(
    """
    import sys

    # None in sys.modules: `import tqdm` raises ModuleNotFoundError and
    # importlib.util.find_spec("tqdm") returns None, as when it is not installed.
    for name in ("matplotlib", "tqdm"):
        sys.modules[name] = None
    """
)


def _run_without_extras(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", BLOCKER + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_core_and_cli_without_plots_extra(tmp_path):
    """Without matplotlib and tqdm: the library (solvers, optimizer, geoopt adapter, an
    experiment without progress bars) runs, importing geoopt through us is warning-free, and
    the command line refuses to start, naming the extra to install. One interpreter for both
    (a fresh one costs seconds)."""
    proc = _run_without_extras(
        f"""
        import torch
        import manifold_spectral, manifold_spectral.optim, manifold_spectral.geoopt
        from manifold_spectral.solvers import spd, nes
        from manifold_spectral.experiments import spd as ex
        from manifold_spectral import cli
        r = spd.minimize(spd.LogDet(torch.eye(3, dtype=torch.float64) * 2), lr=0.3, steps=5)
        n = nes.minimize(lambda x: float((x**2).sum()), [1.0, 1.0], 0.5, max_evals=60)
        e = ex.run_spd(4, steps_nearness=3, steps_logdet=3, methods=("spectral",), progress=False)
        print("core ok", r.nit, len(e.runs))
        print("cli rc", cli.main(["reproduce", "spd", "--out", {str(tmp_path)!r}]))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "core ok 5 2" in proc.stdout
    assert "cli rc 1" in proc.stdout
    assert "pip install 'manifold_spectral[plots]'" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before running


def test_all_prints_and_documents_its_quick_settings(tmp_path, monkeypatch, capsys):
    import importlib

    calls = {}
    for name, (module, fn) in RUNNERS.items():
        monkeypatch.setattr(
            importlib.import_module(module), fn, lambda name=name, **kw: calls.setdefault(name, kw)
        )
    _write_nothing(monkeypatch)
    argv = ["reproduce", "all", "--threads", "2", "--seed", "4", "--out", str(tmp_path)]
    assert cli.main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    nes_quick = "seeds=1 (default 3), max-evals=10000 (default 50000)"
    assert f"quick settings of nes: {nes_quick}" in out
    assert "quick settings of spd: its defaults" in out
    assert calls["nes"]["seeds"] == 1 and calls["nes"]["max_evals"] == 10_000
    assert all(kw.get("num_threads", kw.get("threads")) == 2 for kw in calls.values())
    assert calls["spd"]["seed"] == 4 and calls["nn"]["search_seed"] == 4
    # The same text is the description of `reproduce all --help`.
    assert nes_quick in cli.build_parser().subcommand_parsers["all"].description


def test_all_prints_the_measured_wall_time_first(tmp_path, monkeypatch, capsys):
    """The expected time comes from manifold_spectral._measured (written by
    benchmarks/bench_reproduce_all.py); the run ends with its own measured time."""
    from manifold_spectral import _measured

    record = {"wall_s": 283.0, "cpu_s": 200.0, "cpus": 2, "load": 3.1, "date": "2026-11-29"}
    monkeypatch.setattr(_measured, "REPRODUCE_ALL", record)
    monkeypatch.setattr(cli, "_run_one", lambda rep, args: print(f"ran {rep.name}"))
    assert cli.main(["reproduce", "all", "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "reproduce all: expected wall time: about 283 s (4.7 min) on 2 CPU cores, measured "
        "2026-11-29 by benchmarks/bench_reproduce_all.py (load average 3.1; a busier machine "
        "takes longer)"
    )
    assert lines[-1].startswith("wall time (all): ")
    assert "about 283 s" in cli.build_parser().subcommand_parsers["all"].description
    monkeypatch.setattr(_measured, "REPRODUCE_ALL", None)
    assert "not measured yet" in cli._expected_time()


@pytest.mark.parametrize(
    "argv,stem",
    [
        (["curvature", "--n", "4", "--steps", "20", "--beta2", "0.1", "--no-w2"], "curvature_full"),
        (["kronecker", "--a", "2", "--b", "2", "--steps", "20", "--beta2", "0.1"],
         "curvature_kronecker"),
        (["nes", "--n", "4", "--seeds", "1", "--max-evals", "100", "--functions", "ackley",
          "--methods", "spectral", "cma"], "nes"),
    ],
)  # fmt: skip
def test_fixed_width_tables_also_as_csv(tmp_path, argv, stem):
    """curvature, kronecker and nes print fixed-width tables (no markdown): their numbers are
    written as CSV too, one header row then one row per table line."""
    import csv

    assert cli.main(["reproduce", *argv, "--out", str(tmp_path), "--no-progress"]) == 0
    rows = list(csv.reader((tmp_path / f"{stem}_table1.csv").open()))
    text = (tmp_path / f"{stem}.txt").read_text()
    if stem == "nes":
        assert rows[0][:3] == ["function", "method", "median best f"]
        assert [r[:2] for r in rows[1:]] == [["ackley", "spectral"], ["ackley", "cma"]]
    else:
        assert rows[0][:3] == ["beta2", "iteration", "fixed-point default"]
        iterations = [ln.split()[0] for ln in text.splitlines() if ln.strip()[:1].isdigit()]
        # the printed table's rows (its W2 block repeats them: one CSV row holds both)
        assert [r[1] for r in rows[1:]] == list(dict.fromkeys(iterations))
    assert {p.suffix for p in tmp_path.iterdir()} == {".png", ".txt", ".json", ".csv"}


def test_tables_as_csv_and_results_as_json(tmp_path):
    import csv
    import dataclasses
    import json

    import numpy as np

    @dataclasses.dataclass
    class Run:
        name: str
        curve: np.ndarray
        t: torch.Tensor
        best: float

    result = [Run("a", np.array([1.0, np.nan]), torch.tensor([0.5]), float("inf"))]
    table = (
        "Caption one\n\n| k | a |\n|---:|---:|\n| 1 | 2.0 |\n\n"
        "Caption two\n| x | y |\n|---|---|\n| p | q |\n| r | s |\n"
    )
    paths = cli._write_data(result, table, tmp_path, "demo")
    assert [p.name for p in paths] == ["demo.json", "demo_table1.csv", "demo_table2.csv"]
    assert json.loads(paths[0].read_text()) == [
        {"name": "a", "curve": [1.0, None], "t": [0.5], "best": None}
    ]
    rows = [list(csv.reader(p.open())) for p in paths[1:]]
    assert rows == [[["k", "a"], ["1", "2.0"]], [["x", "y"], ["p", "q"], ["r", "s"]]]
