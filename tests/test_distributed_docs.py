"""SpectralKron on torch.distributed, outside the spawned scenarios of test_distributed.py:
the docs' ``torchrun`` example, owner assignment and the process-group check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from _distributed import WORLD, make_model, needs_gloo
from torch import nn

from manifold_spectral.optim import SpectralKron
from manifold_spectral.optim.distributed import assign_owners, param_cost


@needs_gloo
def test_docs_torchrun_example_runs(tmp_path):
    """The DDP example of docs/distributed.md under ``torchrun --standalone`` (a free port);
    its consolidated checkpoint loads into an unsharded optimizer here."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "distributed.md").read_text()
    script = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert "torchrun" in script
    (tmp_path / "train_ddp.py").write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [*cmd, "2", "train_ddp.py"], cwd=tmp_path, env=env, capture_output=True, timeout=120
    )
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["optim"]["state"].keys() == set(range(4))  # two matrices, two biases
    shards = [torch.load(tmp_path / f"optim_rank{r}.pt") for r in range(WORLD)]
    assert [len(sd["state"]) for sd in shards] in ([1, 3], [3, 1], [2, 2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 10))
    model.load_state_dict(ckpt["model"])
    opt = SpectralKron(SpectralKron.param_groups(model), lr=1e-3)
    opt.load_state_dict(ckpt["optim"])
    model(torch.randn(4, 32)).sum().backward()
    opt.step()
    assert all(int(st["step"]) == 11 for st in opt.state.values())


# Single-process checks ----------------------------------------------------------------------


def test_owner_assignment_is_balanced_and_deterministic():
    costs = [param_cost((512, 512), {"max_factor_dim": 2048})] * 8 + [512] * 8
    owners, loads = assign_owners(costs, 4)
    assert owners == assign_owners(costs, 4)[0]
    assert [owners[:8].count(r) for r in range(4)] == [2, 2, 2, 2]
    assert max(loads) - min(loads) <= 512
    # Adding parameters later never moves the existing ones.
    more, _ = assign_owners([10**9], 4, loads)
    assert len(more) == 1 and 0 <= more[0] < 4
    assert param_cost((4, 3, 3, 3), {"max_factor_dim": 2048}) == 4**3 + 27**3 + 4 * 27 * 31
    assert param_cost((7,), {"max_factor_dim": 2048}) == 7


def test_shard_needs_an_initialised_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        SpectralKron(make_model().parameters(), shard=True)
    with pytest.raises(TypeError, match="shard"):
        SpectralKron(make_model().parameters(), shard="yes")
