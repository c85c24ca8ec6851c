"""Rejected calls and stopping rules of ``spd.minimize``.

Every test snapshots (clones) the caller's tensors, points and optimiser state before the bad
call and checks afterwards that nothing changed (NaN-aware, bitwise); helpers in
``_bad_input.py``, the ``manifold`` fixture in ``conftest.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _bad_input import F32, F64, KA, KB, N, _logdet_Q, kron, rejects

import manifold_spectral as ms

# spd.minimize: results and stopping rules (issue 14) ----------------------------------------


def test_spd_neumann_result_is_a_valid_warm_start():
    """Neumann steps leave ``||B^T B - I|| ~ 1e-7``; ``result.point`` must still pass the full
    check that ``x0`` gets, and ``x``, ``B``, ``d``, ``fun`` describe that point."""
    from manifold_spectral.solvers import spd

    problem = spd.LogDet(_logdet_Q())
    res = spd.minimize(problem, lr=0.2, steps=7, cayley="neumann")
    M = ms.SpectralSPD(problem.n, dtype=F64)
    assert M.check_point(res.point) == (True, None)
    torch.testing.assert_close(res.x, M.to_matrix(res.point), rtol=0, atol=0)
    assert res.B is res.point.B or torch.equal(res.B, res.point.B)
    assert res.fun == pytest.approx(float(problem.value(res.x)), rel=1e-12)
    again = spd.minimize(problem, lr=0.2, steps=3, x0=res.point, cayley="neumann")
    assert again.success and again.fun <= res.fun


def test_spd_tol_below_the_dtype_resolution_warns_and_is_raised():
    """float32 f carries ~eps |f*| = 2e-6 of rounding: tol = 1e-12 cannot be met honestly
    (before: 'converged' on a gap of -6e-7 reached by rounding)."""
    from manifold_spectral.solvers import spd

    problem = spd.LogDet(_logdet_Q(dtype=F32))
    with pytest.warns(UserWarning, match=r"tol=1e-12 is below the resolution"):
        res = spd.minimize(problem, lr=0.2, steps=300, tol=1e-12)
    assert res.success and "resolution" in res.message, res.message
    floor = float(torch.finfo(F32).eps) * abs(problem.f_star)
    assert res.gap < floor
    assert res.gap > -math.sqrt(float(torch.finfo(F32).eps)) * abs(problem.f_star)


def test_spd_negative_gap_beyond_rounding_is_not_convergence():
    """A wrong ``f_star`` (1 above the optimum) makes the gap -1: not 'converged'."""
    from manifold_spectral.solvers import spd

    Q = _logdet_Q()
    true = spd.LogDet(Q)
    problem = spd.Objective(
        lambda S: (S * Q).sum() - torch.logdet(S), Q.shape[0], f_star=true.f_star + 1.0
    )
    res = spd.minimize(problem, lr=0.2, steps=300, tol=1e-6)
    assert not res.success
    assert res.gap < -1e-3 and "f_star" in res.message, res.message
    # The true optimum converges as before.
    ok = spd.minimize(true, lr=0.2, steps=300, tol=1e-6)
    assert ok.success and ok.message.startswith("converged")


@pytest.mark.parametrize("method", ["spectral", "cholesky", "retraction"])
def test_spd_nan_gradient_ends_the_run_like_a_nan_value(method):
    """The gradient turning NaN at call 6 used to raise out of ``minimize`` (the partial run
    lost); now the run stops with the last good iterate, as for a NaN value."""
    from manifold_spectral.solvers import spd

    Q = _logdet_Q()
    calls = {"grad": 0}

    def fun(S):
        return (S * Q).sum() - torch.logdet(S)

    def grad(S):
        calls["grad"] += 1
        E = Q - torch.linalg.inv(S)
        return E * float("nan") if calls["grad"] >= 6 else E

    problem = spd.Objective(fun, Q.shape[0], grad=grad)
    res = spd.minimize(problem, method, lr=0.1, steps=20)
    assert not res.success and res.nit == 5
    assert "gradient" in res.message and "NaN" in res.message, res.message
    assert math.isfinite(res.fun) and res.fun == pytest.approx(float(fun(torch.as_tensor(res.x))))
    assert res.history["nit"][-1] == 5 and np.isfinite(res.history["fun"]).all()


def test_rgd_step_whose_natural_gradient_overflows_is_a_numerical_failure():
    """A valid point and a finite gradient whose natural gradient overflows (``2 d G`` or
    ``alpha tr(S E)`` beyond float64): a FloatingPointError of the step, not a ValueError
    about a ``tangent`` the caller never passed; the momentum state is kept."""
    K = kron()
    xK = K.origin()
    xK = K.from_factors(1e308, xK.left, xK.right)
    S = ms.SpectralSPD(N, dtype=F64)
    xS = ms.SpectralPoint(torch.eye(N, dtype=F64), torch.tensor([1e300, 1.0, 2.0], dtype=F64))
    for manifold, x, egrad in [
        (K, xK, torch.eye(KA * KB, dtype=F64)),
        (S, xS, 1e10 * torch.eye(N, dtype=F64)),
    ]:
        opt = ms.RGD(manifold, lr=0.1, momentum=0.5)
        opt.step(manifold.origin(), torch.eye(manifold.egrad_shape[-1], dtype=F64))
        rejects(
            lambda o=opt, x=x, e=egrad: o.step(x, e),
            FloatingPointError,
            "RGD.step",
            x,
            egrad,
            state=opt.state_dict,
        )
