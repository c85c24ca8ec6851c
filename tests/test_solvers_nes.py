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


# Front doors ------------------------------------------------------------------------------


def test_ask_mirrored_population_and_default_popsize():
    es = NES(np.arange(5.0), 0.5, seed=0)
    assert es.popsize == 4 + math.floor(3 * math.log(5))  # 8, already even
    X = es.ask()
    assert X.shape == (es.popsize, 5) and X.dtype == np.float64
    h = es.popsize // 2
    np.testing.assert_allclose(X[:h] + X[h:], 2 * np.arange(5.0)[None, :].repeat(h, 0))
    assert NES(np.zeros(3), 1.0).popsize == 8  # 4 + 3 = 7, rounded up to even
    assert XNES(np.zeros(3), 1.0).popsize == 7  # no mirrored sampling


def test_torch_in_torch_out_and_vectorised_torch_function():
    x0 = torch.full((6,), 2.0, dtype=DT)
    seen = []

    def f(x):
        seen.append(type(x))
        return (x * x).sum(-1)

    res = nes.minimize(f, x0, 1.0, target=1e-6, seed=1, max_evals=5_000, vectorized=True)
    assert res.success and isinstance(res.x, torch.Tensor)
    assert all(t is torch.Tensor for t in seen)
    # Vectorised: one call per generation, the first generation split in two (row 0, rest).
    assert len(seen) == res.nit + 1


def _first_coordinate(x):  # per point only: on a (k, n) batch it returns row 0 (n values)
    return (np.asarray(x)[0] - 1.0) ** 2


def _first_coordinate_batch(X):  # the same function, vectorised
    return (np.asarray(X)[:, 0] - 1.0) ** 2


@pytest.mark.parametrize("n", [4, 10])  # popsize 10 at n = 10: the batch has n rows
def test_front_door_fun_is_f_of_x_per_point_and_vectorised(n):
    assert NES(np.zeros(n), 1.0).popsize == (10 if n == 10 else 8)
    kw = {"seed": 0, "max_evals": 600}
    per_point = nes.minimize(_first_coordinate, np.zeros(n), 1.0, **kw)  # the default
    assert per_point.fun == _first_coordinate(per_point.x) and per_point.fun < 1e-3
    batch = nes.minimize(_first_coordinate_batch, np.zeros(n), 1.0, vectorized=True, **kw)
    assert batch.fun == float(_first_coordinate_batch(batch.x[None, :])[0])
    np.testing.assert_array_equal(batch.x, per_point.x)  # same run, either contract
    # A wrong declaration is an error naming ``vectorized``, never a silent wrong answer.
    with pytest.raises(ValueError, match=rf"vectorized=True: f returned shape \({n},\)"):
        nes.minimize(_first_coordinate, np.zeros(n), 1.0, vectorized=True, **kw)
    with pytest.raises(TypeError, match=r"one point \(vectorized=False\), got shape \(3,\)"):
        nes.minimize(lambda x: np.asarray(x).sum(-1) + np.zeros(3), np.zeros(n), 1.0, **kw)
    # Every later generation checks the shape (popsize,) too.
    es = NES(np.zeros(n), 1.0, seed=0, max_evals=600)
    calls = []

    def drift(X):
        calls.append(1)
        values = _first_coordinate_batch(X)
        return values if len(calls) < 5 else values[:-1]

    with pytest.raises(ValueError, match="vectorized=True"):
        es.optimize(drift, vectorized=True)
    assert es.countiter == 3  # generations 1 (two calls), 2 and 3 were told; 4 was refused


def test_vectorized_none_is_deprecated_and_means_per_point():
    calls = []

    def f(x):
        calls.append(np.shape(x))
        return float(np.asarray(x) @ np.asarray(x))

    with pytest.warns(FutureWarning, match="vectorized=None is deprecated"):
        res = nes.minimize(f, np.ones(4), 1.0, seed=0, max_evals=400, vectorized=None)
    assert set(calls) == {(4,)} and len(calls) == res.nfev and res.fun == f(res.x)
    with pytest.raises(TypeError, match="vectorized: expected a bool"):
        nes.minimize(f, np.ones(4), 1.0, max_evals=400, vectorized=1)


