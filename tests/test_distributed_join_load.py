"""shard=True with uneven inputs under ``Join``, checkpoints of one rank's shard loaded on
another rank (a file saved on rank 0 alone, ``torch.distributed.checkpoint`` of
``state_dict()``), each rank's part loaded as a whole state (``get_state_dict`` then
``set_state_dict(strict=False)``), ``load_state_dict`` called on one rank while the other
steps, and a gradient present on one rank only. Every rank must raise a ``ValueError`` that
says what to do, with nothing changed, instead of gloo aborting the processes or a rank
going on alone and waiting for the others in its next collective. ``Join`` without
``shard`` (the ranks stay equal after it) and ``torch.distributed.checkpoint`` of
``consolidated_state_dict()`` (resumed bit for bit) work.

One ``torch.multiprocessing.spawn`` of 2 gloo ranks runs the cases in turn (a short
process-group timeout: a rank left waiting fails the test in seconds)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.distributed as dist
from _distributed import flat, make_model, needs_gloo, run_in_group, spawn_ranks
from test_distributed_calls import _grads, _unchanged

from manifold_spectral.optim import SpectralKron

OPTS: dict[str, Any] = dict(lr=0.05, damping=1e-4)


def _error(f: Any) -> str:
    try:
        f()
    except ValueError as e:
        return str(e)
    return "no error"


def _stepped(rank: int, tmp: str) -> tuple[list[torch.Tensor], SpectralKron]:
    """Two sharded steps of ``make_model``'s parameters, identical on both ranks."""
    ps = list(make_model().parameters())
    opt = SpectralKron(ps, **OPTS, shard=True)
    for seed in (1, 2):
        _grads(ps, seed)
        opt.step()
    return ps, opt


def _join(rank: int, out: dict[str, Any], shard: bool) -> None:
    """DDP under ``Join([model, opt])``, rank 1 with one batch more than rank 0."""
    from torch.distributed.algorithms.join import Join
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(make_model())
    opt = SpectralKron(model.parameters(), **OPTS, shard=shard)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(6, 6, generator=g, dtype=torch.float64)
    before: list[torch.Tensor] = []
    try:
        with Join([model, opt]):
            for s in range(2 + rank):
                opt.zero_grad()
                model(X[2 * s : 2 * s + 2]).square().sum().backward()
                before = flat(model.parameters())
                opt.step()
        out[f"join_{shard}"] = "no error"
        for s in range(2):  # the ranks step together again, each on its own data
            opt.zero_grad()
            model(X[2 * s : 2 * s + 2] + rank).square().sum().backward()
            opt.step()
    except ValueError as e:
        out[f"join_{shard}"] = str(e)
        out["join_unchanged"] = all(
            torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
        )
    out[f"join_{shard}_params"] = flat(model.parameters())


