"""Shared by the benchmark scripts: write a result block into benchmarks/README.md."""

from __future__ import annotations

from pathlib import Path


def replace_between(path: Path, start: str, end: str, block: str) -> None:
    """Replace the text between the ``start`` and ``end`` markers of ``path`` by ``block``."""
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path}: markers {start} / {end} not found; table not written")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}")
