"""Fisher-Rao distances of the spectral manifolds and their geoopt adapters, checked against
independent references: SciPy's generalised eigenvalues of the dense matrices, geoopt's own
affine-invariant distance, and the metric ``inner`` of a short retraction step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from manifold_spectral import KroneckerSpectralSPD as CoreKronecker
from manifold_spectral import SpectralSPD as CoreSpectralSPD

geoopt = pytest.importorskip("geoopt")
from manifold_spectral.geoopt import KroneckerSpectralSPD, SpectralSPD  # noqa: E402

F64 = torch.float64


def _reference(Sx: np.ndarray, Sy: np.ndarray) -> float:
    """sqrt(1/2 sum log^2 lambda) of the generalised problem Sy v = lambda Sx v (SciPy)."""
    lam = scipy.linalg.eigh(Sy, Sx, eigvals_only=True)
    return math.sqrt(0.5 * float(np.sum(np.log(lam) ** 2)))


def test_spectral_dist_matches_generalised_eigenvalues():
    man = CoreSpectralSPD(6, F64, batch=3)
    g = torch.Generator().manual_seed(0)
    x, y = man.random(g, 1.5), man.random(g, 1.5)
    got = man.dist(x, y)
    Sx, Sy = man.to_matrix(x).numpy(), man.to_matrix(y).numpy()
    want = [_reference(Sx[k], Sy[k]) for k in range(3)]
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(man.dist(y, x).numpy(), want, rtol=1e-10)


def test_kronecker_dist_matches_dense_generalised_eigenvalues():
    man = CoreKronecker(3, 4, F64, batch=2)
    g = torch.Generator().manual_seed(1)
    x, y = man.random(g, 1.0), man.random(g, 1.0)
    got = man.dist(x, y)
    one = CoreKronecker(3, 4, F64)
    dense = [
        (one.to_matrix(p).numpy(), one.to_matrix(q).numpy())
        for p, q in zip(x.unbind(), y.unbind(), strict=True)
    ]
    want = [_reference(Sx, Sy) for Sx, Sy in dense]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def test_adapter_dist_is_geoopt_affine_invariant_over_sqrt2():
    man = SpectralSPD(5)
    g = torch.Generator().manual_seed(2)
    x = man.random(2, 3, 6, 5, dtype=F64, generator=g).as_subclass(torch.Tensor)
    y = man.random(2, 3, 6, 5, dtype=F64, generator=g).as_subclass(torch.Tensor)
    ref = geoopt.SymmetricPositiveDefinite().dist(man.to_matrix(x), man.to_matrix(y))
    got = man.dist(x, y)
    assert got.shape == (2, 3) and man.dist(x, y, keepdim=True).shape == (2, 3, 1, 1)
    torch.testing.assert_close(got, ref / math.sqrt(2.0), rtol=1e-10, atol=0)


def test_adapter_kronecker_dist_matches_dense():
    man = KroneckerSpectralSPD(2, 3)
    g = torch.Generator().manual_seed(3)
    x = man.random(4, man.numel, dtype=F64, generator=g).as_subclass(torch.Tensor)
    y = man.random(4, man.numel, dtype=F64, generator=g).as_subclass(torch.Tensor)
    Sx, Sy = man.to_matrix(x).numpy(), man.to_matrix(y).numpy()
    want = [_reference(Sx[k], Sy[k]) for k in range(4)]
    np.testing.assert_allclose(man.dist(x, y).numpy(), want, rtol=1e-10)
    assert man.dist(x, y, keepdim=True).shape == (4, 1)


@pytest.mark.parametrize("kind", ["spectral", "kronecker"])
def test_dist_is_the_length_of_the_metric(kind):
    """dist(x, retr(x, t u)) / t -> sqrt(inner(x, u, u)) as t -> 0: the distance belongs to
    the same metric as ``inner`` (a factor 2 or sqrt 2 between them fails)."""
    man = SpectralSPD(4) if kind == "spectral" else KroneckerSpectralSPD(2, 3)
    shape = (5, 4) if kind == "spectral" else (man.numel,)
    g = torch.Generator().manual_seed(4)
    x = man.random(*shape, dtype=F64, generator=g).as_subclass(torch.Tensor)
    u = man.proju(x, torch.randn(*shape, dtype=F64, generator=g))
    t = 1e-6
    length = man.dist(x, man.retr(x, t * u)) / t
    torch.testing.assert_close(length, man.inner(x, u).sqrt(), rtol=1e-5, atol=0)


def test_dist_gradient_is_finite_at_ties_and_at_zero_distance():
    """A Frechet-mean loss sum dist^2 differentiates through tied eigenvalues (the origin) and
    at distance 0, and its gradient in d matches central differences."""
    man = SpectralSPD(4)
    g = torch.Generator().manual_seed(5)
    y = man.random(4 + 1, 4, dtype=F64, generator=g).as_subclass(torch.Tensor)
    origin = man.origin(5, 4, dtype=F64).as_subclass(torch.Tensor).clone()
    for x in (origin, y.clone()):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(man.dist(x, y).square(), x)
        assert torch.isfinite(grad).all()
    d = y[-1].clone().requires_grad_(True)

    def loss(dd: torch.Tensor) -> torch.Tensor:
        return man.dist(origin.detach(), torch.cat([y[:-1], dd[None]])).square()

    (grad,) = torch.autograd.grad(loss(d), d)
    h = 1e-6
    fd = [
        (loss(d.detach() + h * e) - loss(d.detach() - h * e)) / (2 * h)
        for e in torch.eye(4, dtype=F64)
    ]
    torch.testing.assert_close(grad, torch.stack(fd), rtol=1e-6, atol=1e-9)


def test_dist_refuses_foreign_points_by_name():
    man = CoreSpectralSPD(3, F64)
    x = man.random(torch.Generator().manual_seed(6))
    with pytest.raises((TypeError, ValueError), match="y"):
        man.dist(x, CoreSpectralSPD(3, torch.float32).random())
    padded = CoreKronecker(3, 3, F64, batch=2, sizes=[(3, 3), (2, 3)])
    with pytest.raises(NotImplementedError, match="dist"):
        padded.dist(padded.origin(), padded.origin())
    adapter = SpectralSPD(3)
    with pytest.raises((TypeError, ValueError), match="y"):
        adapter.dist(adapter.origin(4, 3, dtype=F64), adapter.origin(4, 3, dtype=torch.float32))
