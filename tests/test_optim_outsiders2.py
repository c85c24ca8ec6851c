"""An outside tester's findings on ``SpectralKron`` (session 15): state written by means that
no version counter sees, an option switched on mid-run, and dtypes torch cannot compute in.

Each test failed on the code before its fix (see the commit messages)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

# A padded bucket (three small Kronecker layers of different shapes), a same-shaped bucket
# and a vector: every kind of packed state.
PADDED = [(6, 5), (4, 3), (7, 2)]
SAME = [(6, 5), (6, 5), (6, 5)]


def _params(shapes: list[tuple[int, ...]]) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]


def _set_grads(ps: list[nn.Parameter], i: int) -> None:
    g = torch.Generator().manual_seed(100 + i)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)


def _write(t: torch.Tensor, how: str, value: torch.Tensor) -> None:
    """``t[...] = value``, tracked by ``t._version`` or not."""
    if how == "tracked":
        with torch.no_grad():
            t.copy_(value)
    elif how == "data":
        t.data.copy_(value)  # .data has its own version counter
    else:
        t.numpy()[...] = value.numpy()  # NumPy writes bump no version counter


def _edit_state(opt: SpectralKron, ps: list[nn.Parameter], how: str) -> None:
    """What a user might do between steps: reset the momentum, rescale the second moments,
    permute a factor's eigenvectors (still orthonormal, so a valid point; changes S)."""
    for p in ps:
        st = opt.state[p]
        _write(st["momentum_buffer"], how, torch.zeros_like(st["momentum_buffer"]))
        if "eig_v" in st:
            _write(st["eig_v"], how, 2.0 * st["eig_v"])
        _write(st["pc_B_L"], how, st["pc_B_L"].flip(-1))


def _run(shapes, how, update_every, reload=False):
    ps = _params(shapes)
    opt = SpectralKron(ps, lr=1e-2, update_every=update_every)
    for i in range(8):
        if reload and i == 4:  # a resumed run: state entries not unpacked from any bucket
            saved = copy.deepcopy(opt.state_dict())
            opt = SpectralKron(ps, lr=1e-2, update_every=update_every)
            opt.load_state_dict(saved)
            _set_grads(ps, i)
            opt.step()  # no curvature update at step 5 when update_every = 3
            continue
        if i == 5:
            _edit_state(opt, ps, how)
        _set_grads(ps, i)
        opt.step()
    return [p.detach().clone() for p in ps]


@pytest.mark.parametrize("how", ["data", "numpy"])
@pytest.mark.parametrize("update_every", [1, 3])
def test_untracked_state_write_reaches_a_padded_bucket(how: str, update_every: int) -> None:
    # A padded bucket's smaller members hold copies of its packed state; the bucket used to
    # reuse the kept pack after a write the version counter did not see (a silent wrong step).
    tracked = _run(PADDED, "tracked", update_every)
    untracked = _run(PADDED, how, update_every)
    for a, b in zip(tracked, untracked, strict=True):
        assert torch.equal(a, b)
    # and the edit changed the run (else the test would prove nothing)
    ps = _params(PADDED)
    opt = SpectralKron(ps, lr=1e-2, update_every=update_every)
    for i in range(8):
        _set_grads(ps, i)
        opt.step()
    assert not all(torch.equal(a, b) for a, b in zip(tracked, ps, strict=True))


@pytest.mark.parametrize("shapes", [SAME, PADDED])
def test_untracked_state_write_after_a_reload_is_seen(shapes) -> None:
    # After a load, a step without a curvature update packs the loaded entries afresh; that
    # pack used to be kept although the entries are not views of it.
    tracked = _run(shapes, "tracked", 3, reload=True)
    untracked = _run(shapes, "data", 3, reload=True)
    for a, b in zip(tracked, untracked, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(6, 5), (7,)])
def test_graft_switched_on_mid_run_starts_adams_second_moment_at_zero(shape) -> None:
    # graft="adam" set in param_groups after the state was made used to raise a TypeError
    # (no exp_avg_sq). Expected, from Adam's formulas: v = (1 - 0.999) g^2 at step 3,
    # bias-corrected by 1 - 0.999^3, and an update of norm lr ||g / (sqrt(v_hat) + 1e-8)||
    # (momentum 0, no decay or clipping).
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(*shape, dtype=torch.float64))
    opt = SpectralKron([p], lr=1e-2, momentum=0.0)
    for _ in range(2):
        p.grad = torch.randn(shape, dtype=torch.float64)
        opt.step()
    opt.param_groups[0]["graft"] = "adam"
    g = torch.randn(shape, dtype=torch.float64)
    p.grad = g.clone()
    before = p.detach().clone()
    opt.step()
    gf = g.float().double()  # Adam's buffer is float32
    v_hat = (1 - 0.999) * gf * gf / (1 - 0.999**3)
    expected = 1e-2 * torch.linalg.vector_norm(gf / (v_hat.sqrt() + 1e-8))
    moved = torch.linalg.vector_norm(p.detach() - before)
    assert math.isclose(float(moved), float(expected), rel_tol=1e-5)
    assert opt.state[p]["exp_avg_sq"].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_eight_bit_floats_are_refused_by_name(dtype) -> None:
    # Both used to be accepted and then fail inside the first step with torch's
    # NotImplementedError ("sum_cpu" / "max_all" not implemented for 'Float8_e4m3fn').
    good = nn.Parameter(torch.randn(4, 3))
    with pytest.raises(TypeError, match="state_dtype"):
        SpectralKron([good], state_dtype=dtype)
    bad = nn.Parameter(torch.randn(4, 3).to(dtype), requires_grad=False)
    with pytest.raises(TypeError, match=r"params\[0\]\[1\]"):
        SpectralKron([good, bad])
    opt = SpectralKron([good])
    with pytest.raises(TypeError, match=r"params\[1\]\[0\]"):
        opt.add_param_group({"params": [bad]})
    assert len(opt.param_groups) == 1


