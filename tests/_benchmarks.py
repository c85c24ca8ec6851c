"""Import of a benchmark script for the tests of ``benchmarks/``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def import_benchmark(name: str) -> Iterator[Any]:
    """Yield the module ``benchmarks/<name>.py`` (for a module-scoped fixture of a test of a
    benchmark script); the scripts import their sibling modules by name, so ``benchmarks/``
    is on ``sys.path`` while the fixture lives."""
    path = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, path)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(path)
