"""A parameter whose first gradients are all zeros (a zero-initialised output layer's
upstream, a loss term switched on later, ``zero_grad(set_to_none=False)`` before a loss that
ignores a layer) waits for its warm start: no state, no update, no weight decay until its
first nonzero gradient, which then takes the step it takes as a first gradient. Before, the
zero gradient started the curvature at the damping, and the first nonzero one entered at the
rate ``beta2`` only: a step ``beta2^(-1/p)`` times larger (3.2x at ``root=2``, 10x at
``root=1``). And a parameter whose dtype is changed after the constructor (an outside
tester's findings, session 32)."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.optim import SpectralKron

SHAPES = [(6, 5), (4, 3), (4, 3), (9,), ()]


def _params() -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _grads(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in SHAPES]


def _run(opts: dict, zero_first: bool, steps: int = 3) -> list[torch.Tensor]:
    ps = _params()
    opt = SpectralKron(ps, **opts)
    if zero_first:
        before = [p.detach().clone() for p in ps]
        for p in ps:
            p.grad = torch.zeros_like(p)
        opt.step()
        assert all(map(torch.equal, before, ps)), "a zero first gradient moved a parameter"
        assert not any(opt.state.get(p) for p in ps), "a zero first gradient made state"
        assert opt.skipped_steps == 0
    for k in range(steps):
        for p, g in zip(ps, _grads(k), strict=True):
            p.grad = g
        opt.step()
    return [p.detach().clone() for p in ps]


@pytest.mark.parametrize(
    "opts",
    [
        dict(lr=1e-2),
        dict(lr=1e-2, root=1.0, weight_decay=0.1),
        dict(lr=1e-2, update_every=2, state_dtype=torch.bfloat16),
        dict(lr=1e-2, batched=False, eigenvalue_correction=False),
    ],
    ids=["defaults", "root1-decay", "period2-bf16", "unbatched-uncorrected"],
)
def test_zero_first_gradient_changes_nothing(opts: dict) -> None:
    """Training after a zero first step equals training without it, bit for bit."""
    ref, got = _run(opts, False), _run(opts, True)
    for a, b in zip(ref, got, strict=True):
        assert torch.equal(a, b)


def test_one_zero_parameter_waits_while_the_others_step() -> None:
    """A zero gradient beside nonzero ones: only the zero one waits; its first nonzero gradient
    then takes the first-step update (each parameter alone: ``batched=False``)."""
    g1 = torch.tensor([[0.3, -0.02, 1.5], [0.7, 0.1, -0.4]])
    a, b = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.ones(4))
    opt = SpectralKron([a, b], lr=1e-2, batched=False)
    a.grad, b.grad = torch.zeros(2, 3), torch.full((4,), 0.5)
    opt.step()
    assert torch.equal(a, torch.zeros(2, 3)) and not opt.state.get(a)
    assert opt.state.get(b) and not torch.equal(b, torch.ones(4))
    a.grad, b.grad = g1, torch.full((4,), 0.5)
    opt.step()
    fresh = torch.nn.Parameter(torch.zeros(2, 3))
    alone = SpectralKron([fresh], lr=1e-2, batched=False)
    fresh.grad = g1
    alone.step()
    assert torch.equal(a, fresh)


def test_without_warm_start_a_zero_gradient_is_a_step() -> None:
    """``warm_start=False`` starts from the identity whatever the gradient: a zero first
    gradient is an ordinary step (state made; the weight decay applied)."""
    p = torch.nn.Parameter(torch.ones(3, 4))
    opt = SpectralKron([p], lr=1e-2, warm_start=False, weight_decay=0.5)
    p.grad = torch.zeros(3, 4)
    opt.step()
    assert opt.state.get(p)
    assert torch.allclose(p, torch.full((3, 4), 1.0 - 1e-2 * 0.5))


@pytest.mark.parametrize("stepped", [False, True], ids=["fresh", "with-state"])
def test_a_parameter_made_complex_after_construction_is_named(stepped: bool) -> None:
    """``p.data`` made complex between the constructor and a step: the constructor's
    ``TypeError`` naming ``params[0][1]``, nothing changed (was a ``TypeError`` about a
    ``dtype`` argument from a manifold's constructor, or a state mismatch)."""
    a, p = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.randn(3, 4))
    opt = SpectralKron([a, p], lr=1e-2)
    if stepped:
        a.grad, p.grad = torch.ones(2), torch.ones(3, 4)
        opt.step()
    state = {k: v.clone() for k, v in opt.state.get(p, {}).items()}
    p.data = p.data.to(torch.complex64)
    before, a_before = p.detach().clone(), a.detach().clone()
    a.grad, p.grad = torch.ones(2), torch.ones_like(p)
    with pytest.raises(TypeError, match=r"params\[0\]\[1\]: expected a real floating point"):
        opt.step()
    assert torch.equal(p, before) and torch.equal(a, a_before)
    assert opt.state.get(p, {}).keys() == state.keys()
    assert all(torch.equal(opt.state[p][k], v) for k, v in state.items())
