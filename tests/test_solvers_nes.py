"""Spectral NES (paper Sec. 4.3): convergence, SPD invariants, first-order agreement with xNES,
non-finite values, input validation, the ask/tell and minimize front doors, and the baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from manifold_spectral import SpectralPoint, SpectralSPD
from manifold_spectral.solvers import functions, nes
from manifold_spectral.solvers.cholesky_nes import CholeskyNES, CholeskySearch
from manifold_spectral.solvers.nes import NES, REINFORCE, SpectralSearch, rank_utilities
from manifold_spectral.solvers.xnes import XNES, XNESSearch

DT = torch.float64


def rotation(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    return Q * torch.sign(torch.diagonal(R))


# Convergence ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_minimize_solves_sphere_10d(seed):
    x0 = np.full(10, 3.0)
    res = nes.minimize(functions.sphere, x0, 1.0, target=1e-8, seed=seed, max_evals=20_000)
    assert res.success and res.fun < 1e-8, res.message
    assert isinstance(res.x, np.ndarray) and res.x.shape == (10,)
    assert res.nfev <= 2_000  # ~900 evaluations; CMA-ES needs ~1300
    assert res.stop == {"ftarget": 1e-8}


def test_ask_tell_solves_rotated_ellipsoid_10d():
    f = functions.RotatedEllipsoid(10, cond=1e6, seed=3)
    es = NES(np.ones(10), 1.0, seed=4, target=1e-8, max_evals=40_000)
    while not es.stop():
        X = es.ask()
        es.tell(X, f(X))
    res = es.result
    assert res.success and res.fun < 1e-8, res.message
    assert float(f(res.x)) == pytest.approx(res.fun)
    # The learned precision recovers the Hessian up to scale: S ~ c R^T Diag(h) R.
    S = es.dist.manifold.to_matrix(es.dist.point)
    H = torch.as_tensor(f.R.T @ np.diag(1e6 ** (np.arange(10) / 9)) @ f.R)
    cosine = float((S * H).sum() / (S.norm() * H.norm()))
    assert cosine > 0.95


@pytest.mark.parametrize(
    "options", [{"dtype": torch.float32}, {"cayley": "neumann"}], ids=["float32", "neumann"]
)
def test_float32_and_neumann_cayley(options):
    f = functions.RotatedEllipsoid(8, cond=1e4)
    res = nes.minimize(f, np.ones(8), 1.0, target=1e-6, seed=0, max_evals=20_000, **options)
    assert res.success, res.message


def test_covariance_stays_spd_and_orthogonal():
    f = functions.RotatedEllipsoid(8, cond=1e4, seed=1)
    es = NES(np.full(8, 2.0), 0.5, seed=2, max_evals=6_000)
    M = es.dist.manifold
    while not es.stop():
        X = es.ask()
        es.tell(X, f(X))
        ok, reason = M.check_point(es.dist.point)  # full check: B^T B = I, d > 0, finite
        assert ok, reason
        cov = es.covariance()
        assert torch.allclose(cov, cov.T)
        assert float(torch.linalg.eigvalsh(cov).min()) > 0
        # The covariance is S^-1 read from the factors.
        eye = torch.eye(8, dtype=DT)
        assert torch.allclose(cov @ M.to_matrix(es.dist.point), eye, atol=1e-8)
    assert es.fbest < 1e-3


def test_no_decomposition_inverse_or_expm_per_generation(monkeypatch):
    es = NES(np.ones(12), 1.0, seed=0)
    f = functions.RotatedEllipsoid(12, cond=1e3)

    def forbidden(*args, **kwargs):
        raise AssertionError("a decomposition, inverse or matrix exponential was called")

    for name in ("eigh", "eig", "eigvalsh", "inv", "matrix_exp", "svd", "qr", "cholesky"):
        monkeypatch.setattr(torch.linalg, name, forbidden)
    monkeypatch.setattr(torch, "matrix_exp", forbidden)
    # The fast path (nes_step, CPU float64) runs in numpy / LAPACK: forbid those too.
    assert es.dist.fast
    for name in ("eigh", "eig", "eigvalsh", "eigvals", "inv", "pinv", "svd", "qr", "cholesky"):
        monkeypatch.setattr(np.linalg, name, forbidden)
    for name in ("eigh", "eig", "inv", "pinv", "svd", "qr", "cholesky", "expm", "schur"):
        monkeypatch.setattr(scipy.linalg, name, forbidden)
    for _ in range(30):
        X = es.ask()
        es.tell(X, f(X))
    assert es.countiter == 30


# REINFORCE curvature and the first-order agreement with xNES -----------------------------


def test_reinforce_eigenbasis_matches_dense_formula():
    n, k = 5, 7
    g = torch.Generator().manual_seed(0)
    M = SpectralSPD(n, dtype=DT)
    x = SpectralPoint(rotation(n, 1), torch.tensor([0.5, 1.0, 2.0, 3.0, 7.0], dtype=DT))
    deltas = torch.randn(k, n, generator=g, dtype=DT)
    values = torch.randn(k, generator=g, dtype=DT)
    S = M.to_matrix(x)
    H = sum(v * (S @ torch.outer(dl, dl) @ S - S) for v, dl in zip(values, deltas, strict=True))
    curv = REINFORCE(deltas, values)
    torch.testing.assert_close(curv.eigenbasis(M, x), x.B.T @ H @ x.B, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(curv.gradient(M, x), S @ (values @ deltas))
    # scale_weight r: the trace part in whitened coordinates is multiplied by r.
    r = 0.3
    Ht = REINFORCE(deltas, values, scale_weight=r).eigenbasis(M, x)
    K = (Ht / x.d.sqrt()[:, None]) / x.d.sqrt()[None, :]  # Diag(d^-1/2) Ht Diag(d^-1/2)
    K0 = (curv.eigenbasis(M, x) / x.d.sqrt()[:, None]) / x.d.sqrt()[None, :]
    t0 = torch.trace(K0) / n
    eye = torch.eye(n, dtype=DT)
    torch.testing.assert_close(K, K0 - t0 * eye + r * t0 * eye)


def _one_generation(search, z, u, mu, eta_sigma, eta_B):
    delta = search.transform(z)
    return search.update(mu, z, delta, u, 1.0, eta_sigma, eta_B), delta


@pytest.mark.parametrize("other", ["xnes", "cholesky"])
def test_first_order_agreement_with_xnes_on_one_generation(other):
    """Same samples and utilities; beta1 = eta_mu, beta2 = eta_B, scale weight eta_sigma/eta_B.

    The precisions after one generation differ by O(t^2) when both rates scale with t
    (error ratio ~4 when t halves); the means agree exactly.
    """
    n, lam = 6, 10
    g = torch.Generator().manual_seed(0)
    B = rotation(n, 5)
    d = torch.tensor([0.3, 0.9, 1.7, 4.0, 11.0, 25.0], dtype=DT)
    z = torch.randn(lam, n, generator=g, dtype=DT)
    u = torch.as_tensor(rank_utilities(torch.randn(lam, generator=g).numpy()), dtype=DT)
    mu = torch.randn(n, generator=g, dtype=DT)
    errors = []
    for t in (0.08, 0.04, 0.02, 0.01):
        ours = SpectralSearch(torch.ones(n, dtype=DT))
        ours.point = SpectralPoint(B.clone(), d.clone())
        A = B * d.rsqrt()  # Sigma = A A^T = S^-1
        if other == "xnes":
            ref = XNESSearch.from_factor(A)
        else:  # a lower-triangular factor of the same covariance
            ref = CholeskySearch(torch.ones(n, dtype=DT))
            ref.K = torch.linalg.cholesky(A @ A.T)
            z_ref = torch.linalg.solve_triangular(ref.K, (A @ z.T), upper=False).T
        S0 = ours.manifold.to_matrix(ours.point)
        m1, d1 = _one_generation(ours, z, u, mu, 0.7 * t, 0.3 * t)
        if other == "xnes":
            m2, d2 = _one_generation(ref, z, u, mu, 0.7 * t, 0.3 * t)
        else:
            m2, d2 = _one_generation(ref, z_ref, u, mu, 0.7 * t, 0.3 * t)
        torch.testing.assert_close(d1, d2)  # the same samples
        torch.testing.assert_close(m1, m2)  # the same mean step
        S1 = ours.manifold.to_matrix(ours.point)
        S2 = torch.linalg.inv(ref.covariance())
        change = float((S1 - S0).norm())
        assert change > 1e-3 * t * float(S0.norm())  # the step is first order in t
        errors.append(float((S1 - S2).norm()) / float(S0.norm()))
    ratios = [a / b for a, b in zip(errors, errors[1:], strict=False)]
    assert all(3.5 < r < 4.5 for r in ratios), (errors, ratios)


# Non-finite values ------------------------------------------------------------------------


def test_rank_utilities_rank_nonfinite_worst_and_average_ties():
    u = rank_utilities([3.0, np.nan, 1.0, np.inf, -np.inf, 2.0])
    assert u.sum() == pytest.approx(0.0, abs=1e-12)
    assert u[2] == u.max()  # the best finite value
    assert u[1] == u[3] == u[4] == u.min()  # every non-finite value shares the worst ranks
    assert u[2] > u[5] > u[0] >= u[1]
    assert np.all(rank_utilities([np.nan] * 6) == 0)
    assert np.all(rank_utilities([1.0] * 4) == 0)


def test_nan_and_inf_values_never_enter_the_state():
    es = NES(np.zeros(4), 1.0, seed=0)
    X = es.ask()
    fvals = functions.sphere(X)
    fvals[0], fvals[3], fvals[5] = np.nan, np.inf, -np.inf
    es.tell(X, fvals)
    finite = np.isfinite(fvals)
    assert es.fbest == pytest.approx(fvals[finite].min())
    assert np.isfinite(es.result.history["fun"]).all()
    assert torch.isfinite(es.mean).all() and es.dist.point.is_finite()
    # A generation without a single finite value leaves the distribution where it was.
    mean, point = es.mean.clone(), es.dist.point.clone()
    X = es.ask()
    es.tell(X, np.full(es.popsize, np.nan))
    assert torch.equal(es.mean, mean)
    assert torch.equal(es.dist.point.B, point.B) and torch.equal(es.dist.point.d, point.d)
    assert es.countevals == 2 * es.popsize


def test_minimize_with_a_nan_region_still_converges():
    def f(x):
        x = np.asarray(x)
        return np.nan if x[0] > 2.0 else float(x @ x)

    res = nes.minimize(f, np.full(6, 1.0), 1.0, target=1e-8, seed=0, max_evals=10_000)
    assert res.success
    assert res.x[0] <= 2.0


# Baselines and test functions (the front doors: test_nes_front_door.py) --------------------


def test_baselines_solve_a_sphere_and_xnes_defaults():
    for cls in (CholeskyNES, XNES):
        kwargs = {} if cls is CholeskyNES else {"adaptive_rates": True, "mirrored": True}
        es = cls(np.full(6, 2.0), 1.0, seed=0, target=1e-8, max_evals=20_000, **kwargs)
        res = es.optimize(functions.sphere)
        assert res.success, (cls.__name__, res.message)
    es = XNES(np.zeros(10), 1.0, seed=0)
    X = es.ask()
    es.tell(X, functions.sphere(X))
    rate = 0.6 * (3 + math.log(10)) / (10 * math.sqrt(10))
    assert es.rates == (1.0, rate, rate)
    assert not (es.mirrored or es.distance_weights or es.adaptive_rates or es.rank_one)


def test_functions_are_vectorised_and_zero_at_the_optimum():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 7))
    for name, tf in functions.FUNCTIONS.items():
        f = tf.make(7)
        batch = f(X)
        assert batch.shape == (4,), name
        np.testing.assert_allclose(batch, [f(x) for x in X], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(f(torch.as_tensor(X)).numpy(), batch, rtol=1e-12, err_msg=name)
        x_opt = np.ones(7) if name == "rosenbrock" else np.zeros(7)
        assert abs(float(f(x_opt))) < 1e-12, name


@pytest.mark.parametrize("name", ["rosenbrock", "bohachevsky", "schaffer"])
def test_pair_functions_refuse_one_coordinate_and_scalars(name):
    """Sums over consecutive pairs are empty at n = 1: ``rosenbrock([5.0])`` returned 0, the
    global minimum, at a point 4 away from it; a scalar failed on an index inside."""
    f = functions.FUNCTIONS[name].make(2)
    assert float(f(np.array([5.0, 3.0]))) > 0
    for bad in (np.array([5.0]), np.full((3, 1), 5.0), torch.tensor([5.0]), 5.0):
        with pytest.raises(ValueError, match=r"^x: expected a point \(n,\) or a batch .* n >= 2"):
            f(bad)
    with pytest.raises(ValueError, match=r"^x: .*n >= 1, got shape \(\)"):
        functions.sphere(5.0)
