"""Every script in examples/ runs to completion, and the getting-started snippets still run.

Each example is run in a fresh interpreter (the way a user runs it) with a 60 s timeout and
must exit with status 0; the examples check their own results and exit 1 when a run does not
converge. The Python code blocks of docs/getting-started.md are executed in order in one
namespace, so the tour in the docs cannot silently go stale.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
TIMEOUT_S = 60


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/ holds no scripts"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path) -> None:
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            # This checkout's package first (not another installed copy of it).
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            },
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.name} did not finish within {TIMEOUT_S} s")
    assert proc.returncode == 0, (
        f"{script.name} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )


@pytest.mark.skipif(not GETTING_STARTED.exists(), reason="docs/getting-started.md is missing")
def test_getting_started_snippets_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GETTING_STARTED.read_text(), flags=re.S)
    assert blocks, "docs/getting-started.md has no python code blocks"
    namespace: dict[str, object] = {"__name__": "getting_started"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{GETTING_STARTED.name}[block {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "False" not in out, f"a printed check in the tour is False:\n{out}"
