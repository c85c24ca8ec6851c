"""The README's python blocks each run alone (self-contained) and print what they claim; the
README's command line lists every subcommand; docs/geoopt.md's snippet runs.
(docs/getting-started.md's blocks run in order in one session: tests/test_examples.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from manifold_spectral import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize(
    "path, i",
    [(README, i) for i in range(len(_blocks(README)))] + [(ROOT / "docs" / "geoopt.md", 0)],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_block_runs_alone_and_prints(path, i, capsys):
    code = _blocks(path)[i]
    exec(compile(code, f"{path.name}[block {i}]", "exec"), {"__name__": "snippet"})
    out = capsys.readouterr().out
    assert out.strip(), f"{path.name} block {i} prints nothing"
    assert "False" not in out and "WRONG" not in out, out


def test_readme_names_every_subcommand_and_keeps_the_scripts():
    text = README.read_text()
    assert "reproduce {" + ",".join([*cli.REPRODUCTIONS, "all"]) + "}" in text
    assert "bash scripts/reproduce.sh   # main job" in text
    assert "bash scripts/test.sh        # tests" in text
    assert "pip install 'manifold_spectral[plots]'" in text
