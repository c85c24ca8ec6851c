"""Autograd through the geoopt adapters' retraction with ``rotation="second_order"``: a user
who differentiates a loss through ``retr`` (a look-ahead step, a learned step size) gets the
gradient of the map, checked against finite differences, with finite values at equal
eigenvalues, and the same angles as the in-place path that an optimizer step takes."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from manifold_spectral.geoopt import KroneckerSpectralSPD, SpectralSPD
from manifold_spectral.manifolds import blocks

geoopt = pytest.importorskip("geoopt")

F64 = torch.float64


@pytest.mark.parametrize("cayley", ["exact", "neumann"])
@pytest.mark.parametrize(
    "make",
    [
        lambda c: SpectralSPD(4, cayley=c, rotation="second_order"),
        lambda c: KroneckerSpectralSPD(2, 3, cayley=c, rotation="second_order"),
    ],
)
def test_second_order_retraction_gradient_matches_finite_differences(make, cayley):
    man = make(cayley)
    g = torch.Generator().manual_seed(3)
    x = man.random(dtype=F64, generator=g).as_subclass(torch.Tensor)
    u = 0.3 * man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))
    inputs = (x.clone().requires_grad_(), u.clone().requires_grad_())
    assert gradcheck(man.retr, inputs)


def _tied_step():
    """Eigenvalues with an exact tie before and after the step (pair 0, 1), a pair that the
    step makes equal (2, 3: a zero new gap with a nonzero coupling, the 45-degree limit) and
    a nearly equal pair (4, 5)."""
    d = torch.tensor([1.0, 1.0, 2.0, 3.0, 5.0, 5.0 + 1e-9], dtype=F64)
    d_new = torch.tensor([1.1, 1.1, 2.5, 2.5, 4.0, 4.5], dtype=F64)
    M = 0.3 * torch.randn(6, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    return d, d_new, M


def test_second_order_angles_under_autograd_are_the_in_place_angles():
    d, d_new, M = _tied_step()
    plain = blocks.second_order_angles(d, d_new, M)
    graph = blocks.second_order_angles(d, d_new, M.clone().requires_grad_())
    # The in-place path forms the angles in float32: agreement to its rounding.
    assert torch.allclose(graph.detach(), plain, rtol=1e-6, atol=1e-7)
    # The 45-degree limit of the pair the step makes equal: tan(pi / 8) either way.
    assert abs(float(graph.detach()[3, 2].abs()) - 0.41421356237) < 1e-6


def test_second_order_angles_gradient_is_finite_at_equal_eigenvalues():
    d, d_new, M = _tied_step()
    leaves = [t.clone().requires_grad_() for t in (d, d_new, M)]
    (blocks.second_order_angles(*leaves) ** 2).sum().backward()
    for t in leaves:
        assert torch.isfinite(t.grad).all()
    assert leaves[2].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "man",
    [
        SpectralSPD(4, cayley="neumann"),
        SpectralSPD(4, rotation="second_order"),
        SpectralSPD(4, rotation="jacobi"),
        KroneckerSpectralSPD(2, 3, cayley="neumann", rotation="second_order"),
    ],
    ids=["neumann", "second_order", "jacobi", "kron"],
)
def test_torch_func_transforms_of_retr_match_the_plain_calls(man):
    """``torch.func.vmap`` of ``retr`` equals ``retr`` point by point, and forward-mode
    ``jacfwd`` equals reverse-mode ``jacrev``: the fast paths' ``out=`` calls have no batching
    or forward-mode rule, so under a transform the out-of-place forms run (for
    ``second_order`` in the input's dtype, where the fast path takes its angles in float32:
    they agree to float32's rounding)."""
    g = torch.Generator().manual_seed(5)
    xs = torch.stack([man.random(dtype=F64, generator=g) for _ in range(3)])
    us = torch.stack([0.3 * man.proju(x, torch.randn(x.shape, generator=g, dtype=F64)) for x in xs])
    batched = torch.func.vmap(man.retr)(xs, us)
    loop = torch.stack([man.retr(x, u) for x, u in zip(xs, us, strict=True)])
    tol = 1e-7 if man.rotation == "second_order" else 1e-12
    torch.testing.assert_close(batched, loop, rtol=tol, atol=tol)
    fwd = torch.func.jacfwd(man.retr, argnums=1)(xs[0], us[0])
    rev = torch.func.jacrev(man.retr, argnums=1)(xs[0], us[0])
    torch.testing.assert_close(fwd, rev, rtol=1e-9, atol=1e-11)
