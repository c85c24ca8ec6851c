"""SpectralKron on torch.distributed: DDP, sharded preconditioner work (``shard=True``) and
FSDP2 (``fully_shard``) with 2 gloo ranks on the CPU, against a single process on the global
batch.

One ``torch.multiprocessing.spawn`` (a module fixture) runs every multi-process scenario and
saves what it saw to a file per rank; the tests assert on those files in this process.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from _distributed import (
    OPTS,
    STEPS,
    WORLD,
    assert_close_rel,
    assert_equal,
    batch,
    flat,
    make_model,
    needs_gloo,
    run_in_group,
    spawn_ranks,
    train,
)
from torch import nn

from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)


def make_rank_deficient() -> nn.Module:
    """A conv kernel (6 x 18), a 4 x 96 and a 24 x 4 matrix and a one-output layer: with 4
    samples per rank (8 in all) every Kronecker factor's gradient outer product is
    rank-deficient, and the warm start has repeated eigenvalues."""
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(96, 4), nn.Tanh(),
        nn.Linear(4, 24), nn.Tanh(), nn.Linear(24, 1),
    ).double()  # fmt: skip


def rank_deficient_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    X = torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64)
    return X, torch.tanh(X.sum(dim=(1, 2, 3)))[:, None]


#: Default options: only the learning rate is set.
DEFAULT_OPTS: dict[str, Any] = dict(lr=3e-3)
#: Default options at a curvature period of 2 (``beta2=None`` resolves to ``1 - 0.9**2``).
PERIOD2_OPTS: dict[str, Any] = dict(lr=3e-3, update_every=2, diagonal_every=2)


# The worker (one per rank) -----------------------------------------------------------------


def _raise_then_skip(opt: SpectralKron, out: dict[str, Any], key: str) -> None:
    """A step with a non-finite gradient, as ``nonfinite="raise"`` (the error in
    ``out[key + "_raise"]``), then as ``"skip"`` (the count in ``out[key + "_skipped"]``)."""
    try:
        opt.step()
    except ValueError as e:
        out[key + "_raise"] = str(e)
    opt.nonfinite = "skip"
    opt.step()
    out[key + "_skipped"] = opt.skipped_steps


def _ddp_scenarios(rank: int, out: dict[str, Any]) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    X, Y = batch()
    Xr, Yr = X[4 * rank : 4 * rank + 4], Y[4 * rank : 4 * rank + 4]  # half of the global batch

    Xd, Yd = rank_deficient_batch()
    # The defaults, and at a curvature period of 2 (the rate resolved from it) sharded and not.
    for name, opts, shard in (
        ("ddp_rank_deficient", DEFAULT_OPTS, False),
        ("ddp_period2", PERIOD2_OPTS, False),
        ("shard_period2", PERIOD2_OPTS, True),
    ):
        model = DDP(make_rank_deficient())
        dopt = SpectralKron(model.parameters(), **opts, shard=shard)
        train(model, dopt, Xd[4 * rank : 4 * rank + 4], Yd[4 * rank : 4 * rank + 4], 6)
        out[name] = flat(model.parameters())

    plain = DDP(make_model())
    opt = SpectralKron(plain.parameters(), **OPTS)
    train(plain, opt, Xr, Yr, STEPS)
    out["ddp"] = flat(plain.parameters())
    out["ddp_state"] = copy.deepcopy(opt.state_dict()["state"])

    # An all-zero first gradient on every rank: nothing is stepped, no state is made (the
    # warm start waits for a nonzero gradient), so training then equals the plain run's.
    waiting = DDP(make_model())
    wopt = SpectralKron(waiting.parameters(), **OPTS, shard=True)
    before = flat(waiting.parameters())
    for p in waiting.parameters():
        p.grad = torch.zeros_like(p)
    wopt.step()
    out["zero_first_unchanged"] = all(map(torch.equal, before, flat(waiting.parameters())))
    out["zero_first_stateless"] = not any(wopt.state_dict()["state"].values())
    train(waiting, wopt, Xr, Yr, STEPS)
    out["zero_first"] = flat(waiting.parameters())

    sharded = DDP(make_model())
    sopt = SpectralKron(sharded.parameters(), **OPTS, shard=True)
    train(sharded, sopt, Xr, Yr, 2)
    snap_model = copy.deepcopy(sharded.module.state_dict())
    snap_opt = copy.deepcopy(sopt.state_dict())
    snap_full = sopt.consolidated_state_dict()
    train(sharded, sopt, Xr, Yr, STEPS - 2)
    out["shard"] = flat(sharded.parameters())
    out["owned"] = sorted(i for i, st in sopt.state_dict()["state"].items() if st)
    out["consolidated"] = sopt.consolidated_state_dict()["state"]

    # Resume: this rank's shard into a sharded optimizer; the whole state into an unsharded
    # one and into a sharded one.
    for name, shard, sd in (
        ("resume_shard", True, snap_opt),
        ("resume_full_unsharded", False, snap_full),
        ("resume_full_sharded", True, snap_full),
    ):
        m = make_model()
        m.load_state_dict(snap_model)
        m = DDP(m)
        o = SpectralKron(m.parameters(), **OPTS, shard=shard)
        o.load_state_dict(sd)
        train(m, o, Xr, Yr, STEPS - 2)
        out[name] = flat(m.parameters())
    try:
        SpectralKron(make_model().parameters(), **OPTS).load_state_dict(snap_opt)
    except ValueError as e:
        out["load_shard_unsharded"] = str(e)

    # A non-finite gradient: both ranks raise (or skip) and nothing changes.
    before = flat(sharded.parameters())
    state_before = copy.deepcopy(sopt.state_dict())
    sopt.zero_grad()
    nn.functional.mse_loss(sharded(Xr), Yr).backward()
    sharded.module[2].weight.grad[0, 0] = float("nan")
    _raise_then_skip(sopt, out, "nan")
    sopt.nonfinite = "raise"
    # A finite gradient whose squares overflow the float64 state (1e200^2): skipped on
    # every rank with a warning, as in one process, whatever rank owns the parameter.
    sopt.zero_grad()
    nn.functional.mse_loss(sharded(Xr), Yr).backward()
    sharded.module[2].weight.grad[0, 0] = 1e200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sopt.step()
    out["huge_skipped"] = sopt.skipped_steps
    out["huge_warned"] = [str(w.message) for w in caught]
    # A computation that fails on rank 0 only: every rank raises, no rank hangs.
    sopt.zero_grad()
    nn.functional.mse_loss(sharded(Xr), Yr).backward()
    if rank == 0:

        def broken(*args: Any) -> Any:
            raise FloatingPointError("injected failure")

        sopt._compute_many = broken  # type: ignore[method-assign]
    try:
        sopt.step()
    except FloatingPointError as e:
        out["fail_raise"] = str(e)
    out["unchanged"] = all(
        torch.equal(a, b) for a, b in zip(before, sharded.parameters(), strict=True)
    ) and all(
        torch.equal(v, sopt.state_dict()["state"][k][name])
        for k, st in state_before["state"].items()
        for name, v in st.items()
    )


def _mixed_dtype_scenario(out: dict[str, Any]) -> None:
    """Parameters of three dtypes (the exchange packs their bytes in one buffer): sharded and
    unsharded runs from the same gradients on every rank give the same bits."""
    runs = []
    for shard in (False, True):
        torch.manual_seed(3)
        params = [
            nn.Parameter(torch.randn(4, 3)),
            nn.Parameter(torch.randn(5, dtype=torch.float64)),
            nn.Parameter(torch.randn(3, 3, dtype=torch.bfloat16)),
        ]
        opt = SpectralKron(params, lr=0.05, beta2=0.05, damping=1e-3, shard=shard)
        g = torch.Generator().manual_seed(4)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
            opt.step()
        runs.append(flat(params))
    out["mixed_equal"] = all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def _rank_local_nan_scenario(rank: int, out: dict[str, Any]) -> None:
    """shard=True without DDP: a NaN gradient on rank 1 only, in a parameter rank 0 owns
    (which computes its update from its own, finite gradient): every rank must still raise
    or skip, whoever owns the parameter."""
    torch.manual_seed(3)
    params = [nn.Parameter(torch.randn(4, 3, dtype=torch.float64)) for _ in range(2)]
    opt = SpectralKron(params, lr=0.05, damping=1e-3, shard=True)
    bad = next(i for i, p in enumerate(params) if opt.sharding.owners[p] == 0)
    g = torch.Generator().manual_seed(4)
    for k in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
        if k == 0:
            opt.step()  # state to keep unchanged
    before, state = flat(params), copy.deepcopy(opt.state_dict()["state"])
    if rank == 1:
        params[bad].grad[0, 0] = float("nan")
    _raise_then_skip(opt, out, "local_nan")
    after = opt.state_dict()["state"]
    out["local_nan_unchanged"] = all(
        torch.equal(a, b) for a, b in zip(before, params, strict=True)
    ) and all(torch.equal(v, after[k][n]) for k, st in state.items() for n, v in st.items())
    out["local_nan_bad"] = bad


def _fsdp_scenarios(rank: int, out: dict[str, Any]) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    X, Y = batch()
    Xr, Yr = X[4 * rank : 4 * rank + 4], Y[4 * rank : 4 * rank + 4]
    for name, shard in (("fsdp", False), ("fsdp_shard", True)):
        model = make_model()
        fully_shard(model[0], mesh=mesh)
        fully_shard(model[2], mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = SpectralKron(model.parameters(), **OPTS, shard=shard)
        train(model, opt, Xr, Yr, STEPS)
        out[name] = [p.full_tensor().detach().clone() for p in model.parameters()]
        out[name + "_local_shapes"] = [tuple(p.to_local().shape) for p in model.parameters()]
        out[name + "_state"] = {
            i: {k: tuple(v.shape) for k, v in st.items()}
            for i, st in opt.state_dict()["state"].items()
        }


def _scenarios(rank: int, out: dict[str, Any]) -> None:
    _ddp_scenarios(rank, out)
    _mixed_dtype_scenario(out)
    _rank_local_nan_scenario(rank, out)
    _fsdp_scenarios(rank, out)


def _worker(rank: int, tmp: str) -> None:
    run_in_group(rank, tmp, 60, lambda out: _scenarios(rank, out))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def single() -> list[torch.Tensor]:
    """One process, the global batch, the same optimizer."""
    model = make_model()
    X, Y = batch()
    train(model, SpectralKron(model.parameters(), **OPTS), X, Y, STEPS)
    return flat(model.parameters())


@pytest.fixture(scope="module")
def single_rank_deficient() -> dict[int, list[torch.Tensor]]:
    """One process on the rank-deficient model, per curvature period (1: the defaults)."""
    runs = {}
    for period, opts in ((1, DEFAULT_OPTS), (2, PERIOD2_OPTS)):
        model = make_rank_deficient()
        train(model, SpectralKron(model.parameters(), **opts), *rank_deficient_batch(), 6)
        runs[period] = flat(model.parameters())
    return runs


# Tests --------------------------------------------------------------------------------------


@needs_gloo
def test_ddp_matches_single_process_and_ranks_agree(ranks, single):
    assert_equal(ranks[0]["ddp"], ranks[1]["ddp"])
    assert_close_rel(ranks[0]["ddp"], single, 1e-10)


@needs_gloo
def test_ddp_with_default_options_matches_single_process_on_rank_deficient_model(
    ranks, single_rank_deficient
):
    """Gradients that differ by the all-reduce's rounding give parameters that differ by
    rounding, with repeated eigenvalues in the warm start (eigh's basis there is arbitrary)."""
    assert_equal(ranks[0]["ddp_rank_deficient"], ranks[1]["ddp_rank_deficient"])
    assert_close_rel(ranks[0]["ddp_rank_deficient"], single_rank_deficient[1], 1e-10)


@needs_gloo
def test_ddp_at_curvature_period_2_matches_single_process(ranks, single_rank_deficient):
    """Every rank resolves the default beta2 from the period alike: DDP (sharded or not) at
    period 2 equals one process up to the all-reduce's rounding, and is not the period-1 run."""
    assert_equal(ranks[0]["ddp_period2"], ranks[1]["ddp_period2"])
    for r in ranks:
        assert_equal(r["shard_period2"], r["ddp_period2"])
    assert_close_rel(ranks[0]["ddp_period2"], single_rank_deficient[2], 1e-10)
    assert not all(map(torch.equal, single_rank_deficient[1], single_rank_deficient[2]))


@needs_gloo
def test_sharded_equals_unsharded_bitwise_with_disjoint_state(ranks):
    for r in ranks:
        assert_equal(r["shard"], r["ddp"])
    owned = [set(r["owned"]) for r in ranks]
    assert owned[0] and owned[1] and not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(range(6))
    # The two matrices (5 x 6, 3 x 5) form one padded bucket, which has one owner (so that it
    # computes the bucket as the unsharded step does); the four vectors go to the other rank.
    assert {frozenset(o) for o in owned} == {frozenset({0, 2}), frozenset({1, 3, 4, 5})}
    for r in ranks:
        full, ref = r["consolidated"], r["ddp_state"]
        assert full.keys() == ref.keys()
        for k in ref:
            assert all(torch.equal(full[k][n], ref[k][n]) for n in ref[k])
    assert ranks[0]["mixed_equal"] and ranks[1]["mixed_equal"]


@needs_gloo
def test_sharded_zero_first_gradient_waits_for_the_warm_start(ranks):
    for r in ranks:
        assert r["zero_first_unchanged"] and r["zero_first_stateless"]
        assert_equal(r["zero_first"], r["ddp"])


@needs_gloo
def test_sharded_resume_is_bitwise(ranks):
    for r in ranks:
        for name in ("resume_shard", "resume_full_unsharded", "resume_full_sharded"):
            assert_equal(r[name], r["shard"])
        assert "consolidated_state_dict" in r["load_shard_unsharded"]


@needs_gloo
def test_sharded_failures_are_atomic_on_every_rank(ranks):
    for r in ranks:
        assert "params[0][2]" in r["nan_raise"] and "NaN" in r["nan_raise"]
        assert r["nan_skipped"] == 1
        assert r["huge_skipped"] == 2
        assert any("params[0][2]" in m and "step skipped" in m for m in r["huge_warned"])
        assert r["unchanged"]
    assert ranks[0]["fail_raise"] == "injected failure" or "rank 0" in ranks[0]["fail_raise"]
    assert "failed on rank 0" in ranks[1]["fail_raise"]


@needs_gloo
def test_sharded_nan_on_a_rank_that_does_not_own_the_parameter_stops_every_rank(ranks):
    for r in ranks:
        assert f"params[0][{r['local_nan_bad']}]" in r.get("local_nan_raise", "no error")
        assert r["local_nan_skipped"] == 1
        assert r["local_nan_unchanged"]


@needs_gloo
def test_fsdp2_matches_single_process(ranks, single):
    for r in ranks:
        assert_close_rel(r["fsdp"], single, 1e-10)
        assert_equal(r["fsdp_shard"], r["fsdp"])
    assert_equal(ranks[0]["fsdp"], ranks[1]["fsdp"])
    # Parameters stay sharded: 5 rows -> 3 + 2.
    assert ranks[0]["fsdp_local_shapes"][0] == (3, 6)
    assert ranks[1]["fsdp_local_shapes"][0] == (2, 6)
    # Without shard every rank holds the whole state; with it, owners only, full-size factors.
    assert all(len(r["fsdp_state"]) == 6 for r in ranks)
    states = [r["fsdp_shard_state"] for r in ranks]
    assert not states[0].keys() & states[1].keys()
    owner = 0 if 0 in states[0] else 1
    assert states[owner][0]["pc_B_L"] == (5, 5) and states[owner][0]["pc_B_R"] == (6, 6)
