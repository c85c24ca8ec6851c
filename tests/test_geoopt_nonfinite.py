"""``projx`` of a point with NaN or Inf factors (a diverged run, a bad ``copy_``), as geoopt's
``stabilize`` calls it inside ``opt.step()``: a ``ValueError`` naming ``x`` and the factor,
the parameter untouched, instead of torch's SVD error or a NaN written into the parameter."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral.geoopt import KroneckerSpectralSPD, SpectralSPD

geoopt = pytest.importorskip("geoopt")

F64 = torch.float64
# (manifold, entry of the packed point, factor named): SpectralSPD(3) packs [B; d^T] (4, 3);
# KroneckerSpectralSPD(2, 2) packs [alpha, vec(B_L), d_L, vec(B_R), d_R] (13,).
CASES = [
    (lambda: SpectralSPD(3), (0, 1), "B"),
    (lambda: SpectralSPD(3), (3, 2), "d"),
    (lambda: KroneckerSpectralSPD(2, 2), (2,), "B_L"),
    (lambda: KroneckerSpectralSPD(2, 2), (5,), "d_L"),
    (lambda: KroneckerSpectralSPD(2, 2), (8,), "B_R"),
    (lambda: KroneckerSpectralSPD(2, 2), (12,), "d_R"),
]


def _bad_point(make, where, value):
    man = make()
    x = man.random(dtype=F64, generator=torch.Generator().manual_seed(0)).as_subclass(torch.Tensor)
    x = x.clone()
    x[where] = value
    return man, x


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize(("make", "where", "factor"), CASES)
def test_projx_of_a_non_finite_factor_names_x_and_the_factor(make, where, factor, value):
    man, x = _bad_point(make, where, value)
    before = x.clone()
    with pytest.raises(ValueError, match=rf"^x: {factor} contains NaN or Inf"):
        man.projx(x)
    assert torch.equal(x.isnan(), before.isnan())
    assert torch.equal(x.nan_to_num(), before.nan_to_num())


@pytest.mark.parametrize(("make", "where"), [case[:2] for case in CASES])
def test_stabilize_on_a_diverged_parameter_raises(make, where):
    """geoopt's ``stabilize`` copies ``projx(p)`` into the parameter: a NaN factor stops the
    step with the error instead of a torch SVD failure (NaN ``B``) or a run that trains on
    NaN (NaN ``d``)."""
    man, x = _bad_point(make, where, float("nan"))
    p = geoopt.ManifoldParameter(x.clone(), manifold=man)
    opt = geoopt.optim.RiemannianSGD([p], lr=0.0, stabilize=1)
    p.grad = torch.zeros_like(p)
    # The step before stabilize spreads a NaN of d into B (0 * NaN): either factor is named.
    with pytest.raises(ValueError, match=r"^x: [Bd](_[LR])? contains NaN or Inf"):
        opt.step()
