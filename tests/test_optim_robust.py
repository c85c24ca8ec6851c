"""SpectralKron never raises on a finite gradient, and its state cannot be corrupted through
the public API (add_param_group, load_state_dict, deepcopy, pickle)."""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

torch.set_num_threads(1)


def params(dtype=torch.float64, seed=0) -> list[nn.Parameter]:
    torch.manual_seed(seed)
    # a 4 x 6 matrix, a 6 x 18 conv kernel, a same-shaped second matrix, a bias, an embedding
    return [
        nn.Parameter(torch.randn(4, 6, dtype=dtype)),
        nn.Parameter(torch.randn(6, 2, 3, 3, dtype=dtype)),
        nn.Parameter(torch.randn(4, 6, dtype=dtype)),
        nn.Parameter(torch.randn(6, dtype=dtype)),
    ]


def set_grads(ps, g: torch.Generator, scale: float, zero_rows: bool = False) -> None:
    for p in ps:
        G = torch.randn(p.shape, generator=g, dtype=torch.float64) * scale
        if zero_rows:
            G[0] = 0.0  # an exactly-zero gradient entry (dead unit, unused embedding row)
        p.grad = G.to(p.dtype)


def snapshot(opt, ps):
    return [p.detach().clone() for p in ps], copy.deepcopy(opt.state_dict())


def assert_state_finite(opt) -> None:
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                assert bool(torch.isfinite(v).all()), k


# No exception on a finite gradient -----------------------------------------------------------

GRID = list(
    itertools.product(
        [1e-6, 1e-2, 10.0],  # lr
        [1e-300, 1e-12, 1e2],  # damping
        [1e-30, 1.0, 1e30],  # gradient scale
        [torch.float64, torch.float32, torch.bfloat16],  # state dtype
    )
)


@pytest.mark.parametrize("lr, damping, scale, sd", GRID)
def test_finite_gradients_never_raise(lr, damping, scale, sd):
    ps = params(torch.float32 if sd != torch.float64 else torch.float64)
    opt = SpectralKron(ps, lr=lr, damping=damping, state_dtype=sd, clip_rms=None)
    g = torch.Generator().manual_seed(1)
    for t in range(4):
        set_grads(ps, g, scale * (1e3 if t == 2 else 1.0), zero_rows=True)
        opt.step()
    assert_state_finite(opt)
    for p in ps:
        assert bool(torch.isfinite(p).all())
    counted = opt.skipped_steps + opt.curvature_fallbacks + opt.curvature_rejections
    assert counted == opt.state_dict()["counters"]["skipped_steps"] + sum(
        st.get(k, 0)
        for st in opt.state_dict()["state"].values()
        for k in ("curvature_fallbacks", "curvature_rejections")
    )


def test_bf16_gradient_spikes_keep_the_truncated_map_positive():
    """bf16 state and a gradient spike. Composed from the natural gradient, the truncated
    eigenvalue map ``d (1 + m)`` could leave the positive reals (cancellation between the
    centred factor step and the scale step) and needed the continued map. The closed form
    ``n_l = (1 - gamma beta2) d_l + beta2 diag(W_l) / (alpha kappa_l)`` (paper Fig. 6 right)
    is positive whenever ``gamma beta2 < 1``: no spike needs a fallback or is rejected, and
    every state is sound. Which spike size cancelled depended on bf16 rounding, so a range is
    tried."""
    for spike in (1e3, 1e4, 1e5, 1e6, 1e7, 1e8):
        p = nn.Parameter(torch.zeros(16, 16, dtype=torch.float64))
        opt = SpectralKron([p], lr=1e-3, state_dtype=torch.bfloat16)
        g = torch.Generator().manual_seed(1)
        for t in range(4):
            G = torch.randn(16, 16, generator=g, dtype=torch.float64)
            if t == 3:
                G[0] *= spike
            p.grad = G
            opt.step()
        assert opt.curvature_rejections == 0
        assert opt.curvature_fallbacks == 0, spike
        assert opt.skipped_steps == 0
        assert_state_finite(opt)
        pre = opt._preconditioner(opt.param_groups[0], p)
        assert pre.manifold.check_point(pre.point(opt._precond_state(opt.state[p])))[0]


def test_damping_must_be_positive():
    with pytest.raises(ValueError, match="damping"):
        SpectralKron(params(), damping=0.0)


