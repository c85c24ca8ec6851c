"""The diagonal scheme's curvature period (``diagonal_every``): at ``1`` its step never uses
a curvature that has not seen the current gradient, which bounds it where an entry's first
gradient (squared by the warm start) was near zero and the next one is not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

LR = 1e-2


def _second_step_change(**options) -> torch.Tensor:
    """|change| of a vector's entries at the second step (curvature period 2); the first
    gradient's entry 2 is 1e-7, every other entry of both gradients 1e-3."""
    p = nn.Parameter(torch.zeros(4))
    opt = SpectralKron([p], lr=LR, update_every=2, **options)
    p.grad = torch.tensor([1e-3, 1e-3, 1e-7, 1e-3])
    opt.step()
    before = p.detach().clone()
    p.grad = torch.full((4,), 1e-3)
    opt.step()
    return (p.detach() - before).abs()


def test_diagonal_step_is_bounded_after_a_tiny_first_gradient():
    # By hand: the Nesterov direction is g2 + 0.9 (0.9 g1 + g2) <= 1.9e-3 + 0.81e-7, and the
    # updated curvature holds at least beta2 g2^2 = 0.1e-6, so the step is at most
    # lr 1.9e-3 / sqrt(1e-7) ~ 6 lr. Without this step's update, d ~ (1e-7)^2: ~1.9e4 lr.
    change = _second_step_change(diagonal_every=1)
    assert float(change.max()) < 10 * LR
    assert float(change[2]) > 0.1 * LR  # it does move


def test_diagonal_every_none_keeps_the_single_period():
    # The paper's one period: no curvature update at the second step (d as the warm start
    # left it, (1e-7)^2 in entry 2). Its step is still bounded: the curvature has not seen
    # the direction, so d is floored by the direction's GOP (``DiagonalSPD.eigen_floor``):
    # |D| / sqrt(beta2 ((1 - momentum) D)^2) = 1 / (0.15 sqrt(0.19)) ~ 15 lr at period 2,
    # where the stale 1e-14 gave ~1.9e4 lr.
    p = nn.Parameter(torch.zeros(4))
    opt = SpectralKron([p], lr=LR, update_every=2, diagonal_every=None)
    p.grad = torch.tensor([1e-3, 1e-3, 1e-7, 1e-3])
    opt.step()
    d = opt.state[p]["pc_d"].clone()
    p.grad = torch.full((4,), 1e-3)
    before = p.detach().clone()
    opt.step()
    assert torch.equal(opt.state[p]["pc_d"], d)
    change = (p.detach() - before).abs()
    beta2 = 1 - 0.9**2
    assert float(change[2]) == pytest.approx(LR / (0.15 * beta2**0.5), rel=1e-3)


def test_diagonal_every_leaves_kronecker_parameters_alone():
    def run(diagonal_every):
        torch.manual_seed(0)
        layer = nn.Linear(6, 5, bias=False)
        opt = SpectralKron(layer.parameters(), lr=LR, update_every=3, diagonal_every=diagonal_every)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            layer.weight.grad = torch.randn(5, 6, generator=g)
            opt.step()
        return layer.weight.detach().clone()

    assert torch.equal(run(1), run(None))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_diagonal_every_is_named(bad):
    p = nn.Parameter(torch.zeros(3))
    with pytest.raises((ValueError, TypeError), match="diagonal_every"):
        SpectralKron([p], diagonal_every=bad)


def test_a_state_dict_without_diagonal_every_resumes_with_the_single_period():
    p = nn.Parameter(torch.zeros(3))
    opt = SpectralKron([p], lr=LR, update_every=2)
    p.grad = torch.ones(3)
    opt.step()
    sd = opt.state_dict()
    for group in sd["param_groups"]:
        del group["diagonal_every"]
    opt2 = SpectralKron([p], lr=LR, update_every=2)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["diagonal_every"] is None


def test_default_bounds_the_diagonal_step_whatever_update_every():
    # The default updates the diagonal curvature every step (update_every=2 here).
    assert float(_second_step_change().max()) < 10 * LR
