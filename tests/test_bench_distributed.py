"""``benchmarks/bench_distributed.py``: the compute column times the work of every path."""

from __future__ import annotations

import pytest
import torch.distributed as dist
from _benchmarks import import_benchmark


@pytest.fixture(scope="module")
def script():
    yield from import_benchmark("bench_distributed")


@pytest.mark.parametrize("shard", [False, True])
def test_compute_is_timed_sharded_or_not(script, shard, tmp_path) -> None:
    """The unsharded step computes its updates per bucket, not through ``compute_update``:
    a timer on that method alone read 0 s there (and the table divided by it)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        out = script.run_mode(shard, {"layers": 2, "n": 16, "steps": 2})
    finally:
        dist.destroy_process_group()
    assert out["compute_cpu"] > 0 and out["compute_wall"] > 0
    assert out["owned"] == 4
