"""``SpectralKron(max_aspect=...)``: a matrix whose long side is more than ``max_aspect``
times its short side takes the diagonal scheme, exactly as ``diagonal=True`` would give it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from manifold_spectral.optim import SpectralKron

DT = torch.float64


def _kind(opt: SpectralKron, p: nn.Parameter) -> str:
    return "kronecker" if "pc_B_L" in opt.state[p] else "diagonal"


def _step(shape: tuple[int, ...], **opts) -> tuple[SpectralKron, nn.Parameter]:
    p = nn.Parameter(torch.zeros(shape, dtype=DT))
    opt = SpectralKron([p], lr=1e-2, **opts)
    p.grad = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=DT)
    opt.step()
    return opt, p


@pytest.mark.parametrize(
    ("shape", "aspect", "kind"),
    [
        ((10, 100), 10.0, "kronecker"),  # exactly the bound: inclusive
        ((10, 101), 10.0, "diagonal"),
        ((101, 10), 10.0, "diagonal"),  # either side may be the long one
        ((4, 3, 3, 3), 6.75, "kronecker"),  # a conv kernel is (out, fan_in) = (4, 27)
        ((4, 3, 3, 3), 6.7, "diagonal"),
        ((2, 1000), None, "kronecker"),  # None: no limit (the default)
    ],
)
def test_the_long_side_over_the_short_one_picks_the_scheme(shape, aspect, kind):
    opt, p = _step(shape, max_aspect=aspect)
    assert _kind(opt, p) == kind


def test_a_matrix_sent_to_the_diagonal_scheme_trains_as_diagonal_true():
    """A 2 x 64 head at ``max_aspect=10``: the same bits as ``diagonal=True``, over curvature
    steps and the steps between them; without the limit, other bits (Kronecker factors)."""
    runs = []
    for opts in ({"max_aspect": 10.0}, {"diagonal": True}, {}):
        W = nn.Parameter(torch.zeros(2, 64, dtype=DT))
        opt = SpectralKron([W], lr=1e-2, update_every=2, **opts)
        g = torch.Generator().manual_seed(2)
        for _ in range(5):
            W.grad = torch.randn(2, 64, generator=g, dtype=DT)
            opt.step()
        runs.append((W.detach().clone(), _kind(opt, W)))
    (w_aspect, k_aspect), (w_diag, k_diag), (w_kron, k_kron) = runs
    assert (k_aspect, k_diag, k_kron) == ("diagonal", "diagonal", "kronecker")
    assert torch.equal(w_aspect, w_diag)
    assert not torch.equal(w_aspect, w_kron)


@pytest.mark.parametrize("bad", [0.5, 0.0, -1.0, float("nan"), float("inf"), "10", True])
def test_a_bad_max_aspect_is_named_and_changes_nothing(bad):
    with pytest.raises((ValueError, TypeError), match="max_aspect"):
        SpectralKron([nn.Parameter(torch.zeros(3, 4))], max_aspect=bad)
    opt, p = _step((3, 4))
    before = copy.deepcopy(opt.state_dict())
    opt.param_groups[0]["max_aspect"] = bad
    p.grad = torch.ones(3, 4, dtype=DT)
    with pytest.raises((ValueError, TypeError), match="max_aspect"):
        opt.step()
    for key, value in before["state"][0].items():
        assert torch.equal(torch.as_tensor(opt.state[p][key]), torch.as_tensor(value)), key


def test_a_change_that_moves_a_parameter_to_the_other_scheme_is_an_error():
    """``max_aspect`` fixes the layout of the state: lowered after the state was made, the
    step names it and changes nothing."""
    opt, p = _step((2, 40))
    assert _kind(opt, p) == "kronecker"
    before = {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
    opt.param_groups[0]["max_aspect"] = 10.0
    p.grad = torch.ones(2, 40, dtype=DT)
    with pytest.raises(ValueError, match="max_aspect"):
        opt.step()
    for key, value in before.items():
        assert torch.equal(opt.state[p][key], value), key


def test_a_state_dict_saved_before_the_option_loads_without_a_limit():
    opt, p = _step((2, 40))
    sd = copy.deepcopy(opt.state_dict())
    del sd["param_groups"][0]["max_aspect"]
    q = nn.Parameter(p.detach().clone())
    fresh = SpectralKron([q], lr=1e-2)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["max_aspect"] is None
