"""``SpectralKron(basis_scale=c)``: the learned basis's curvature step is ``c`` times the
eigenvalues' ``beta2`` (``KroneckerSpectralSPD.closed_form_step``; the closed form against
the paper's box with ``c`` is in tests/test_closed_form_step.py). Here: the option reaches
the curvature step of every Kronecker parameter, and only the basis moves differently."""

from __future__ import annotations

import copy

import pytest
import torch

from manifold_spectral.gaussian import GOP, Gaussian
from manifold_spectral.manifolds import KroneckerSpectralPoint, SpectralPoint
from manifold_spectral.optim import SpectralKron


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _grads(model: torch.nn.Module, k: int) -> None:
    g = torch.Generator().manual_seed(100 + k)
    model.zero_grad()
    model(torch.randn(4, 6, generator=g)).pow(2).mean().backward()


def _run(steps: int = 4, **options) -> tuple[torch.nn.Module, SpectralKron]:
    model = _model()
    opt = SpectralKron(model.parameters(), lr=1e-2, **options)
    for k in range(steps):
        _grads(model, k)
        opt.step()
    return model, opt


def test_two_is_the_default_and_moves_only_the_basis_first() -> None:
    m2, o2 = _run(basis_scale=2.0)
    m0, o0 = _run()
    assert o0.param_groups[0]["basis_scale"] == 2.0
    assert all(torch.equal(a, b) for a, b in zip(m2.parameters(), m0.parameters(), strict=True))
    m2, o2 = _run(steps=2, basis_scale=2.0)
    m1, o1 = _run(steps=2, basis_scale=1.0)
    w2, w1 = o2.state[m2[0].weight], o1.state[m1[0].weight]
    # the second step's curvature update (the first one after the warm start's) turns the
    # basis differently; its eigenvalues' step is beta2's in both (same state before it)
    assert not torch.equal(w2["pc_B_L"], w1["pc_B_L"])


def test_the_optimizers_curvature_step_is_the_gaussian_step_with_the_scale() -> None:
    """The curvature step of one layer equals ``Gaussian(basis_scale=2)``'s closed form on its
    state and gradient (update_every=1, no momentum in the curvature)."""
    p = torch.nn.Parameter(torch.zeros(5, 4, dtype=torch.float64))
    opt = SpectralKron([p], lr=1e-2, basis_scale=2.0, eigenvalue_correction=False)
    g = torch.Generator().manual_seed(0)
    p.grad = torch.randn(5, 4, generator=g, dtype=torch.float64)
    opt.step()
    st = copy.deepcopy(opt.state[p])
    x = KroneckerSpectralPoint(
        st["pc_alpha"],
        SpectralPoint(st["pc_B_L"], st["pc_d_L"]),
        SpectralPoint(st["pc_B_R"], st["pc_d_R"]),
    )
    G = torch.randn(5, 4, generator=g, dtype=torch.float64)
    p.grad = G.clone()
    opt.step()
    group = opt.param_groups[0]
    K = opt._preconditioner(group, p).manifold  # the layer's manifold and its options
    gauss = Gaussian(
        K,
        beta2=0.1,  # the default rate at period 1 (SpectralKron's docstring)
        exponential="truncated",
        jacobi=True,
        updated_gaps=True,
        basis_scale=2.0,
    )
    y = gauss.precision_step(x, GOP(G.reshape(-1), damping=group["damping"]), count=2)
    new = opt.state[p]
    for key, want in (("pc_B_L", y.left.B), ("pc_d_L", y.left.d), ("pc_B_R", y.right.B)):
        assert torch.allclose(new[key], want, rtol=0, atol=1e-12), key


def test_a_changed_scale_takes_effect_and_resumes_bit_for_bit() -> None:
    model, opt = _run(steps=2)
    saved = copy.deepcopy(opt.state_dict())
    opt.param_groups[0]["basis_scale"] = 2.0  # a schedule: the preconditioners are rebuilt
    _grads(model, 2)
    opt.step()
    after = [p.detach().clone() for p in model.parameters()]
    model2, opt2 = _run(steps=2)
    opt2.load_state_dict(saved)
    opt2.param_groups[0]["basis_scale"] = 1.0
    _grads(model2, 2)
    opt2.step()
    # the step's direction is taken in the basis before its curvature update (as SOAP's):
    # the new scale shows in the learned basis
    w = model[0].weight
    assert not torch.equal(opt.state[w]["pc_B_L"], opt2.state[model2[0].weight]["pc_B_L"])
    model3, opt3 = _run(steps=2)
    opt3.load_state_dict(saved)
    opt3.param_groups[0]["basis_scale"] = 2.0
    _grads(model3, 2)
    opt3.step()
    assert all(torch.equal(a, p) for a, p in zip(after, model3.parameters(), strict=True))
    assert torch.equal(opt.state[w]["pc_B_L"], opt3.state[model3[0].weight]["pc_B_L"])


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), "2"])
def test_a_bad_scale_is_refused_by_name(bad) -> None:
    with pytest.raises((ValueError, TypeError), match="basis_scale"):
        SpectralKron(_model().parameters(), basis_scale=bad)
