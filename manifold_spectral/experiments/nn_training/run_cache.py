"""A directory of finished training runs, so that a long comparison resumes where it stopped
(``run_quality(cache=...)``, ``bench_nn_real.py --cache DIR``).

A run is stored under the SHA-256 of everything that determines its numbers: the caller's
description of the run (task and sizes, method, hyper-parameters, seed, steps, evaluations,
period, precision, device, threads) and the environment that computes it (this package's
Python source, the versions of Python, numpy, torch and pytorch-optimizer, the CPU model).
A change of any of them is a miss, never a stale hit: an edit of the optimizer, or a run
on another machine, trains again. A method that runs only part of the package (a peer:
AdamW, SOAP, Muon run the tasks, models and training loop, not this package's optimizer)
names those files (``OptimizerSpec.sources``), so its runs survive an edit of ours.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["source_digest", "builder_identity", "cpu_model", "run_key", "load", "store"]

_PACKAGE = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=8)
def source_digest(sources: tuple[str, ...] | None = None) -> str:
    """SHA-256 over the package's ``.py`` files (relative path and bytes, in path order), or
    over ``sources`` alone (paths relative to the package: the files a run executes; a
    missing one is a ``FileNotFoundError``, so a renamed file cannot drop out unseen)."""
    paths = sorted(_PACKAGE.rglob("*.py")) if sources is None else [_PACKAGE / s for s in sources]
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def builder_identity(obj: Any) -> list[Any]:
    """What a method's ``build`` function (or a task's class) is, for a key: its module, name,
    source text and the values its closure holds (``_spectral``'s fixed options); defined
    outside the package (an option variant or a task of a benchmark script), also the digest
    of its whole file, whose module-level helpers and constants it may use and which
    ``source_digest`` does not cover. Without a source file the process's ``id``: a miss in
    any other process."""
    try:
        text = inspect.getsource(obj)
        path = Path(inspect.getsourcefile(obj) or "").resolve()
    except (OSError, TypeError):
        return [f"id {id(obj)} in process {os.getpid()}"]
    outside = None
    if _PACKAGE not in path.parents:
        outside = hashlib.sha256(path.read_bytes()).hexdigest()
    cells = [repr(c.cell_contents) for c in getattr(obj, "__closure__", None) or ()]
    return [obj.__module__, obj.__qualname__, text, cells, outside]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo where there is one (``platform.processor()`` is empty
    on Linux), else ``platform.processor()`` (a run's key; the machine line of a benchmark
    block)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_key(sources: tuple[str, ...] | None = None, **run: Any) -> str:
    """The cache key of the run described by ``run`` (JSON-serialisable values) in this
    environment; ``sources``: the package files the run executes (``source_digest``; default
    all of them)."""
    env = dict(
        source=source_digest(sources),
        python=platform.python_version(),
        numpy=np.__version__,
        torch=torch.__version__,
        pytorch_optimizer=_version("pytorch_optimizer"),
        cpu=cpu_model(),
    )
    text = json.dumps(dict(run=run, env=env), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def load(cache: Path, key: str) -> dict[str, Any] | None:
    """The fields stored under ``key``, or ``None`` (no such run)."""
    path = Path(cache) / f"{key}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def store(cache: Path, key: str, fields: dict[str, Any]) -> None:
    """Store ``fields`` under ``key``; written to a temporary file and renamed, so that a run
    stopped mid-write (or a second process writing the same run) leaves no partial file."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(fields))
    os.replace(tmp, cache / f"{key}.json")
