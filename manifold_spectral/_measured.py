"""Measurements the command line quotes, written by the benchmark script that made them, never
by hand: ``benchmarks/bench_reproduce_all.py`` writes ``REPRODUCE_ALL`` (the wall time of
``manifold-spectral reproduce all``, printed when the command starts)."""

from __future__ import annotations

from typing import Any

# reproduce-all:start
REPRODUCE_ALL: dict[str, Any] | None = {
    "wall_s": 77.8,
    "cpu_s": 77.2,
    "cpus": 2,
    "load": 0.74,
    "date": "2026-12-02",
}
# reproduce-all:end
