"""Run every executable sympy derivation in derivations/ and require exit status 0.

Each script derives one of the paper's closed-form results, evaluates it at random rational
points against the function of manifold_spectral that implements it, and exits non-zero if
a check fails. Scripts are discovered by glob, so a new derivations/*.py is picked up
automatically; helper modules whose names start with "_" are skipped.

All scripts run in one subprocess (each as ``__main__``, via ``runpy``), from an unrelated
working directory: sympy, torch and the package are imported once instead of once a script.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DERIVATIONS = Path(__file__).resolve().parent.parent / "derivations"
SCRIPTS = sorted(p for p in DERIVATIONS.glob("*.py") if not p.name.startswith("_"))

DRIVER = """
import contextlib, io, json, runpy, sys, traceback
folder, paths = sys.argv[1], sys.argv[2:]
sys.path.insert(0, folder)  # as for `python derivations/<script>.py`: `from _common import`
results = {}
for path in paths:
    out, code = io.StringIO(), 0
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            code = 1
            out.write(traceback.format_exc())
    results[path] = [code, out.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    pytest.importorskip("sympy")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(DERIVATIONS), *map(str, SCRIPTS)],
        cwd=tmp_path_factory.mktemp("derivations"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_derivation_scripts_found():
    assert SCRIPTS, f"no derivation scripts found in {DERIVATIONS}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_derivation_script(script, results):
    code, output = results[str(script)]
    assert code == 0, f"{script.name} exited with {code}\n--- output ---\n{output}"
    assert "package:" in output, f"{script.name} checks no function of manifold_spectral"