def test_result_history_callback_and_injection():
    stopped = []

    def callback(es):
        stopped.append(es.countiter)
        return es.countiter >= 5

    res = nes.minimize(
        functions.sphere, np.ones(5), 1.0, seed=0, max_evals=10_000, callback=callback
    )
    assert res.nit == 5 and res.stop == {"callback": True} and not res.success
    h = res.history
    assert h["nfev"].shape == h["fun"].shape == h["time"].shape == (5,)
    assert list(h["nit"]) == [1, 2, 3, 4, 5] and res.method == "spectral NES"
    assert res["x"] is res.x and np.all(np.diff(h["time"]) >= 0)
    assert np.all(np.diff(h["fun"]) <= 0) and h["nfev"][-1] == res.nfev
    assert res.time > 0 and res.seed == 0
    # Injected (non-asked) points are accepted and whitened.
    es = NES(np.ones(5), 1.0, seed=1)
    X = es.ask()
    X[0] = 0.0
    es.tell(X, functions.sphere(X))
    assert es.fbest == 0.0


def test_same_seed_same_run():
    a = nes.minimize(functions.rosenbrock, np.zeros(5), 0.5, seed=7, max_evals=2_000)
    b = nes.minimize(functions.rosenbrock, np.zeros(5), 0.5, seed=7, max_evals=2_000)
    assert a.fun == b.fun and np.array_equal(a.x, b.x)


# Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x0", "sigma0", "exc", "match"),
    [
        (np.array([1.0, np.nan]), 1.0, ValueError, "x0: contains NaN or Inf"),
        (np.array([1.0, np.inf]), 1.0, ValueError, "x0: contains NaN or Inf"),
        (np.ones((2, 2)), 1.0, ValueError, "x0: expected a non-empty 1-d vector"),
        (np.array([]), 1.0, ValueError, "x0: expected a non-empty 1-d vector"),
        (np.array(["a", "b"]), 1.0, TypeError, "x0: expected a real vector"),
        (np.ones(3), 0.0, ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), -1.0, ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), np.nan, ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), [1.0, 0.0, 1.0], ValueError, "sigma0: expected finite values > 0"),
        (np.ones(3), [1.0, 1.0], ValueError, r"sigma0: expected a scalar or shape \(3,\)"),
        (np.ones(3), True, TypeError, "sigma0"),
    ],
)
def test_bad_x0_and_sigma0(x0, sigma0, exc, match):
    with pytest.raises(exc, match=match):
        NES(x0, sigma0)


def test_bad_tell_arguments():
    es = NES(np.zeros(4), 1.0, seed=0)
    X = es.ask()
    with pytest.raises(ValueError, match=r"X: expected shape \(8, 4\)"):
        es.tell(X[:-1], np.zeros(7))
    with pytest.raises(ValueError, match=r"fvals: expected shape \(8,\)"):
        es.tell(X, np.zeros(7))
    with pytest.raises(TypeError, match="fvals: expected real values"):
        es.tell(X, np.zeros(8, dtype=complex))
    Y = X.copy()
    Y[0, 0] = np.nan
    with pytest.raises(ValueError, match="X: contains NaN or Inf"):
        es.tell(Y, np.zeros(8))
    es.tell(X, functions.sphere(X))  # the rejected calls changed nothing
    assert es.countiter == 1


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"popsize": 7}, ValueError, "mirrored sampling needs an even popsize"),
        ({"popsize": 1}, ValueError, "popsize: expected an int >= 2"),
        ({"popsize": 4.0}, TypeError, "popsize"),
        ({"mirrored": "yes"}, TypeError, "mirrored: expected a bool"),
        ({"eta_B": 0.0}, ValueError, "eta_B: expected a finite number > 0"),
        ({"eta_mu": -1.0}, ValueError, "eta_mu"),
        ({"max_evals": 0}, ValueError, "max_evals"),
        ({"seed": -1}, ValueError, "seed"),
        ({"target": float("nan")}, ValueError, "target"),
        ({"dtype": torch.int64}, TypeError, "dtype"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        NES(np.zeros(4), 1.0, **kwargs)


def test_bad_function_and_termination():
    with pytest.raises(TypeError, match="f: expected a callable"):
        nes.minimize(3.0, np.zeros(3), 1.0)
    es = NES(np.zeros(3), 1.0, tolx=0, tolfun=0)
    with pytest.raises(ValueError, match="no termination criterion"):
        es.optimize(functions.sphere)
    with pytest.raises(TypeError, match="expected a real scalar"):
        nes.minimize(lambda x: "bad", np.zeros(3), 1.0, max_evals=100)


# Baselines --------------------------------------------------------------------------------


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