def test_overflowing_update_skips_the_step_and_counts_it():
    """A finite gradient whose update overflows (float32 state, gradient 3e38 with the
    identity curvature): nothing changes, the step is counted as skipped."""
    p = nn.Parameter(torch.ones(3, 4))
    opt = SpectralKron([p], lr=1.0, warm_start=False, momentum=0.5, nesterov=True)
    p.grad = torch.full((3, 4), 3e38)
    before = p.detach().clone()
    opt.step()
    assert opt.skipped_steps == 1 and torch.equal(p, before) and not opt.state[p]


@pytest.mark.parametrize("other", [(3, 4), (2, 3)], ids=["same-shape", "padded"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("root", [1.0, 2.0])
def test_overflowing_update_in_a_bucket_skips_the_whole_step(root, batched, other):
    """Two parameters (one bucket when ``batched``: same-shaped, or padded to 3 x 4); only the
    first one's update overflows (gradient 3e38, Nesterov momentum). The whole step is
    skipped: neither parameter nor any state changes."""
    ps = [nn.Parameter(torch.ones(3, 4)), nn.Parameter(torch.ones(other))]
    opt = SpectralKron(
        ps, lr=1.0, root=root, warm_start=False, momentum=0.5, nesterov=True, batched=batched
    )
    assert len(opt._buckets(opt.param_groups[0], ps)) == (1 if batched else 2)
    ps[0].grad = torch.full((3, 4), 3e38)
    ps[1].grad = torch.ones(other)
    opt.step()
    assert opt.skipped_steps == 1
    assert torch.equal(ps[0], torch.ones(3, 4)) and torch.equal(ps[1], torch.ones(other))
    assert not opt.state[ps[0]] and not opt.state[ps[1]]


# State that cannot be corrupted ---------------------------------------------------------------


def test_rejected_param_group_is_not_registered():
    ps = params()
    opt = SpectralKron(ps[:1], lr=1e-2)
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": ps[1:2], "lr": -5.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": ps[1:2], "lr": 1e-2})  # the parameter can be added again
    assert len(opt.param_groups) == 2


def trained(seed=0, steps=3):
    ps = params(seed=seed)
    opt = SpectralKron(ps, lr=1e-2, eigenvalue_correction=True, graft="adam")
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        set_grads(ps, g, 1.0)
        opt.step()
    return ps, opt


def _set(sd, path, value):
    d = sd
    for k in path[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value(d[path[-1]]) if callable(value) else value


CORRUPT = {
    "negative lr": (("param_groups", 0, "lr"), -1e-2),
    "beta2 3": (("param_groups", 0, "beta2"), 3.0),
    "momentum 1": (("param_groups", 0, "momentum"), 1.0),
    "NaN momentum_buffer": (
        ("state", 0, "momentum_buffer"),
        lambda v: v.clone().fill_(float("nan")),
    ),
    "wrong-shape momentum_buffer": (("state", 0, "momentum_buffer"), lambda v: v[:2].clone()),
    "NaN eig_v": (("state", 0, "eig_v"), lambda v: v.clone().fill_(float("nan"))),
    "negative exp_avg_sq": (("state", 3, "exp_avg_sq"), lambda v: -v - 1.0),
    "Inf exp_avg_sq": (("state", 1, "exp_avg_sq"), lambda v: v.clone().fill_(float("inf"))),
    "missing step": (("state", 0, "step"), KeyError),
    "NaN step": (("state", 0, "step"), torch.tensor(float("nan"))),
    "fractional step": (("state", 0, "step"), torch.tensor(2.5)),
    "negative counter": (("state", 0, "curvature_fallbacks"), -1),
    "bad skipped_steps": (("counters", "skipped_steps"), -3),
}


@pytest.mark.parametrize("what", list(CORRUPT))
def test_corrupted_state_dict_is_refused_and_nothing_is_loaded(what):
    _, src = trained(seed=0)
    ps, opt = trained(seed=1, steps=2)
    sd = copy.deepcopy(src.state_dict())
    path, value = CORRUPT[what]
    _set(sd, path, value)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="nothing was loaded"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for k, st in before["state"].items():
        for name, v in st.items():
            w = after["state"][k][name]
            assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_step_like_the_original(how):
    ps, opt = trained()
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    twin_ps = [p for g in twin.param_groups for p in g["params"]]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(2):
        set_grads(ps, g1, 1.0)
        set_grads(twin_ps, g2, 1.0)
        opt.step()
        twin.step()
    for a, b in zip(ps, twin_ps, strict=True):
        assert torch.equal(a, b)
    assert twin.nonfinite == opt.nonfinite and twin.skipped_steps == opt.skipped_steps
