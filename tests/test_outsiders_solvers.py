"""Front doors of the solvers and manifolds against a second outside tester's reports:
16-bit SPD problems (torch has no 16-bit ``eigh``, Cholesky or inverse, so the init-only and
reporting decompositions run in float32 and the geoopt baseline names its limit), and the
geoopt adapters' point check, which accepted an infinite eigenvalue or scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral import SpectralSPD
from manifold_spectral.solvers import spd

HALF = [torch.float16, torch.bfloat16]


def _q(n: int = 6) -> np.ndarray:
    A = np.random.default_rng(0).standard_normal((n, n))
    return A @ A.T / n + np.eye(n)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method", ["spectral", "cholesky"])
def test_a_16_bit_logdet_problem_is_solved_in_its_dtype(dtype, method):
    Q = _q()
    res = spd.minimize(spd.LogDet(torch.tensor(Q, dtype=dtype)), method, lr=0.05, steps=150)
    assert res.x.dtype == res.B.dtype == res.d.dtype == dtype
    x_star = np.linalg.inv(Q)
    err = np.abs(res.x.double().numpy() - x_star).max() / np.abs(x_star).max()
    assert err < 0.05  # bfloat16 carries 8 bits: a few of its ulps
    S = (res.B.double() * res.d.double()) @ res.B.double().T  # the factors are the matrix
    assert np.abs(S.numpy() - res.x.double().numpy()).max() < 0.05 * np.abs(x_star).max()


@pytest.mark.parametrize("dtype", HALF)
def test_the_geoopt_baseline_names_its_16_bit_limit(dtype):
    with pytest.raises(TypeError, match=r"^method='retraction'.*float32 or float64"):
        spd.minimize(spd.LogDet(torch.tensor(_q(), dtype=dtype)), "retraction", lr=0.05)


@pytest.mark.parametrize("dtype", HALF)
def test_split_ties_turns_a_16_bit_cluster_to_the_gradient_eigenvectors(dtype):
    G64 = np.array([[1.0, 2.0, 0.5], [2.0, 1.0, 1.0], [0.5, 1.0, 1.0]])  # equal diagonal: tied
    M = SpectralSPD(3, dtype=dtype)
    y, Gy = M.split_ties(M.origin(), torch.tensor(G64, dtype=dtype), 0.1)
    B, Gy = y.B.double().numpy(), Gy.double().numpy()
    assert np.abs(G64 @ B - B * np.diag(Gy)).max() < 0.05  # columns: eigenvectors of G
    assert np.abs(np.sort(np.diag(Gy)) - np.linalg.eigvalsh(G64)).max() < 0.05
    assert np.abs(Gy - np.diag(np.diag(Gy))).max() < 0.05


@pytest.mark.parametrize("dtype", HALF)
def test_logdet_value_of_a_16_bit_matrix(dtype):
    Q, S = _q(), np.diag([0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
    expected = np.sum(S * Q) - np.log(60.0)  # tr(SQ) - log det S
    value = spd.LogDet(torch.tensor(Q, dtype=dtype)).value(torch.tensor(S, dtype=dtype))
    assert value.dtype == dtype and abs(float(value) - expected) < 0.02 * abs(expected)


def test_geoopt_adapters_refuse_an_infinite_eigenvalue_or_scale():
    from manifold_spectral.geoopt import KroneckerSpectralSPD as GeoKron
    from manifold_spectral.geoopt import SpectralSPD as GeoSpectral

    spectral = GeoSpectral(3)
    x = spectral.random(dtype=torch.float64)
    x[-1, 1] = torch.inf  # d_1: what an overflowing retraction leaves
    assert spectral.check_point_on_manifold(x, explain=True) == (False, "x contains NaN or Inf")
    kron = GeoKron(2, 3)
    y = kron.random(dtype=torch.float64)
    y[0] = torch.inf  # alpha
    assert kron.check_point_on_manifold(y, explain=True) == (False, "x contains NaN or Inf")


@pytest.mark.parametrize("dtype", HALF)
def test_geoopt_adapters_accept_their_own_16_bit_points_and_no_others(dtype):
    from manifold_spectral.geoopt import KroneckerSpectralSPD as GeoKron
    from manifold_spectral.geoopt import SpectralSPD as GeoSpectral

    gen = torch.Generator().manual_seed(0)
    for man, made in [
        (GeoSpectral(30), lambda m: m.random(dtype=dtype, generator=gen)),
        (GeoSpectral(3), lambda m: m.from_matrix(torch.tensor(_q(3), dtype=dtype))),
        (GeoKron(9, 4), lambda m: m.random(dtype=dtype, generator=gen)),
    ]:
        x = made(man)
        assert man.check_point_on_manifold(x, explain=True) == (True, None)
        u = man.proju(x, torch.randn(x.shape, generator=gen).to(dtype))
        y = man.retr(x, 0.1 * u)
        assert man.check_point_on_manifold(y, explain=True) == (True, None)
    spectral = GeoSpectral(30)
    x = spectral.random(dtype=dtype, generator=gen)
    x[:-1, 0] *= 1.5  # a basis vector half as long again: no rounding error
    assert spectral.check_point_on_manifold(x, explain=True)[0] is False
    kron = GeoKron(9, 4)
    y = kron.random(dtype=dtype, generator=gen)
    alpha, BL, dL, BR, dR = kron.split(y)
    y = kron.join(alpha, BL, dL * 1.1, BR, dR)  # det S_L = 1.1^9
    assert kron.check_point_on_manifold(y, explain=True)[0] is False


def test_pack_and_unpack_name_a_wrong_shape():
    from manifold_spectral.geoopt import pack, unpack

    B, d = torch.eye(3), torch.ones(3)
    assert torch.equal(unpack(pack(B, d))[0], B) and torch.equal(unpack(pack(B, d))[1], d)
    for B_bad, d_bad in [(B, torch.ones(4)), (torch.ones(3, 4), d), (B, torch.ones(2, 3))]:
        with pytest.raises(ValueError, match=r"^pack: expected B of shape"):
            pack(B_bad, d_bad)
    for x in [torch.ones(3), torch.ones(3, 3), torch.ones(2, 3)]:
        with pytest.raises(ValueError, match=r"^unpack: expected shape"):
            unpack(x)


def test_scipy_style_calls_name_the_argument():
    """scipy's ``minimize(fun, x0)``: a start in ``method``'s place, a bare function as the
    problem of ``check_gradient`` (an unhashable-type error and an AttributeError before)."""
    problem = spd.LogDet(np.eye(3) * 2.0)
    with pytest.raises(TypeError, match=r"^method: expected one of .*got a ndarray .*x0="):
        spd.minimize(problem, np.eye(3), lr=0.1)
    for call in (spd.check_gradient, lambda p: spd.minimize(p, lr=0.1)):
        with pytest.raises(TypeError, match=r"^problem: .*got function \(spd.Objective"):
            call(lambda S: S.sum())


def test_pack_and_join_name_a_factor_that_is_no_tensor():
    from manifold_spectral.geoopt import KroneckerSpectralSPD as GeoKron
    from manifold_spectral.geoopt import pack

    with pytest.raises(TypeError, match=r"^pack: B: expected a torch tensor, got ndarray"):
        pack(np.eye(3), torch.ones(3))
    with pytest.raises(TypeError, match=r"^pack: d: expected a torch tensor, got list"):
        pack(torch.eye(3), [1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match=r"^join: dR: expected a torch tensor"):
        GeoKron.join(torch.ones(()), torch.eye(2), torch.ones(2), torch.eye(3), np.ones(3))


def test_join_refuses_factors_whose_sizes_only_add_up():
    """d_L and d_R swapped (sizes 3 and 2 at a = 2, b = 3) pack to the right length, which
    split then cut into other factors: refused, naming every shape."""
    from manifold_spectral.geoopt import KroneckerSpectralSPD as GeoKron

    kron = GeoKron(2, 3)
    x = kron.random(dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    alpha, BL, dL, BR, dR = kron.split(x)
    assert torch.equal(kron.join(alpha, BL, dL, BR, dR), x)
    with pytest.raises(ValueError, match=r"^join: .*got shapes \(\), \(2, 2\), \(3,\)"):
        kron.join(alpha, BL, dR, BR, dL)
    batch = torch.stack([x, x])
    with pytest.raises(ValueError, match=r"^join: "):
        kron.join(kron.split(batch)[0], BL, dL, BR, dR)  # alpha batched, the factors not
    assert torch.equal(kron.join(*kron.split(batch)), batch)


def test_random_names_a_seed_passed_as_its_generator():
    from manifold_spectral import DiagonalSPD, KroneckerSpectralSPD
    from manifold_spectral.geoopt import KroneckerSpectralSPD as GeoKron
    from manifold_spectral.geoopt import SpectralSPD as GeoSpectral

    draws = [
        lambda g: SpectralSPD(3).random(g),
        lambda g: KroneckerSpectralSPD(2, 3).random(g),
        lambda g: DiagonalSPD(3).random(g),
        lambda g: GeoSpectral(3).random(generator=g),
        lambda g: GeoKron(2, 3).random(generator=g),
    ]
    for draw in draws:
        with pytest.raises(TypeError, match=r"^generator: expected a torch.Generator"):
            draw(0)
        draw(torch.Generator().manual_seed(0))  # a generator, and None, still draw
        draw(None)


def test_gradient_check_summary_does_not_read_as_a_count_of_directions():
    # "(2 right, 1 wrong)" beside three slopes of 2.00 read as "one direction failed".
    Q = torch.tensor(_q(4))
    good = spd.check_gradient(spd.Objective(lambda S: (S * Q).sum(), 4, grad=lambda S: Q))
    bad = spd.check_gradient(spd.Objective(lambda S: (S * S).sum(), 4, grad=lambda S: S))
    assert good.ok and not bad.ok
    for check in (good, bad):
        assert "(slope 2 if right, 1 if wrong; pass >= " in repr(check)
        assert "2 right" not in repr(check)


def test_a_result_as_x0_points_to_result_point():
    """``x0=result`` (not ``result.point``) printed the result's whole summary in the error."""
    problem = spd.LogDet(np.eye(3) * 2.0)
    res = spd.minimize(problem, lr=0.1, steps=3)
    with pytest.raises(TypeError, match=r"^x0: .*got SPDResult \(an earlier run's state is "):
        spd.minimize(problem, lr=0.1, steps=3, x0=res)
    assert spd.minimize(problem, lr=0.1, steps=3, x0=res.point).nit == 3
