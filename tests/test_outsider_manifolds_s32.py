"""An outside tester's findings on the manifolds, the geoopt adapter and the solvers
(session 32). Each test failed on the code before its fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.geoopt import SpectralSPD as GeooptSpectral
from manifold_spectral.solvers import nes, spd

DT = torch.float64


def _point(n: int = 4, seed: int = 0) -> tuple[ms.SpectralSPD, ms.SpectralPoint]:
    man = ms.SpectralSPD(n, dtype=DT)
    return man, man.random(torch.Generator().manual_seed(seed))


def test_inner_refuses_a_batch_of_tangents_on_an_unbatched_manifold() -> None:
    # was: the three inner products summed into one scalar (116.38 = 12.61 + 53.52 + 50.24)
    man, x = _point()
    g = torch.Generator().manual_seed(1)
    u = ms.SpectralTangent(torch.randn(3, 4, generator=g, dtype=DT), torch.randn(3, 4, 4, dtype=DT))
    with pytest.raises(ValueError, match=r"u\.m: expected shape \(4,\)"):
        man.inner(x, u)
    with pytest.raises(TypeError, match="u: expected a SpectralTangent"):
        man.inner(x, torch.zeros(4))
    v = ms.SpectralTangent(torch.ones(4, dtype=DT), torch.full((4, 4), math.nan, dtype=DT))
    with pytest.raises(ValueError, match=r"v\.M: contains NaN"):
        man.inner(x, man.zero_tangent(x), v)
    with pytest.raises(ValueError, match="x: not a point"):
        man.inner(ms.SpectralPoint(x.B, -x.d), man.zero_tangent(x))
    d = ms.DiagonalSPD(4, dtype=DT)
    with pytest.raises(ValueError, match=r"u\.m"):
        d.inner(d.origin(), ms.DiagonalTangent(torch.ones(3, 4, dtype=DT)))
    # a valid pair still gives the metric's sum: m 1/2 each, so <1, 1> = n / 2 at any point
    one = ms.SpectralTangent(torch.ones(4, dtype=DT), torch.zeros(4, 4, dtype=DT))
    assert float(man.inner(x, one)) == pytest.approx(2.0)


def test_dist_checks_its_points() -> None:
    # was: torch's LinAlgError from an SVD (d < 0, NaN d) or a number for a non-orthogonal B
    man, x = _point()
    y = man.random(torch.Generator().manual_seed(5))
    for bad in (ms.SpectralPoint(x.B, -x.d), ms.SpectralPoint(2 * x.B, x.d)):
        with pytest.raises(ValueError, match="x: not a point"):
            man.dist(bad, y)
        with pytest.raises(ValueError, match="y: not a point"):
            man.dist(y, bad)
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    k = K.random(generator=torch.Generator().manual_seed(2))
    bad = ms.KroneckerSpectralPoint(-k.alpha, k.left, k.right)
    with pytest.raises(ValueError, match="x: not a point"):
        K.dist(bad, k)


def test_from_matrix_reads_a_list_of_floats_in_float64() -> None:
    # was: torch.as_tensor's default float32 (round trip 1.1e-8; a condition 1e9 refused)
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=DT))
    S = (Q * torch.tensor([1e-9, 1e-3, 1.0, 2.0], dtype=DT)) @ Q.T
    S = (S + S.T) / 2
    man = ms.SpectralSPD(4, dtype=DT)
    a, b = man.from_matrix(S.numpy()), man.from_matrix(S.tolist())
    assert torch.equal(man.to_matrix(a), man.to_matrix(b))


def test_subnormal_eigenvalues_are_not_a_point() -> None:
    # was: accepted, and power(x, -1) NaN (SpectralSPD) or Inf (DiagonalSPD)
    with pytest.raises(ValueError, match="smallest normal number"):
        ms.SpectralSPD(3, dtype=DT).from_matrix(1e-310 * torch.eye(3, dtype=DT))
    with pytest.raises(ValueError, match="smallest normal number"):
        ms.DiagonalSPD(3, dtype=DT).from_eigenvalues(torch.full((3,), 1e-310, dtype=DT))
    x = ms.SpectralSPD(3, dtype=DT).from_matrix(1e-300 * torch.eye(3, dtype=DT))
    assert torch.isfinite(ms.SpectralSPD(3, dtype=DT).power(x, -1.0)).all()


def test_nes_refuses_an_infinite_target() -> None:
    # was: no evaluation, stop {'ftarget': inf}, fun nan
    calls = []

    def f(x):
        calls.append(1)
        return float(np.sum(x**2))

    with pytest.raises(ValueError, match="target"):
        nes.minimize(f, np.ones(3), 1.0, target=math.inf, max_evals=100, seed=0)
    assert not calls
    r = nes.minimize(f, np.ones(3), 1.0, target=-math.inf, max_evals=60, seed=0)
    assert r.nfev == len(calls) > 0 and math.isfinite(r.fun)


def test_spd_problem_value_takes_a_numpy_result() -> None:
    # was: TypeError 'S: expected a torch.Tensor, got ndarray' for the documented check
    P = spd.LogDet(np.eye(4) + 0.1)
    r = spd.minimize(P, "spectral", lr=0.1, steps=20)
    assert isinstance(r.x, np.ndarray)
    assert float(P.value(r.x)) == pytest.approx(r.fun, rel=1e-12)


def test_geoopt_retr_refuses_a_nan_vector_and_a_foreign_batch() -> None:
    # was: a NaN point (and a NaN ManifoldParameter after one step); torch's size error
    sp = GeooptSpectral(4)
    x = sp.random(dtype=DT, generator=torch.Generator().manual_seed(0))
    u = sp.proju(x, torch.ones_like(x))
    u[0, 0] = math.nan
    for fn in (sp.retr, sp.expmap):
        with pytest.raises(ValueError, match="u: the step leaves the representable points"):
            fn(x, u)
    x3 = sp.random(3, 5, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    x2 = sp.random(2, 5, 4, dtype=DT, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="y: batch shape"):
        sp.dist(x3, x2)
    with pytest.raises(ValueError, match="u: batch shape"):
        sp.retr(x3, sp.proju(x2, torch.zeros_like(x2)))
    one = sp.random(1, 5, 4, dtype=DT, generator=torch.Generator().manual_seed(4))
    assert sp.dist(x3, one).shape == (3,)  # broadcasting batches still work
