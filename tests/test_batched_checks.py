"""Batched manifolds (``batch=k``, split from test_batched.py): a batch's point check fails
when one element fails and names it, and wrong shapes, batch arguments and dense paths are
rejected with clear errors."""

from __future__ import annotations

import pytest
import torch
from test_batched import F64, A, B, K, N, gen, kron_elements, rel_err, spectral_elements, stack

import manifold_spectral as ms
from manifold_spectral.gaussian import GOP, DenseCurvature, Gaussian
from manifold_spectral.manifolds import KroneckerSpectralPoint, SpectralPoint, SpectralTangent

# check_point of a batch --------------------------------------------------------------------


def corrupt(x: KroneckerSpectralPoint, i: int, how: str) -> KroneckerSpectralPoint:
    alpha, BL, dL = x.alpha.clone(), x.left.B.clone(), x.left.d.clone()
    BR, dR = x.right.B.clone(), x.right.d.clone()
    if how == "B":
        BR[i] *= 1.2
    elif how == "d<=0":
        dL[i, 0] = -dL[i, 0]
    elif how == "nan":
        dR[i, 1] = float("nan")
    elif how == "alpha":
        alpha[i] = -1.0
    elif how == "det":
        dL[i] *= 1.5
    return KroneckerSpectralPoint(alpha, SpectralPoint(BL, dL), SpectralPoint(BR, dR))


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("how", ["B", "d<=0", "nan", "alpha", "det"])
def test_check_point_names_the_corrupted_element(how, fast):
    man = ms.KroneckerSpectralSPD(A, B, F64)
    bman = ms.KroneckerSpectralSPD(A, B, F64, batch=K)
    X = stack(kron_elements(man, 13, "distinct"))
    assert bman.check_point(X, fast=fast) == (True, None)
    bad = corrupt(X, 2, how)
    ok, reason = bman.check_point(bad, fast=fast)
    assert not ok and "element 2" in reason, reason
    # The unbatched check of that element fails for the same reason, the others pass.
    elems = bad.unbind()
    ok2, reason2 = man.check_point(elems[2], fast=fast)
    assert not ok2 and reason.replace("element 2: ", "") == reason2
    assert all(man.check_point(e, fast=fast)[0] for j, e in enumerate(elems) if j != 2)
    with pytest.raises(ValueError, match="element 2"):
        bman.validate_point(bad, fast=fast)
    with pytest.raises(ValueError, match="element 2"):
        Gaussian(bman).precision_step(bad, GOP(torch.ones(K, A * B, dtype=F64)))


def test_spectral_check_point_names_the_corrupted_element():
    bman = ms.SpectralSPD(N, F64, batch=K)
    X = bman.random(gen(14))
    B = X.B.clone()
    B[3] *= 1.1
    for fast in (False, True):
        ok, reason = bman.check_point(SpectralPoint(B, X.d), fast=fast)
        assert not ok and reason.startswith("element 3: B is not orthogonal"), reason


# Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [0, -1, True, 2.0, "4"])
def test_bad_batch_argument(batch):
    with pytest.raises(ValueError, match="batch"):
        ms.KroneckerSpectralSPD(A, B, F64, batch=batch)
    with pytest.raises(ValueError, match="batch"):
        ms.SpectralSPD(N, F64, batch=batch)


