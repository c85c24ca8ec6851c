"""shard=True with parameter groups that differ between the ranks (a misuse): every rank
raises a ValueError naming ``param_groups`` (or the option a rank rejected) with nothing
changed, instead of ranks that silently disagree, a rank waiting for one that raised, or a
process aborted by gloo's size check.

One ``torch.multiprocessing.spawn`` of 2 gloo ranks runs the cases (a short process-group
timeout: a rank left waiting fails the test in seconds) and saves what each rank saw."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from _distributed import OPTS, flat, make_model, needs_gloo, run_in_group, spawn_ranks

from manifold_spectral.optim import SpectralKron


def _case(rank: int, name: str, out: dict[str, Any]) -> None:
    """Build the case's optimizer on each rank, take one step with the same gradients
    everywhere, and record the error and whether any parameter or state entry changed."""
    model = make_model()
    ps = list(model.parameters())
    opts: dict[str, Any] = dict(OPTS)
    groups: Any = ps
    # Parameters that rank 1 holds and rank 0 does not (one more on rank 1).
    extra = [torch.zeros(4, dtype=torch.float64, requires_grad=True) for _ in range(1 + rank)]
    if name == "lr":  # a different learning rate on each rank
        opts["lr"] = OPTS["lr"] * (1 + rank)
    elif name == "split":  # the same parameters, grouped differently on rank 1
        groups = [{"params": ps}] if rank == 0 else [{"params": ps[:2]}, {"params": ps[2:]}]
    elif name == "extra":  # one more parameter on rank 1
        groups = ps + extra[1:]
    elif name == "shape":  # rank 1's last parameter has another shape (4, not 3)
        groups = ps[:-1] + [extra[0] if rank else ps[-1]]
    try:
        opt = SpectralKron(groups, **opts, shard=True)
    except ValueError as e:  # nothing was built
        out[name] = str(e)
        return
    g = torch.Generator().manual_seed(2)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    for p in extra:
        p.grad = torch.ones_like(p)
    if name == "rejected":  # an invalid option set on rank 1 only (after a good step)
        opt.step()
        opt.param_groups[0]["lr"] = -1.0 if rank == 1 else OPTS["lr"]
    before, state = flat(ps), copy.deepcopy(opt.state_dict()["state"])
    if name == "added":  # a group with one more parameter on rank 1
        try:
            opt.add_param_group({"params": extra})
        except ValueError as e:
            out[name] = str(e)
        out[name + "_unchanged"] = len(opt.param_groups) == 1 and not any(
            p in opt.sharding.owners for p in extra
        )
        opt.step()  # the ranks still hold the same groups: the step goes on
        out[name + "_stepped"] = not any(torch.equal(a, b) for a, b in zip(before, ps, strict=True))
        return
    try:
        opt.step()
    except ValueError as e:
        out[name] = str(e)
    after = opt.state_dict()["state"]
    out[name + "_unchanged"] = all(
        torch.equal(a, b) for a, b in zip(before, ps, strict=True)
    ) and all(torch.equal(v, after[k][n]) for k, st in state.items() for n, v in st.items())


def _cases(rank: int, out: dict[str, Any]) -> None:
    # The misuses that made gloo abort the processes before, last.
    for name in ("lr", "rejected", "added", "split", "extra", "shape"):
        _case(rank, name, out)


def _worker(rank: int, tmp: str) -> None:
    run_in_group(rank, tmp, 15, lambda out: _cases(rank, out))  # waiting fails in 15 s


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("groups"))


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


@needs_gloo
@pytest.mark.parametrize("name", ["extra", "shape"])
def test_parameters_that_differ_between_ranks_raise_at_construction_on_every_rank(ranks, name):
    for r in ranks:
        assert "param_groups: differ between the ranks (the number of parameters" in r.get(
            name, "no error"
        )


@needs_gloo
def test_a_group_with_an_extra_parameter_on_one_rank_is_not_added(ranks):
    for r in ranks:
        assert "param_groups: differ between the ranks (the number of parameters" in r.get(
            "added", "no error"
        )
        assert r["added_unchanged"]
        assert r["added_stepped"]  # and the ranks still take steps together