def test_a_resumed_optimizers_state_dict_equals_the_uninterrupted_ones() -> None:
    # torch's __setstate__ (run by load_state_dict and unpickling) adds a "differentiable"
    # default, which used to be copied into every group: the resumed state_dict had one key
    # more, also after a second save and load.
    ps = _params(SAME)
    opt = SpectralKron(ps, lr=1e-2)
    _set_grads(ps, 0)
    opt.step()
    resumed = SpectralKron(ps, lr=1e-2)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    again = SpectralKron(ps, lr=1e-2)
    again.load_state_dict(copy.deepcopy(resumed.state_dict()))
    for other in (resumed, again, copy.deepcopy(opt)):
        assert other.param_groups[0].keys() == opt.param_groups[0].keys()
        assert other.defaults.keys() == opt.defaults.keys()
        assert other.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


@pytest.mark.parametrize("shape", [(6, 5), (7,)])
def test_graft_second_moment_overflow_skips_the_step(shape) -> None:
    # The graft's Adam buffer is float32 whatever the state dtype: a float64 gradient of
    # 1e25 (its square 1e50 is finite in float64) used to store Inf in exp_avg_sq and move
    # the parameter by exactly 0, silently, at this and every later step.
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(*shape, dtype=torch.float64))
    opt = SpectralKron([p], lr=1e-2, graft="adam")
    p.grad = torch.randn(shape, dtype=torch.float64)
    opt.step()
    before, state = p.detach().clone(), copy.deepcopy(opt.state_dict()["state"])
    p.grad = torch.randn(shape, dtype=torch.float64) * 1e25
    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step()
    assert opt.skipped_steps == 1
    assert torch.equal(p.detach(), before)
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(state[0][key])), key
    p.grad = torch.randn(shape, dtype=torch.float64)
    opt.step()
    assert torch.isfinite(opt.state[p]["exp_avg_sq"]).all() and not torch.equal(p, before)


#: Options of the group a parameter moves into (all taken by the curvature or the step).
NEW_OPTIONS = {"beta2": 0.5, "damping": 1e-4, "root": 4.0}
REGROUPS = ["pop and add", "move to a new group", "replace the group dict"]


def _regrouped(how: str | None) -> list[torch.Tensor]:
    """Three steps in one group, the parameters regrouped with ``NEW_OPTIONS`` (``how``),
    three more; ``how=None``: the state saved and loaded with those options instead (the
    documented way, bitwise equal to an uninterrupted run)."""
    ps = _params([*SAME[:2], (4, 3), (9,)])
    opt = SpectralKron([{"params": ps}], lr=1e-2)
    for i in range(3):
        _set_grads(ps, i)
        opt.step()
    if how is None:
        saved = copy.deepcopy(opt.state_dict())
        saved["param_groups"][0].update(NEW_OPTIONS)
        opt = SpectralKron([{"params": ps}], lr=1e-2)
        opt.load_state_dict(saved)
    elif how == "pop and add":
        opt.param_groups.pop(0)
        opt.add_param_group({"params": ps, **NEW_OPTIONS})
    elif how == "move to a new group":
        opt.param_groups[0]["params"] = []
        opt.add_param_group({"params": ps, **NEW_OPTIONS})
    else:
        opt.param_groups[0] = {**opt.param_groups[0], **NEW_OPTIONS}
    for i in range(3, 6):
        _set_grads(ps, i)
        opt.step()
    return [p.detach() for p in ps]


@pytest.mark.parametrize("how", REGROUPS)
def test_a_regrouped_parameter_takes_its_new_groups_options(how: str) -> None:
    # The preconditioners were cached per parameter (and per bucket by group index), so a
    # parameter in a new group dict kept the options of its old one: silently, beta2,
    # damping and root of the new group had no effect.
    for a, b in zip(_regrouped(how), _regrouped(None), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layout", [{"diagonal": True}, {"max_factor_dim": 4}])
def test_a_parameter_moved_to_a_group_of_another_layout_is_refused(layout) -> None:
    # It used to fail inside the step with KeyError('alpha').
    ps = _params([(6, 5), (6, 5)])
    opt = SpectralKron(ps, lr=1e-2)
    _set_grads(ps, 0)
    opt.step()
    opt.param_groups.pop(0)
    opt.add_param_group({"params": ps, **layout})
    before, state = [p.detach().clone() for p in ps], copy.deepcopy(opt.state_dict()["state"])
    _set_grads(ps, 1)
    with pytest.raises(ValueError, match="moved to another group"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, ps, strict=True))
    for i, st in opt.state_dict()["state"].items():
        for key, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state[i][key]))