def test_bad_shapes_raise():
    man = ms.KroneckerSpectralSPD(A, B, F64)
    bman = ms.KroneckerSpectralSPD(A, B, F64, batch=K)
    X = bman.random(gen(15))
    gs = Gaussian(bman)
    # Points of the wrong batch size or unbatched points.
    ok, reason = bman.check_point(man.random(gen(16)))
    assert not ok and "shape" in reason
    ok, reason = bman.check_point(ms.KroneckerSpectralSPD(A, B, F64, batch=K + 1).origin())
    assert not ok and f"expected ({K},)" in reason
    ok, reason = man.check_point(X)
    assert not ok and "shape" in reason
    # GOP gradients
    for shape in [(A * B,), (K + 1, A * B), (K, A * B + 1), (K, 2, A * B - 1), (1, K, 2, A * B)]:
        with pytest.raises(ValueError, match="grads"):
            gs.precision_step(X, GOP(torch.ones(shape, dtype=F64)))
    with pytest.raises(TypeError, match="dtype"):
        gs.precision_step(X, GOP(torch.ones(K, A * B, dtype=torch.float32)))
    # apply_power_matrix / apply_power
    for shape in [(A, B), (K + 1, A, B), (K, B, A), (2, K, A, B)]:
        with pytest.raises(ValueError, match="G: expected shape"):
            bman.apply_power_matrix(X, torch.ones(shape, dtype=F64), -0.5)
    with pytest.raises(ValueError, match="v: expected shape"):
        bman.apply_power(X, torch.ones(A * B, dtype=F64), -0.5)
    # retr with an unbatched tangent
    with pytest.raises(ValueError, match="tangent"):
        bman.retr(X, man.zero_tangent(man.origin()))
    # GOP curvature of the wrong layout
    with pytest.raises(ValueError, match="Ht.Z"):
        bman.precision_egrad_eigenbasis(
            X, man.gop_eigenbasis(man.origin(), torch.ones(A * B, 1, dtype=F64)), 1.0
        )


def test_dense_paths_raise_when_batched():
    bman = ms.KroneckerSpectralSPD(A, B, F64, batch=K)
    X = bman.origin()
    E = torch.eye(A * B, dtype=F64).expand(K, -1, -1)
    for call in (
        lambda: bman.to_matrix(X),
        lambda: bman.power(X, 0.5),
        lambda: bman.metric_matrix(X),
        lambda: bman.from_matrix(torch.eye(A * B, dtype=F64)),
        lambda: bman.from_kronecker(torch.eye(A, dtype=F64), torch.eye(B, dtype=F64)),
        lambda: bman.from_factors(
            1.0, ms.SpectralSPD(A, F64).origin(), ms.SpectralSPD(B, F64).origin()
        ),
        lambda: bman.natural_gradient(X, E),
        lambda: bman.local_gradient(X, E),
        lambda: Gaussian(bman).precision_step(X, DenseCurvature(E)),
        lambda: ms.SpectralSPD(N, F64, batch=K).from_matrix(torch.eye(N, dtype=F64)),
    ):
        with pytest.raises(NotImplementedError, match=f"batch={K}"):
            call()


def test_spectral_batched_dense_helpers():
    """The cheap dense helpers of a batched SpectralSPD act per element."""
    man = ms.SpectralSPD(N, F64)
    bman = ms.SpectralSPD(N, F64, batch=K)
    pts = spectral_elements(man, 17, "distinct")
    X = stack(pts)
    v = torch.randn(K, N, generator=gen(18), dtype=F64)
    for got, fn in (
        (bman.to_matrix(X), lambda p, i: man.to_matrix(p)),
        (bman.power(X, -0.5), lambda p, i: man.power(p, -0.5)),
        (bman.apply_power(X, v, -0.5), lambda p, i: man.apply_power(p, v[i], -0.5)),
        (
            bman.apply_power(X, v[..., None], 2.0),
            lambda p, i: man.apply_power(p, v[i, :, None], 2.0),
        ),
        (bman.metric_matrix(X), lambda p, i: man.metric_matrix(p)),
    ):
        assert rel_err(got, torch.stack([fn(p, i) for i, p in enumerate(pts)])) <= 1e-14
    E = torch.randn(K, N, N, generator=gen(19), dtype=F64)
    lg = bman.local_gradient(X, E + E.mT)
    assert (
        rel_err(lg, stack([man.local_gradient(p, E[i] + E[i].T) for i, p in enumerate(pts)]))
        <= 1e-14
    )
    assert isinstance(lg, SpectralTangent) and lg.M.shape == (K, N, N)
    with pytest.raises(ValueError, match="v: expected shape"):
        bman.apply_power(X, torch.ones(N, dtype=F64), 1.0)