def _loads(rank: int, tmp: str, out: dict[str, Any]) -> None:
    import torch.distributed.checkpoint as dcp

    # A file saved on rank 0 alone, loaded on every rank.
    ps, opt = _stepped(rank, tmp)
    if rank == 0:
        torch.save(opt.state_dict(), f"{tmp}/rank0_only.pt")
    dist.barrier()
    snap = flat(ps), copy.deepcopy(opt.state_dict()["state"])
    saved = torch.load(f"{tmp}/rank0_only.pt", weights_only=False)
    out["rank0_file"] = _error(lambda: opt.load_state_dict(saved))
    out["rank0_file_unchanged"] = _unchanged(opt, ps, snap)

    # torch.distributed.checkpoint of state_dict(): one rank's "shard" entry is kept.
    dcp.save({"optim": opt.state_dict()}, checkpoint_id=f"{tmp}/dcp_shards")
    fresh, opt2 = _stepped(rank, tmp)
    target = {"optim": opt2.state_dict()}
    dcp.load(target, checkpoint_id=f"{tmp}/dcp_shards")
    snap = flat(fresh), copy.deepcopy(opt2.state_dict()["state"])
    out["dcp_shards"] = _error(lambda: opt2.load_state_dict(target["optim"]))
    out["dcp_shards_unchanged"] = _unchanged(opt2, fresh, snap)

    # load_state_dict on rank 0 while rank 1 steps.
    _grads(ps, 3)
    own = opt.state_dict()
    snap = flat(ps), copy.deepcopy(own["state"])
    out["load_vs_step"] = _error(lambda: opt.load_state_dict(own) if rank == 0 else opt.step())
    out["load_vs_step_unchanged"] = _unchanged(opt, ps, snap)

    # A dict that torch.optim itself would refuse (a parameter less), on rank 1 only.
    short = copy.deepcopy(own)
    if rank == 1:
        short["param_groups"][0]["params"].pop()
    out["layout"] = _error(lambda: opt.load_state_dict(short))
    out["layout_unchanged"] = _unchanged(opt, ps, snap)

    # torch.distributed.checkpoint of consolidated_state_dict(): resumed bit for bit.
    dcp.save({"optim": opt.consolidated_state_dict()}, checkpoint_id=f"{tmp}/dcp_whole")
    for seed in (4, 5):
        _grads(ps, seed)
        opt.step()
    resumed, opt3 = _stepped(rank, tmp)  # the same parameters as ps at the save
    target = {"optim": opt3.consolidated_state_dict()}
    dcp.load(target, checkpoint_id=f"{tmp}/dcp_whole")
    opt3.load_state_dict(target["optim"])
    for seed in (4, 5):
        _grads(resumed, seed)
        opt3.step()
    out["dcp_whole_bitwise"] = all(torch.equal(a, b) for a, b in zip(ps, resumed, strict=True))


