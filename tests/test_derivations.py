"""Run every executable sympy derivation in derivations/ and require exit status 0.

Each script derives one of the paper's closed-form results and exits non-zero if a check
fails.  Scripts are discovered by glob, so a new derivations/*.py is picked up
automatically; helper modules whose names start with "_" are skipped.
"""

import subprocess
import sys
from pathlib import Path

import pytest

DERIVATIONS = Path(__file__).resolve().parent.parent / "derivations"
SCRIPTS = sorted(p for p in DERIVATIONS.glob("*.py") if not p.name.startswith("_"))


def test_derivation_scripts_found():
    assert SCRIPTS, f"no derivation scripts found in {DERIVATIONS}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_derivation_script(script, tmp_path):
    pytest.importorskip("sympy")
    # Run from an unrelated directory: scripts must not depend on the working directory.
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"{script.name} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
