"""What the multi-process tests share (``test_distributed*.py``): the gloo group of ``WORLD``
ranks that ``spawn_ranks`` starts, a small float64 model and batch, the options they train
with, and the comparisons."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

from manifold_spectral.optim import SpectralKron

WORLD = 2
STEPS = 4
#: eigenvalue_correction adds a per-parameter state buffer ("eig_v") that every distributed
#: path (shard exchange, consolidation, resume, DTensor slices) must carry like the factors.
OPTS: dict[str, Any] = dict(
    lr=0.05,
    beta2=0.05,
    damping=1e-4,
    weight_decay=1e-2,
    clip_rms=1.0,
    warm_start=True,
    eigenvalue_correction=True,
)

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this torch build has no gloo backend for torch.distributed",
)


def make_model() -> nn.Module:
    """Two Kronecker matrices (5 x 6, 3 x 5) and four diagonal vectors (biases, LayerNorm)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3), nn.LayerNorm(3)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(
        8, 3, generator=g, dtype=torch.float64
    )


def train(model: nn.Module, opt: SpectralKron, X, Y, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(X), Y).backward()
        opt.step()


def flat(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def run_in_group(rank: int, tmp: str, timeout_s: float, body: Any) -> None:
    """``body(out)`` on this rank of a ``WORLD``-rank gloo group, then ``out`` saved to
    ``tmp/rank{rank}.pt`` (also when ``body`` raised: the test reads what it saw). The
    timeout makes a rank left waiting fail the test instead of hanging CI."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/store",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    out: dict[str, Any] = {}
    try:
        body(out)
        dist.barrier()  # no rank closes its connections while another still talks
    finally:
        torch.save(out, f"{tmp}/rank{rank}.pt")
        dist.destroy_process_group()


def spawn_ranks(worker: Any, tmp: Path) -> list[dict[str, Any]]:
    """Run ``worker(rank, tmp)`` on ``WORLD`` processes; what each rank saved."""
    torch.multiprocessing.spawn(worker, args=(str(tmp),), nprocs=WORLD, join=True)
    return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def assert_close_rel(got: list[torch.Tensor], want: list[torch.Tensor], rtol: float) -> None:
    for a, b in zip(got, want, strict=True):
        err = float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))
        assert err < rtol, err


def assert_equal(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
