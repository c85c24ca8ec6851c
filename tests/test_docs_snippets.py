"""The python blocks of the README and of docs/*.md each run alone (self-contained, as a
reader copies one) and print what they claim; the README's command line lists every
subcommand. (docs/getting-started.md's blocks run in order in one session:
tests/test_examples.py; docs/distributed.md's torchrun script: tests/test_distributed_docs.py;
its FSDP2 lines are a fragment of that script.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from manifold_spectral import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


#: Pages whose blocks are tested elsewhere (see the module docstring).
NOT_ALONE = {"getting-started.md", "distributed.md"}
ALONE = [README, *(p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in NOT_ALONE)]


@pytest.mark.parametrize(
    "path, i",
    [(path, i) for path in ALONE for i in range(len(_blocks(path)))],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_block_runs_alone_and_prints(path, i, capsys, tmp_path):
    code = _blocks(path)[i]
    if 'if __name__ == "__main__":' in code:  # a script for process pools: run as one
        script = tmp_path / "snippet.py"
        script.write_text(code)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
        res = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr[-3000:]
        out = res.stdout
    else:
        exec(compile(code, f"{path.name}[block {i}]", "exec"), {"__name__": "snippet"})
        out = capsys.readouterr().out
    if "print(" in code:
        assert out.strip(), f"{path.name} block {i} prints nothing"
    assert "False" not in out and "WRONG" not in out, out


def test_readme_names_every_subcommand_and_keeps_the_scripts():
    text = README.read_text()
    assert "reproduce {" + ",".join([*cli.REPRODUCTIONS, "all"]) + "}" in text
    assert "bash scripts/reproduce.sh   # main job" in text
    assert "bash scripts/test.sh        # tests" in text
    assert "pip install 'manifold_spectral[plots]'" in text
