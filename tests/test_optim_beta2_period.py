"""``SpectralKron``'s default ``beta2`` per curvature period (``option_defaults.beta2``): the
curvature forgets at ``1 - 0.1`` per optimizer step whatever the period, while an explicit
``beta2`` is the rate of each curvature step (the paper's).

The probe: after one gradient, zero gradients. A curvature step then only forgets
(``d <- (1 - beta2) d + beta2 * damping``, the Kronecker ``alpha`` likewise, paper Fig. 6
right with ``W = damping``), so over 12 optimizer steps (a whole number of periods for
``k = 1, 2, 3, 4``) the scale falls by ``(1 - beta2_k)^(12 / k)``: ``0.9^12`` for the
default at every ``k``, ``0.9^(12 / k)`` for ``beta2 = 0.1`` given explicitly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

WINDOW = 12


def _decay(k: int, kind: str, **options) -> float:
    """The factor by which the curvature's scale falls over ``WINDOW`` steps of zero
    gradients at period ``k`` (``kind``: a Kronecker layer's ``alpha`` or a bias's ``d``)."""
    torch.manual_seed(0)
    if kind == "kronecker":
        p, key, period = nn.Parameter(torch.randn(5, 4, dtype=torch.float64)), "pc_alpha", {}
        period["update_every"] = k
    else:
        p, key, period = nn.Parameter(torch.randn(6, dtype=torch.float64)), "pc_d", {}
        period["diagonal_every"] = k
    opt = SpectralKron([p], lr=0.0, **period, **options)
    p.grad = torch.randn_like(p)
    opt.step()  # the warm start
    for _ in range(k):  # past the phase of the first curvature step
        p.grad = torch.zeros_like(p)
        opt.step()
    start = opt.state[p][key].clone()
    for _ in range(WINDOW):
        p.grad = torch.zeros_like(p)
        opt.step()
    return float((opt.state[p][key] / start).mean())


@pytest.mark.parametrize("kind", ["kronecker", "diagonal"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_default_rate_forgets_the_same_per_optimizer_step_at_every_period(kind, k):
    assert _decay(k, kind) == pytest.approx(0.9**WINDOW, rel=1e-9)


@pytest.mark.parametrize("kind", ["kronecker", "diagonal"])
@pytest.mark.parametrize("k", [2, 3])
def test_explicit_beta2_is_the_rate_of_each_curvature_step(kind, k):
    assert _decay(k, kind, beta2=0.1) == pytest.approx(0.9 ** (WINDOW // k), rel=1e-9)


def test_default_rate_at_period_one_is_the_documented_number_bit_for_bit():
    """``update_every=1`` keeps ``beta2 = 0.1`` exactly (``1 - (1 - 0.1)`` is not 0.1): the
    same bits as an explicit ``beta2=0.1``, in float64, where the two numbers differ (in
    float32 they round alike)."""
    states = []
    for options in ({}, {"beta2": 0.1}):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
        opt = SpectralKron(model.parameters(), lr=1e-2, **options)
        x = torch.randn(8, 4, dtype=torch.float64)
        for _ in range(4):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        states.append([t.clone() for t in model.parameters()])
    for a, b in zip(*states, strict=True):
        assert torch.equal(a, b)


def test_a_changed_period_takes_its_rate_at_the_next_step():
    """``update_every`` changed in ``param_groups`` mid-run: the preconditioners are rebuilt
    with the new period's default rate (here 2 -> 1: ``0.9`` per step from then on)."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    opt = SpectralKron([p], lr=0.0, update_every=2)
    p.grad = torch.randn_like(p)
    opt.step()
    for _ in range(4):
        p.grad = torch.zeros_like(p)
        opt.step()
    opt.param_groups[0]["update_every"] = 1
    start = opt.state[p]["pc_alpha"].clone()
    for _ in range(3):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert float(opt.state[p]["pc_alpha"] / start) == pytest.approx(0.9**3, rel=1e-9)


@pytest.mark.parametrize("k", [3, 4])
def test_truncated_scheme_checks_the_resolved_rate(k):
    """``gamma * beta2 < 1`` holds for the rate the curvature steps take: ``gamma = 5`` passes
    at period 2 (``5 * 0.19``) and is refused at 3 and 4 (``5 * 0.271``, ``5 * 0.3439``), with
    nothing built."""
    p = nn.Parameter(torch.zeros(5, 4))
    SpectralKron([p], gamma=5.0, update_every=2)
    with pytest.raises(ValueError, match="beta2"):
        SpectralKron([p], gamma=5.0, update_every=k)
    with pytest.raises(ValueError, match="beta2"):
        SpectralKron([p], gamma=5.0, diagonal_every=k)
