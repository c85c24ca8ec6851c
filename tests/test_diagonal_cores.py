"""The diagonal scheme's unchecked cores (``DiagonalSPD.gop_eigenbasis_unchecked``,
``closed_form_step_unchecked``, ``apply_power_unchecked``), which ``SpectralKron`` calls
without the public methods' checks: their values by hand, and the optimizer's curvature
update and direction equal to the public methods' bit for bit."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.manifolds import DiagonalPoint, DiagonalSPD
from manifold_spectral.optim.preconditioners import DiagonalPreconditioner

DT = torch.float64
OPTS = dict(damping=0.5, beta2=0.25, gamma=1.0, root=2.0, exponential="truncated")


def test_gop_diagonal_by_hand():
    # One column (1, 2, -3): its squares plus the damping 0.5. Two columns (1, 3), (2, 0),
    # (-3, 1): the mean of the squares, (10, 4, 10) / 2, plus 0.5.
    one = torch.tensor([[1.0], [2.0], [-3.0]], dtype=DT)
    got = DiagonalSPD.gop_eigenbasis_unchecked(one, 0.5)
    assert torch.equal(got, torch.tensor([1.5, 4.5, 9.5], dtype=DT))
    two = torch.tensor([[1.0, 3.0], [2.0, 0.0], [-3.0, 1.0]], dtype=DT)
    got = DiagonalSPD.gop_eigenbasis_unchecked(two, 0.5)
    assert torch.equal(got, torch.tensor([5.5, 2.5, 5.5], dtype=DT))


def test_closed_form_and_power_by_hand():
    # Truncated map: (1 - gamma beta2) d + beta2 h = 0.75 (2, 4) + 0.25 (6, 0.5) = (3, 3.125).
    x = DiagonalPoint(torch.tensor([2.0, 4.0], dtype=DT))
    h = torch.tensor([6.0, 0.5], dtype=DT)
    for nonnegative in (False, True):
        y = DiagonalSPD.closed_form_step_unchecked(
            x, h, 0.25, 1.0, "truncated", nonnegative=nonnegative
        )
        assert torch.equal(y.d, torch.tensor([3.0, 3.125], dtype=DT))
    # d^(-1/2) v: (4, 16)^(-1/2) (1, -2) = (0.5, -0.5).
    d, v = torch.tensor([4.0, 16.0], dtype=DT), torch.tensor([1.0, -2.0], dtype=DT)
    assert torch.equal(
        DiagonalSPD.apply_power_unchecked(d, v, -0.5), torch.tensor([0.5, -0.5], dtype=DT)
    )


@pytest.mark.parametrize("exponential", ["truncated", "exact"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_optimizers_diagonal_update_is_the_public_step(exponential, dtype):
    """``DiagonalPreconditioner.update`` / ``precondition`` on the cores equal
    ``Gaussian``'s ``precision_step`` on ``gop_eigenbasis`` and ``apply_power``."""
    gen = torch.Generator().manual_seed(3)
    n = 7
    pre = DiagonalPreconditioner(
        n, dtype, torch.device("cpu"), {**OPTS, "exponential": exponential}
    )
    man = pre.manifold
    d = (torch.rand(n, generator=gen, dtype=DT) + 0.1).to(dtype)
    g = torch.randn(n, generator=gen, dtype=DT).to(dtype)
    got = pre.update({"d": d}, g, count=1)["d"]
    x = DiagonalPoint(d)
    Ht = man.gop_eigenbasis(x, g.reshape(-1, 1), pre.damping)
    want = man.closed_form_step(x, Ht, OPTS["beta2"], OPTS["gamma"], exponential=exponential)
    assert torch.equal(got, want.d)
    assert torch.equal(pre.precondition({"d": d}, g), man.apply_power(x, g, -1.0 / OPTS["root"]))


def test_the_optimizers_diagonal_update_checks_its_result():
    """A NaN gradient entry reaching the update (past the step's checks) makes the new point
    NaN: the result check refuses it, as every RGD step's."""
    pre = DiagonalPreconditioner(3, DT, torch.device("cpu"), OPTS)
    with pytest.raises(FloatingPointError, match="left the manifold"):
        pre.update(
            {"d": torch.ones(3, dtype=DT)},
            torch.tensor([1.0, float("nan"), 0.0], dtype=DT),
            count=1,
        )


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_point_with_one_bad_entry_is_refused(bad):
    """``check_point``: ``d`` finite and positive, each entry (one bad among good ones)."""
    man = DiagonalSPD(4, DT)
    d = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT)
    assert man.check_point(DiagonalPoint(d)) == (True, None)
    for i in range(4):
        e = d.clone()
        e[i] = bad
        ok, reason = man.check_point(DiagonalPoint(e))
        assert not ok and reason, (bad, i)
