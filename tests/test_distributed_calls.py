"""shard=True when the ranks make different calls of the optimizer's collectives (a misuse):
``add_param_group`` or ``consolidated_state_dict`` on one rank while the other steps, a group
rejected on one rank only, ``nonfinite`` or a tensor ``lr`` set differently per rank, a
parameter appended to a group by hand, a rank outside ``process_group`` building the
optimizer. Every rank must raise a
``ValueError`` with nothing changed, instead of gloo aborting the processes on the size
mismatch of two different collectives, a rank left waiting, or ranks that silently take
different decisions (one skips a step that the other raises on).

One ``torch.multiprocessing.spawn`` of 2 gloo ranks runs the cases in turn (a short
process-group timeout: a rank left waiting fails the test in seconds)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from _distributed import flat, make_model, needs_gloo, run_in_group, spawn_ranks

from manifold_spectral.optim import SpectralKron


def _grads(ps: list[torch.Tensor], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def _unchanged(opt: SpectralKron, ps: list[torch.Tensor], snap: Any) -> bool:
    before, state = snap
    after = opt.state_dict()["state"]
    return (
        all(torch.equal(a, b) for a, b in zip(before, ps, strict=True))
        and after.keys() == state.keys()
        and all(torch.equal(v, after[k][n]) for k, st in state.items() for n, v in st.items())
    )


def _case(rank: int, name: str, out: dict[str, Any]) -> None:
    """One good step on both ranks, then the misuse (what each rank raised and whether its
    parameters, state and groups stayed as they were), then a step on both ranks again."""
    ps = list(make_model().parameters())
    opt = SpectralKron(ps, lr=0.05, damping=1e-4, shard=True, nonfinite="raise")
    _grads(ps, 1)
    opt.step()
    extra = [torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)]
    _grads(ps, 2)
    snap = flat(ps), copy.deepcopy(opt.state_dict()["state"])
    try:
        if name == "nonfinite":  # rank 0 would skip the step, rank 1 would raise
            opt.nonfinite = "skip" if rank == 0 else "raise"
            ps[0].grad[0, 0] = float("nan")
            opt.step()
        elif name == "tensor_lr":  # a tensor lr (a scheduler's) of another value per rank
            opt.param_groups[0]["lr"] = torch.tensor(0.05 * (1 + rank))
            try:
                opt.step()
            finally:
                opt.param_groups[0]["lr"] = 0.05
        elif name == "by_hand":  # a parameter put into a group without add_param_group
            extra[0].grad = torch.ones_like(extra[0])
            opt.param_groups[0]["params"].append(extra[0])
            try:
                opt.step()
            finally:
                opt.param_groups[0]["params"].pop()
        elif name == "rejected_add":  # a group with a bad option on rank 0 only
            opt.add_param_group({"params": extra, "lr": -1.0 if rank == 0 else 0.05})
        elif rank == 0:
            if name == "add_vs_step":
                opt.add_param_group({"params": extra})
            else:
                opt.consolidated_state_dict()
        else:
            opt.step()
        out[name] = "no error"
    except ValueError as e:
        out[name] = str(e)
    out[name + "_unchanged"] = _unchanged(opt, ps, snap) and len(opt.param_groups) == 1
    out[name + "_no_owner"] = not any(p in opt.sharding.owners for p in extra)
    opt.nonfinite = "raise"
    _grads(ps, 3)
    opt.step()  # the ranks take steps together again
    out[name + "_stepped"] = not any(torch.equal(a, b) for a, b in zip(snap[0], ps, strict=True))


def _outside_the_group(rank: int, out: dict[str, Any]) -> None:
    """``process_group`` of rank 0 alone, the optimizer built on both ranks: rank 1 is not in
    it (torch answers rank -1, world -1 there, and its collectives return at once)."""
    group = torch.distributed.new_group([0])  # a collective: every rank creates it
    ps = list(make_model().parameters())
    try:
        opt = SpectralKron(ps, lr=0.05, shard=True, process_group=group)
        _grads(ps, 1)
        opt.step()
        out["outside"] = "no error"
    except ValueError as e:
        out["outside"] = str(e)


def _cases(rank: int, out: dict[str, Any]) -> None:
    _outside_the_group(rank, out)
    # The misuses that made gloo abort the processes before, last.
    names = ("nonfinite", "tensor_lr", "by_hand", "rejected_add", "add_vs_step")
    for name in (*names, "consolidate_vs_step"):
        _case(rank, name, out)


def _worker(rank: int, tmp: str) -> None:
    run_in_group(rank, tmp, 15, lambda out: _cases(rank, out))  # waiting fails in 15 s


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("calls"))


def _assert_nothing_changed(ranks: list[dict[str, Any]], name: str) -> None:
    for r in ranks:
        assert r[name + "_unchanged"] and r[name + "_no_owner"] and r[name + "_stepped"]


@needs_gloo
@pytest.mark.parametrize("name", ["add_vs_step", "consolidate_vs_step"])
def test_a_collective_called_on_one_rank_only_raises_on_every_rank(ranks, name):
    call = "add_param_group()" if name == "add_vs_step" else "consolidated_state_dict()"
    for r in ranks:
        msg = r.get(name, "no error")
        assert "different collective calls" in msg, msg
        assert "step() on 1 of 2" in msg and f"{call} on 1 of 2" in msg, msg
    _assert_nothing_changed(ranks, name)


@needs_gloo
def test_a_group_rejected_on_one_rank_is_added_on_no_rank(ranks):
    assert ranks[0].get("rejected_add", "no error").startswith("lr:")
    assert "rejected on 1 of 2 ranks" in ranks[1].get("rejected_add", "no error")
    _assert_nothing_changed(ranks, "rejected_add")


@needs_gloo
@pytest.mark.parametrize("name", ["nonfinite", "tensor_lr"])
def test_an_option_that_differs_between_ranks_raises_on_every_rank(ranks, name):
    """Otherwise a NaN gradient is skipped on one rank and raised on the other, or each rank
    applies the same updates with its own tensor lr, and the parameters part silently."""
    for r in ranks:
        msg = r.get(name, "no error")
        assert "param_groups: differ between the ranks" in msg and "nonfinite" in msg, msg
    _assert_nothing_changed(ranks, name)


@needs_gloo
def test_a_parameter_put_into_a_group_by_hand_is_refused_by_name(ranks):
    for r in ranks:
        msg = r.get("by_hand", "no error")
        assert msg.startswith("params[0][6]: put into param_groups without an owner rank"), msg
    _assert_nothing_changed(ranks, "by_hand")


@needs_gloo
def test_a_rank_outside_process_group_is_refused_by_name(ranks):
    assert ranks[0]["outside"] == "no error"  # the group's one rank steps alone
    msg = ranks[1]["outside"]
    assert msg.startswith("process_group: this process (rank 1 of the world) is not one"), msg