def _get_state_dict_parts(rank: int, tmp: str, out: dict[str, Any]) -> None:
    """``get_state_dict`` of a sharded optimizer: each rank's part, without ``"shard"``;
    ``set_state_dict(strict=False)`` would load it as a whole state."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_state_dict,
        set_state_dict,
    )

    model = make_model()
    ps = list(model.parameters())
    opt = SpectralKron(ps, **OPTS, shard=True)
    for seed in (1, 2):
        _grads(ps, seed)
        opt.step()
    msd, osd = get_state_dict(model, opt)
    snap = flat(ps), copy.deepcopy(opt.state_dict()["state"])
    kw = dict(model_state_dict=msd, optim_state_dict=osd, options=StateDictOptions(strict=False))
    out["parts"] = _error(lambda: set_state_dict(model, opt, **kw))
    out["parts_unchanged"] = _unchanged(opt, ps, snap)


def _gradient_on_one_rank(rank: int, tmp: str, out: dict[str, Any]) -> None:
    ps, opt = _stepped(rank, tmp)
    _grads(ps, 3)
    if rank == 1:
        ps[2].grad = None
    snap = flat(ps), copy.deepcopy(opt.state_dict()["state"])
    try:
        opt.step()
        out["one_rank_grad"] = "no error"
    except Exception as e:  # noqa: BLE001 - the test checks its type
        out["one_rank_grad"] = f"{type(e).__name__}: {e}"
    out["one_rank_grad_unchanged"] = _unchanged(opt, ps, snap)


def _cases(rank: int, tmp: str, out: dict[str, Any]) -> None:
    _gradient_on_one_rank(rank, tmp, out)
    _loads(rank, tmp, out)
    _get_state_dict_parts(rank, tmp, out)
    _join(rank, out, shard=False)
    _join(rank, out, shard=True)  # gloo aborted the processes here: last


def _worker(rank: int, tmp: str) -> None:
    run_in_group(rank, tmp, 15, lambda out: _cases(rank, tmp, out))  # waiting fails in 15 s


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("join_load"))


@needs_gloo
def test_join_with_shard_raises_on_every_rank_with_nothing_changed(ranks):
    for r in ranks:
        msg = r["join_True"]
        assert msg.startswith("SpectralKron(shard=True): 1 of 2 ranks ran out of inputs"), msg
        assert "shard=False" in msg and "nothing was changed" in msg, msg
    assert ranks[1]["join_unchanged"]  # the rank that was stepping
    for a, b in zip(ranks[0]["join_True_params"], ranks[1]["join_True_params"], strict=True):
        assert torch.equal(a, b)  # both stopped after the same two steps


@needs_gloo
def test_join_without_shard_keeps_the_ranks_equal_after_it(ranks):
    """DDP's join hook gives the rank that joined early the last joiner's model, ours its
    optimizer state: two steps later the ranks still hold the same parameters (with the
    stale state of the early rank, they part at the first step)."""
    assert ranks[0]["join_False"] == ranks[1]["join_False"] == "no error"
    for a, b in zip(ranks[0]["join_False_params"], ranks[1]["join_False_params"], strict=True):
        assert torch.equal(a, b)


@needs_gloo
@pytest.mark.parametrize("name", ["rank0_file", "dcp_shards"])
def test_another_ranks_shard_is_refused_on_every_rank(ranks, name):
    """Rank 0's file on rank 1; ``dcp`` keeps rank 1's ``"shard"`` entry, refused on rank 0.
    Each message names ``consolidated_state_dict()``, and nothing is loaded anywhere."""
    wrong = 1 if name == "rank0_file" else 0
    for rank, r in enumerate(ranks):
        msg = r[name]
        own = f"state_dict: this is the shard of rank {1 - wrong} of 2, but this optimizer is"
        other = "state_dict: rejected on 1 of 2 ranks"
        assert msg.startswith(own if rank == wrong else other), msg
        assert "consolidated_state_dict()" in msg, msg
        assert r[name + "_unchanged"]


@needs_gloo
def test_load_state_dict_on_one_rank_while_the_other_steps_raises_on_both(ranks):
    for r in ranks:
        msg = r["load_vs_step"]
        assert "different collective calls" in msg, msg
        assert "step() on 1 of 2" in msg and "load_state_dict() on 1 of 2" in msg, msg
        assert r["load_vs_step_unchanged"]


@needs_gloo
def test_a_dict_torch_would_refuse_on_one_rank_is_refused_on_every_rank(ranks):
    """torch.optim's own check would raise after the collective, on rank 1 alone."""
    msg = ranks[1]["layout"]
    assert msg.startswith("state_dict: expected a 'state' dict and 'param_groups' of [6]"), msg
    assert ranks[0]["layout"].startswith("state_dict: rejected on 1 of 2 ranks")
    assert ranks[0]["layout_unchanged"] and ranks[1]["layout_unchanged"]


@needs_gloo
def test_each_ranks_part_loaded_as_a_whole_state_is_refused_on_every_rank(ranks):
    """Otherwise each rank keeps what it finds of the parameters it owns: right at the same
    world size by luck, the others' state silently restarted at another."""
    for r in ranks:
        msg = r["parts"]
        assert msg.startswith("state_dict: parameter "), msg
        assert "has a saved state in 1 of the 2 whole dicts" in msg, msg
        assert "consolidated_state_dict()" in msg and "nothing was loaded" in msg, msg
        assert r["parts_unchanged"]


@needs_gloo
def test_dcp_of_the_consolidated_state_resumes_bit_for_bit(ranks):
    assert ranks[0]["dcp_whole_bitwise"] and ranks[1]["dcp_whole_bitwise"]


@needs_gloo
def test_a_gradient_on_one_rank_only_is_a_value_error_naming_the_parameter(ranks):
    for r in ranks:
        msg = r["one_rank_grad"]
        assert msg.startswith("ValueError: params[0][2]: has a gradient on 1 of 2 ranks"), msg
        assert r["one_rank_grad_unchanged"]
