"""shard=True with parameter groups that differ between the ranks (a misuse): every rank
raises a ValueError naming ``param_groups`` (or the option a rank rejected) with nothing
changed, instead of ranks that silently disagree, a rank waiting for one that raised, or a
process aborted by gloo's size check.

One ``torch.multiprocessing.spawn`` of 2 gloo ranks runs the cases (a short process-group
timeout: a rank left waiting fails the test in seconds) and saves what each rank saw."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from test_distributed import OPTS, WORLD, flat, make_model, needs_gloo

from manifold_spectral.optim import SpectralKron


def _case(rank: int, name: str, out: dict[str, Any]) -> None:
    """Build the case's optimizer on each rank, take one step with the same gradients
    everywhere, and record the error and whether any parameter or state entry changed."""
    model = make_model()
    ps = list(model.parameters())
    opts: dict[str, Any] = dict(OPTS)
    groups: Any = ps
    if name == "lr":  # a different learning rate on each rank
        opts["lr"] = OPTS["lr"] * (1 + rank)
    elif name == "split":  # the same parameters, grouped differently on rank 1
        groups = [{"params": ps}] if rank == 0 else [{"params": ps[:2]}, {"params": ps[2:]}]
    opt = SpectralKron(groups, **opts, shard=True)
    g = torch.Generator().manual_seed(2)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    if name == "rejected":  # an invalid option set on rank 1 only (after a good step)
        opt.step()
        opt.param_groups[0]["lr"] = -1.0 if rank == 1 else OPTS["lr"]
    before, state = flat(ps), copy.deepcopy(opt.state_dict()["state"])
    try:
        opt.step()
    except ValueError as e:
        out[name] = str(e)
    after = opt.state_dict()["state"]
    out[name + "_unchanged"] = all(
        torch.equal(a, b) for a, b in zip(before, ps, strict=True)
    ) and all(torch.equal(v, after[k][n]) for k, st in state.items() for n, v in st.items())


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/store",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=15),  # a rank left waiting fails, not hangs
    )
    out: dict[str, Any] = {}
    try:
        for name in ("lr", "rejected", "split"):  # split last: gloo aborted it before
            _case(rank, name, out)
        dist.barrier()
    finally:
        torch.save(out, f"{tmp}/rank{rank}.pt")
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("groups")
    torch.multiprocessing.spawn(_worker, args=(str(tmp),), nprocs=WORLD, join=True)
    return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@needs_gloo
@pytest.mark.parametrize("name", ["lr", "split"])
def test_groups_that_differ_between_ranks_raise_on_every_rank(ranks, name):
    for r in ranks:
        assert "param_groups: differ between the ranks" in r.get(name, "no error")
        assert r[name + "_unchanged"]


@needs_gloo
def test_an_option_rejected_on_one_rank_raises_on_every_rank(ranks):
    assert ranks[1].get("rejected", "no error").startswith("lr:")
    assert "rejected on 1 of 2 ranks" in ranks[0].get("rejected", "no error")
    assert all(r["rejected_unchanged"] for r in ranks)
