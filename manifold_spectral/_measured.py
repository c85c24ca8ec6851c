"""Measurements the command line quotes, written by the benchmark script that made them, never
by hand: ``benchmarks/bench_reproduce_all.py`` writes ``REPRODUCE_ALL`` (the wall time of
``manifold-spectral reproduce all``, printed when the command starts)."""

from __future__ import annotations

from typing import Any

# reproduce-all:start
REPRODUCE_ALL: dict[str, Any] | None = {
    "wall_s": 86.8,
    "cpu_s": 85.4,
    "cpus": 2,
    "load": 1.13,
    "date": "2026-12-01",
}
# reproduce-all:end
