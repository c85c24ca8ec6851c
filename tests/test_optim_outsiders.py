"""What users bring that the other optimizer tests did not: parameter groups of equal size,
gradient spikes beyond the state dtype's squares, float16 parameters over a float32 state,
learning rates the parameters' dtype cannot hold, empty and complex parameters. Each case
was found by trying the optimizer as a new user would."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _backward(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    model.zero_grad()
    model(torch.randn(32, 8, generator=g)).square().mean().backward()


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def _assert_unchanged(before, opt, params):
    ps, sd = before
    for p, q in zip(params, ps, strict=True):
        assert torch.equal(p.detach(), q)
    now = opt.state_dict()  # its counters record the skip; the state must not
    assert repr(now["state"]) == repr(sd["state"])
    assert repr(now["param_groups"]) == repr(sd["param_groups"])


@pytest.mark.parametrize("batched", [True, False])
def _split(m: nn.Module) -> tuple[list, list]:
    return [p for p in m.parameters() if p.ndim >= 2], [p for p in m.parameters() if p.ndim < 2]


@pytest.mark.parametrize("batched", [True, False])
def test_decay_and_no_decay_groups_of_equal_size_step_as_two_optimizers(batched):
    # The usual split of an MLP: two weights, two biases. The bucket cache looked the group
    # up with list.index, which compares the groups' parameter lists tensor by tensor.
    a, b = _mlp(), _mlp()
    wa, ba = _split(a)
    wb, bb = _split(b)
    joint = SpectralKron(
        [{"params": wa, "weight_decay": 0.1}, {"params": ba, "weight_decay": 0.0}],
        lr=1e-2,
        batched=batched,
    )
    alone = [
        SpectralKron(wb, lr=1e-2, weight_decay=0.1, batched=batched),
        SpectralKron(bb, lr=1e-2, weight_decay=0.0, batched=batched),
    ]
    for t in range(3):
        for m in (a, b):
            _backward(m, t)
        joint.step()
        for opt in alone:
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(wa[0], _split(_mlp())[0][0])


@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("shape", [(8,), (6, 10)])
@pytest.mark.parametrize("update_every", [1, 3])
def test_gradient_whose_squares_overflow_the_state_skips_the_step_with_a_warning(
    state_dtype, shape, update_every
):
    # |g| = 1e20 in float32: g^2 = 1e40 is not a float32. Before, the curvature step was
    # rejected, the old curvature (~1) kept, and the parameter moved by ~lr |g| = 1e17.
    torch.manual_seed(0)
    p = nn.Parameter(torch.zeros(shape))
    opt = SpectralKron([p], lr=1e-3, state_dtype=state_dtype, update_every=update_every)
    for _ in range(4):
        p.grad = torch.randn(shape)
        opt.step()
    before = _snapshot(opt, [p])
    p.grad = torch.randn(shape) * 1e20
    with pytest.warns(RuntimeWarning, match="step skipped.*overflows its state dtype"):
        opt.step()
    _assert_unchanged(before, opt, [p])
    assert opt.skipped_steps == 1
    p.grad = torch.randn(shape)  # and training goes on
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert 0 < float((p.detach() - before[0][0]).abs().max()) < 1.0


def test_overflowing_kronecker_curvature_skips_the_step_instead_of_keeping_the_old_one():
    # |g| = 6e18 passes the per-entry bound (1.8e19) but G G^T sums 64 such squares: the
    # curvature step overflows. Keeping the previous curvature moved the matrix by ~1e15.
    torch.manual_seed(0)
    W = nn.Parameter(torch.zeros(8, 64))
    opt = SpectralKron([W], lr=1e-3, eigenvalue_correction=False)
    for _ in range(3):
        W.grad = torch.randn(8, 64)
        opt.step()
    before = _snapshot(opt, [W])
    W.grad = torch.full((8, 64), 6e18)
    with pytest.warns(RuntimeWarning, match="step skipped"):
        opt.step()
    _assert_unchanged(before, opt, [W])
    assert opt.skipped_steps == 1


def test_float16_parameter_never_receives_an_update_beyond_its_range():
    # root 1 over a float32 state: u ~ g / g^2 = 1e5 is a float32 but not a float16; the
    # cast wrote Inf, then NaN, into the parameter.
    torch.manual_seed(0)
    b = nn.Parameter(torch.zeros(8, dtype=torch.float16))
    opt = SpectralKron([b], lr=1e-3, root=1.0, state_dtype=torch.float32)
    for _ in range(3):
        b.grad = (torch.randn(8) * 1e-5).half()
        before = _snapshot(opt, [b])
        with pytest.warns(RuntimeWarning, match="not finite in its dtype torch.float16"):
            opt.step()
        _assert_unchanged(before, opt, [b])
    assert opt.skipped_steps == 3


@pytest.mark.parametrize("lr", [1e300, 1e38])
def test_learning_rate_beyond_the_parameter_dtype_skips_whole_steps(lr):
    # 1e300 is not a float32: the parameter write raised after the state had been written.
    # 1e38 is one, but lr u then overflows the parameter within a few steps.
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(4, 6))
    opt = SpectralKron([W], lr=lr)
    for t in range(4):
        W.grad = torch.randn(4, 6)
        before = _snapshot(opt, [W])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt.step()
        if caught:
            assert "step skipped" in str(caught[0].message)
            _assert_unchanged(before, opt, [W])
        assert bool(torch.isfinite(W).all()), t
    assert opt.skipped_steps >= 1


def test_empty_parameters_are_left_alone():
    torch.manual_seed(0)
    empty = nn.Linear(4, 0)
    full = nn.Linear(4, 3)
    opt = SpectralKron([*empty.parameters(), *full.parameters()], lr=1e-2)
    w0 = full.weight.detach().clone()
    (full(torch.randn(5, 4)).square().sum() + empty(torch.randn(5, 4)).sum()).backward()
    opt.step()
    assert not torch.equal(full.weight, w0)
    assert empty.weight.shape == (0, 4) and not opt.state[empty.weight]


def test_complex_and_integer_parameters_are_refused_by_name():
    real = nn.Parameter(torch.randn(3, 3))
    with pytest.raises(TypeError, match=r"params\[0\]\[1\]: .*complex64"):
        SpectralKron([real, nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))])
    opt = SpectralKron([real])
    with pytest.raises(TypeError, match=r"params\[1\]\[0\]: .*int64"):
        opt.add_param_group({"params": [torch.zeros(3, dtype=torch.int64)]})
    assert len(opt.param_groups) == 1
    assert math.isfinite(float(real.detach().sum()))


def _train_linear(steps: int, change=None, reload_at=None, compiled=False):
    torch.manual_seed(0)
    m = nn.Linear(20, 8)
    opt = SpectralKron(m.parameters(), lr=3e-3)
    x = torch.randn(64, 20)
    step = torch.compile(opt.step) if compiled else opt.step
    for i in range(steps):
        opt.zero_grad()
        m(x).square().mean().backward()
        if change is not None and i == 5:
            change(opt.param_groups[0])
        if reload_at is not None and i == reload_at:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        step()
    return m.weight.detach().clone(), opt


@pytest.mark.parametrize(
    "key, value",
    [("beta2", 0.01), ("damping", 1e-3), ("cayley", "exact"), ("root", 1.0), ("gap_damping", 0.1)],
)
def test_an_option_changed_mid_training_takes_effect_at_once_and_resumes_bitwise(key, value):
    # The preconditioners were cached with the options they were built with: a changed beta2
    # was ignored until a load_state_dict rebuilt them, so resuming changed the run.
    def change(group):
        group[key] = value

    base, _ = _train_linear(12)
    changed, _ = _train_linear(12, change)
    reloaded, _ = _train_linear(12, change, reload_at=9)
    assert not torch.equal(changed, base)
    assert torch.equal(changed, reloaded)


def test_invalid_or_layout_changing_options_mid_training_are_named_and_change_nothing():
    torch.manual_seed(0)
    m = nn.Linear(6, 4)
    opt = SpectralKron(m.parameters(), lr=1e-2)
    m(torch.randn(8, 6)).square().mean().backward()
    opt.step()
    for key, value, error in [
        ("update_every", 0, ValueError),
        ("momentum", 1.5, ValueError),
        ("clip_rms", -1.0, ValueError),
        ("graft", "sgd", ValueError),
        ("state_dtype", torch.bfloat16, ValueError),
        ("diagonal", True, ValueError),
    ]:
        group = opt.param_groups[0]
        old = group[key]
        group[key] = value
        before = _snapshot(opt, list(m.parameters()))
        with pytest.raises(error, match=key):
            opt.step()
        _assert_unchanged(before, opt, list(m.parameters()))
        group[key] = old
    opt.step()  # restored: steps again
    assert int(opt.state[m.weight]["step"]) == 2


def test_compiled_step_runs_eagerly_with_the_same_bits():
    eager, _ = _train_linear(6)
    compiled, _ = _train_linear(6, compiled=True)
    assert torch.equal(eager, compiled)


def test_parameter_whose_shape_changed_under_its_state_is_named():
    p = nn.Parameter(torch.randn(16, 1))
    opt = SpectralKron([p])
    p.grad = torch.randn(16, 1)
    opt.step()
    p.data = torch.randn(16, 8)
    p.grad = torch.randn(16, 8)
    with pytest.raises(ValueError, match=r"shape \(16, 8\) has optimizer state of shape \(16, 1\)"):
        opt.step()


@pytest.mark.parametrize(
    "low, high", [(torch.float32, torch.float64), (torch.bfloat16, torch.float32)]
)
def test_a_state_saved_before_the_model_was_upcast_loads_and_trains(low, high):
    # The factors, orthogonal and of unit determinant to the coarse dtype's precision, were
    # checked at the finer dtype's tolerance: "det != 1 (log det = 1.59e-07 > 1e-10)".
    torch.manual_seed(0)
    m = nn.Linear(24, 16).to(low)
    opt = SpectralKron(m.parameters(), lr=1e-3)
    x = torch.randn(32, 24)
    for _ in range(3):
        opt.zero_grad()
        m(x.to(low)).float().square().mean().backward()
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    m.to(high)
    opt2 = SpectralKron(m.parameters(), lr=1e-3)
    opt2.load_state_dict(sd)
    st, saved = opt2.state[m.weight], sd["state"][0]
    eps = torch.finfo(low).eps
    for side in ("L", "R"):
        B = st[f"pc_B_{side}"]
        assert B.dtype == high
        eye = torch.eye(B.shape[0], dtype=high)
        assert float((B.T @ B - eye).abs().max()) < 100 * torch.finfo(high).eps
        assert float((B - saved[f"pc_B_{side}"].to(high)).abs().max()) < 10 * eps
        assert abs(float(torch.log(st[f"pc_d_{side}"]).sum())) < 100 * torch.finfo(high).eps
    for _ in range(3):
        opt2.zero_grad()
        m(x.to(high)).square().mean().backward()
        opt2.step()
    assert opt2.skipped_steps == 0 and int(opt2.state[m.weight]["step"]) == 6


def test_load_state_dict_hooks_see_and_shape_the_loaded_state():
    # The loaded state tensors were re-taken from the caller's dict after torch's load: a
    # pre-hook's rewritten dict and a post-hook's replaced entries were undone.
    torch.manual_seed(0)
    m = nn.Linear(24, 16)
    opt = SpectralKron(m.parameters())
    m(torch.randn(32, 24)).square().mean().backward()
    opt.step()
    sd = opt.state_dict()

    def pre(o, state_dict):
        state_dict = copy.deepcopy(state_dict)
        for st in state_dict["state"].values():
            st["momentum_buffer"].mul_(0.5)
        return state_dict

    seen = []

    def post(o):
        seen.append(o.state[m.weight]["momentum_buffer"].clone())
        o.state[m.bias]["momentum_buffer"] = torch.zeros_like(o.state[m.bias]["momentum_buffer"])

    opt2 = SpectralKron(m.parameters())
    opt2.register_load_state_dict_pre_hook(pre)
    opt2.register_load_state_dict_post_hook(post)
    opt2.load_state_dict(sd)
    half = 0.5 * sd["state"][0]["momentum_buffer"]
    assert torch.equal(opt2.state[m.weight]["momentum_buffer"], half)
    assert len(seen) == 1 and torch.equal(seen[0], half)
    assert not opt2.state[m.bias]["momentum_buffer"].any()
    assert sd["state"][0]["momentum_buffer"].any()  # the caller's dict is not touched


def _sparse_grad(p: torch.Tensor) -> None:
    p.grad = torch.randn(p.shape).to_sparse()


def _expanded(p: torch.Tensor) -> None:
    p.data = torch.zeros(1, p.shape[1]).expand(p.shape)  # elements share memory
    p.grad = torch.randn(p.shape)


@pytest.mark.parametrize(
    "spoil, match",
    [
        (_sparse_grad, r"params\[0\]\[1\]: sparse gradients"),
        (_expanded, r"params\[0\]\[1\] \(shape \(6, 8\), stride \(0, 1\)\): .*share memory"),
    ],
)
@pytest.mark.parametrize("shard", [False, True])
def test_a_parameter_the_step_cannot_write_is_named_before_anything_changes(
    spoil, match, shard, tmp_path
):
    if not shard:
        return _cannot_write(spoil, match, False)
    import datetime

    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("no gloo backend")
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path}/store",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        _cannot_write(spoil, match, True)  # the sharded step's own checks (distributed.step)
    finally:
        dist.destroy_process_group()


def _cannot_write(spoil, match: str, shard: bool) -> None:
    torch.manual_seed(0)
    good, bad = nn.Parameter(torch.randn(6, 8)), nn.Parameter(torch.randn(6, 8))
    opt = SpectralKron([good, bad], lr=1e-2, shard=shard)
    good.grad = torch.randn(6, 8)
    spoil(bad)
    g0 = good.detach().clone()
    with pytest.raises(ValueError, match=match):
        opt.step()
    assert torch.equal(good, g0) and not opt.state  # the first parameter was not written


def test_meta_device_parameters_are_named():
    layer = nn.Linear(4, 3, device="meta")
    opt = SpectralKron(layer.parameters(), lr=1e-2)
    for p in layer.parameters():
        p.grad = torch.empty_like(p)
    with pytest.raises(ValueError, match=r"params\[0\]\[0\] is on the meta device"):
        opt.step()
