"""Shared by the benchmark scripts: the machine line of a result block, and writing the block
into benchmarks/README.md."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

from manifold_spectral.experiments.nn_training.run_cache import cpu_model


def machine() -> str:
    """CPU model (from /proc/cpuinfo where available), logical CPU count, OS and kernel."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def replace_between(path: Path, start: str, end: str, block: str) -> None:
    """Replace the text between the ``start`` and ``end`` markers of ``path`` by ``block``.
    The read and the write hold an exclusive ``flock`` on ``path`` itself (POSIX): two
    benchmarks that finish together (``rerun_defaults.sh`` runs two at a time) would
    otherwise each write the file it read, and the later write would drop the other's block."""
    with _locked(path):
        text = path.read_text()
        if start not in text or end not in text:
            raise SystemExit(f"{path}: markers {start} / {end} not found; table not written")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        path.write_text(f"{head}{start}\n{block}\n{end}{tail}")
    print(f"written to {path}", file=sys.stderr)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block (advisory: it orders the writers that
    take it, and leaves no file behind; no lock where ``fcntl`` is missing: Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path) as f:  # flock needs no write access; a missing file raises as before
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
