"""SPD solvers: no decomposition on the spectral path, the result type, array types and
devices, bad inputs, the CLI reproduction, and two regressions (Jacobi angles near close
eigenvalues, a diverged baseline). Small seeded problems (d <= 12, float64)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from _spd import (
    DT,
    one_thread,  # noqa: F401  (autouse fixture: one torch thread here)
    small_problem,
)

from manifold_spectral import SpectralPoint, SpectralSPD
from manifold_spectral.solvers import OptimizeResult, spd
from manifold_spectral.solvers.spd import make_problems

# No decomposition on the spectral path ------------------------------------------------------

_FORBIDDEN = {
    torch.linalg: [
        "eigh",
        "eigvalsh",
        "eig",
        "eigvals",
        "svd",
        "svdvals",
        "qr",
        "cholesky",
        "cholesky_ex",
        "inv",
        "inv_ex",
        "pinv",
        "lu",
        "lu_factor",
        "lu_factor_ex",
        "det",
        "slogdet",
        "solve_triangular",
        "lstsq",
        "matrix_power",
        "matrix_exp",
        "solve",
        "solve_ex",
    ],
    torch: [
        "inverse",
        "logdet",
        "slogdet",
        "det",
        "cholesky",
        "cholesky_inverse",
        "cholesky_solve",
        "matrix_power",
        "matrix_exp",
        "svd",
        "qr",
        "pinverse",
        "lu",
    ],
}


@pytest.mark.parametrize("cayley", ["exact", "neumann"])
def test_spectral_path_calls_no_decomposition_or_inverse(monkeypatch, cayley):
    """After the problem is built, a whole ``minimize(method="spectral")`` (both problems,
    monitoring included) calls no decomposition or inverse. The only solve allowed is the exact
    Cayley map's ``solve(I - N, I + N)`` (``N`` skew, so ``I - N`` is always invertible); the
    Neumann map uses matrix products only."""
    Q, S0 = small_problem(8, seed=8)
    problems = [spd.LogDet(Q), spd.MetricNearness(Q, batch_size=4)]
    x0 = SpectralSPD(8, dtype=DT).from_matrix(S0)  # initialisation: the one eigh
    calls: list[str] = []

    def guard(module, name, original):
        def wrapped(*args, **kwargs):
            caller = inspect.stack()[1].function
            if (
                name == "solve"
                and cayley == "exact"
                and caller in ("cayley_exact", "cayley_exact_apply")
            ):
                calls.append("cayley solve")
                return original(*args, **kwargs)
            raise AssertionError(f"{module.__name__}.{name} called from {caller}")

        return wrapped

    for module, names in _FORBIDDEN.items():
        for name in names:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, guard(module, name, getattr(module, name)))
    for p in problems:
        res = spd.minimize(p, "spectral", lr=0.02, steps=20, x0=x0, cayley=cayley)
        assert res.success and np.isfinite(res.history["gap"]).all()
    monkeypatch.undo()
    assert (len(calls) == 40) if cayley == "exact" else not calls


# Result type, array types, devices ---------------------------------------------------------


def test_numpy_in_numpy_out_and_torch_in_torch_out():
    Q, S0 = small_problem(6, seed=9)
    r_np = spd.minimize(spd.LogDet(Q.numpy()), lr=0.05, steps=50, x0=S0.numpy())
    assert isinstance(r_np, OptimizeResult) and isinstance(r_np, spd.SPDResult)
    for value in (r_np.x, r_np.B, r_np.d):
        assert isinstance(value, np.ndarray) and value.dtype == np.float64
    r_t = spd.minimize(spd.LogDet(Q.float()), "spectral", lr=0.05, steps=50, x0=S0.numpy())
    for value in (r_t.x, r_t.B, r_t.d):
        assert isinstance(value, torch.Tensor) and value.dtype == torch.float32
    np.testing.assert_allclose(r_np.x, r_t.x.double().numpy(), atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    Q, S0 = small_problem(6)
    for method in spd.METHODS:
        res = spd.minimize(spd.LogDet(Q.cuda()), method, lr=0.05, steps=300, x0=S0, tol=1e-6)
        assert res.success and res.x.device.type == "cuda"


def test_result_fields_history_and_stopping_rules():
    Q, S0 = small_problem(6, seed=10)
    p = spd.LogDet(Q)
    res = spd.minimize(p, lr=0.05, steps=1000, x0=S0, tol=1e-8, record_every=7)
    assert res.success and "converged" in res.message and res.nit % 7 == 0
    h = res.history
    assert set(h) == {"nit", "fun", "time", "gap"}
    assert len({len(v) for v in h.values()}) == 1 and h["nit"][0] == 0 and h["nit"][-1] == res.nit
    assert np.all(np.diff(h["time"]) >= 0) and res.time >= h["time"][-1]
    assert res["fun"] == res.fun == h["fun"][-1] and res.gap == pytest.approx(res.fun - p.f_star)
    assert "x" in res.keys() and "history" in repr(res)
    assert isinstance(res.point, SpectralPoint)
    # No tol: runs every step; the last step is always recorded.
    full = spd.minimize(p, lr=0.05, steps=10, record_every=4)
    assert full.success and full.nit == 10 and list(full.history["nit"]) == [0, 4, 8, 10]
    # A tol not reached in time is a failure; a callback can stop the run.
    short = spd.minimize(p, lr=0.05, steps=3, tol=1e-12)
    assert not short.success and short.nit == 3
    stopped = spd.minimize(p, lr=0.05, steps=100, callback=lambda k, f: k >= 5)
    assert stopped.nit == 5 and "callback" in stopped.message
    # Without an optimal value there is no gap.
    obj = spd.minimize(
        spd.Objective(lambda S: (S * Q).sum() - torch.logdet(S), 6), lr=0.05, steps=5
    )
    assert obj.f_star is None and obj.gap is None and "gap" not in obj.history


def test_same_seed_same_batches_for_every_method():
    Q, S0 = small_problem(6, seed=11)
    p = spd.MetricNearness(Q, batch_size=3)
    a = spd.minimize(p, "spectral", lr=0.01, steps=20, x0=S0, seed=5)
    b = spd.minimize(p, "spectral", lr=0.01, steps=20, x0=S0, seed=5)
    c = spd.minimize(p, "spectral", lr=0.01, steps=20, x0=S0, seed=6)
    np.testing.assert_array_equal(a.history["fun"], b.history["fun"])
    assert not np.array_equal(a.history["fun"], c.history["fun"])
    assert not spd.MetricNearness(Q, batch_size=60).stochastic  # full batch: deterministic


# Bad inputs -------------------------------------------------------------------------------


def test_bad_problem_inputs_raise_clear_errors():
    Q, _ = small_problem(5, seed=12)
    with pytest.raises(ValueError, match="Q: not positive definite"):
        spd.LogDet(Q - 2.0 * torch.eye(5, dtype=DT))
    with pytest.raises(ValueError, match="Q: not symmetric"):
        spd.LogDet(Q + torch.triu(torch.ones(5, 5, dtype=DT), 1))
    with pytest.raises(ValueError, match="Q: expected a square"):
        spd.MetricNearness(Q[:, :4])
    with pytest.raises(ValueError, match="Q: contains NaN"):
        spd.LogDet(torch.full((5, 5), math.nan, dtype=DT))
    with pytest.raises(TypeError, match="Q:"):
        spd.LogDet("not a matrix")
    X = torch.randn(20, 5, dtype=DT)
    with pytest.raises(ValueError, match=r"X: expected shape \(N, 5\)"):
        spd.MetricNearness(Q, X[:, :4])
    X[3, 2] = math.nan
    with pytest.raises(ValueError, match="X: contains NaN"):
        spd.MetricNearness(Q, X)
    with pytest.raises(ValueError, match="batch_size"):
        spd.MetricNearness(Q, n_samples=10, batch_size=11)
    with pytest.raises(ValueError, match="batch_size"):
        spd.MetricNearness(Q, batch_size=0)
    with pytest.raises(ValueError, match="grad: required"):
        spd.Objective(lambda S: 0.0, 5, numpy=True)
    with pytest.raises(TypeError, match="fun: expected a callable"):
        spd.Objective(3.0, 5)
    obj = spd.Objective(lambda S: 1.0, 5)  # not a torch function of S: autograd cannot work
    with pytest.raises(TypeError, match="autograd needs a torch function"):
        spd.minimize(obj, lr=0.1, steps=2)


@pytest.mark.parametrize("lr", [0.0, -0.1, math.nan, math.inf])
def test_non_positive_lr_raises(lr):
    Q, _ = small_problem(5)
    for method in spd.METHODS:
        with pytest.raises(ValueError, match="lr"):
            spd.minimize(spd.LogDet(Q), method, lr=lr, steps=3)


def test_bad_minimize_arguments_raise_clear_errors():
    Q, S0 = small_problem(5)
    p = spd.LogDet(Q)
    with pytest.raises(TypeError, match="lr: required"):
        spd.minimize(p)
    with pytest.raises(ValueError, match="method"):
        spd.minimize(p, "newton", lr=0.1)
    with pytest.raises(ValueError, match=r"x0: expected shape \(5, 5\)"):
        spd.minimize(p, lr=0.1, x0=torch.eye(4, dtype=DT))
    with pytest.raises(ValueError, match="x0: not positive definite"):
        spd.minimize(p, lr=0.1, x0=-S0)
    with pytest.raises(ValueError, match="x0: not symmetric"):
        spd.minimize(p, lr=0.1, x0=S0 + torch.triu(torch.ones(5, 5, dtype=DT), 1))
    with pytest.raises(ValueError, match="steps"):
        spd.minimize(p, lr=0.1, steps=0)
    with pytest.raises(ValueError, match="cayley"):
        spd.minimize(p, lr=0.1, cayley="fast")
    with pytest.raises(ValueError, match="tol: needs a problem with a known optimal value"):
        spd.minimize(spd.Objective(lambda S: S.sum(), 5), lr=0.1, tol=1e-6)
    with pytest.raises(TypeError, match="problem"):
        spd.minimize(Q, lr=0.1)


# Reproduction and CLI ---------------------------------------------------------------------


def test_cli_reproduce_spd_end_to_end(tmp_path, capsys):
    from manifold_spectral import cli

    out = tmp_path / "res"
    argv = ["reproduce", "spd", "--d", "8", "--steps-nearness", "60", "--steps-logdet", "40"]
    argv += ["--batch-size", "4", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "d=8" in text and "wall time (spd)" in text
    assert text.count("iterations to f - f* < 1e-06") == 2
    for name in ("Spectral (ours)", "Retraction RGD (geoopt)", "Cholesky RGD"):
        assert name in text
    assert (out / "spd.png").read_bytes()[:4] == b"\x89PNG"
    assert "Log-det" in (out / "spd.txt").read_text()
    assert "spd" in cli.REPRODUCTIONS  # part of `reproduce all`


@pytest.mark.parametrize("bad", [["--lr-logdet", "0"], ["--lr-nearness", "-1"], ["--d", "0"]])
def test_cli_reproduce_spd_rejects_bad_arguments(bad, capsys):
    from manifold_spectral import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "spd", *bad])
    assert exc.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_jacobi_angles_save_iterations_near_close_eigenvalues():
    """The seeded d = 60 log-det problem (condition 10: close eigenvalue pairs): the Jacobi
    retraction needs fewer iterations to 1e-6 than the linearised chart step, and both end
    at the optimum (the same fixed point: the steps agree to first order)."""
    problems, S0 = make_problems(60, seed=0, batch_size=20)
    runs = {
        jac: spd.minimize(
            problems["logdet"],
            "spectral",
            0.05,
            400,
            x0=S0,
            tol=1e-6,
            jacobi=jac,
            second_order=False,
        )
        for jac in (False, True)
    }
    assert runs[False].success and runs[True].success
    assert runs[True].nit < runs[False].nit
    with pytest.raises(TypeError, match="jacobi"):
        spd.minimize(problems["logdet"], "spectral", 0.05, 2, jacobi="yes")


def test_a_diverged_baseline_is_never_converged():
    """``f = tr(SQ) - log det S`` is ``+inf`` outside the cone (it was ``-inf``, below any
    tolerance, so a dense baseline that left the cone could report convergence); at a large
    ``lr`` geoopt leaves the cone here and fails, while the spectral iterate cannot."""
    Q = torch.diag(torch.logspace(0, 2, 10, dtype=torch.float64))
    S0 = torch.diag(torch.logspace(1, 0, 10, dtype=torch.float64))
    p = spd.LogDet(Q)
    assert float(p.value(-torch.eye(10, dtype=torch.float64))) == math.inf
    bad = spd.minimize(p, "retraction", 0.3, 300, x0=S0, tol=1e-6)
    assert not bad.success and bad.nit < 10
    assert "non-finite" in bad.message
    good = spd.minimize(p, "spectral", 0.3, 300, x0=S0, tol=1e-6)
    assert good.success and good.gap < 1e-6
