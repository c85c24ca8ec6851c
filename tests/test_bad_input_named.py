"""Rejected calls that used to raise torch's raw errors, and further probes (retr, powers,
eigenbasis paths, spd inputs).

Every test snapshots (clones) the caller's tensors, points and optimiser state before the bad
call and checks afterwards that nothing changed (NaN-aware, bitwise); helpers in
``_bad_input.py``, the ``manifold`` fixture in ``conftest.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _bad_input import (
    BAD_MATRICES,
    F32,
    F64,
    KA,
    KB,
    N,
    _logdet_Q,
    assert_same,
    good_egrad,
    kron,
    point,
    rejects,
    rgd_with_momentum,
)

import manifold_spectral as ms

# Named errors instead of torch's RuntimeError (issue 14) ------------------------------------


def _eigen_gradient(manifold: ms.SpectralManifold, x: Any) -> Any:
    """A valid ``G`` for ``RGD.step_eigenbasis``."""
    return manifold.precision_egrad_eigenbasis(
        x, ms.GOP(torch.ones(manifold.egrad_shape[-1], dtype=F64)).eigenbasis(manifold, x), 1.0
    )


def test_step_eigenbasis_rejects_misshapen_or_foreign_G(manifold):
    opt, x = rgd_with_momentum(manifold)
    G = _eigen_gradient(manifold, x)
    opt.step_eigenbasis(x, G)  # the valid call works
    if isinstance(G, torch.Tensor):
        nan = G.clone()
        nan.view(-1)[0] = float("nan")
        cases = [
            (torch.ones(N + 1, N + 1, dtype=F64), ValueError),
            (torch.ones(2, *G.shape, dtype=F64), ValueError),
            (G.float(), TypeError),
            (G.tolist(), TypeError),
            (nan, ValueError),
        ]
    else:
        cases = [
            (torch.ones(KA * KB, KA * KB, dtype=F64), TypeError),
            (G.to(F32), TypeError),
            (type(G)(G.t, G.G_R, G.G_L), ValueError),  # swapped factors
            (type(G)(G.t.reshape(1), G.G_L, G.G_R), ValueError),
        ]
    for bad, exc in cases:
        rejects(lambda b=bad: opt.step_eigenbasis(x, b), exc, "G", x, bad, state=opt.state_dict)


def test_kronecker_step_eigenbasis_rejects_misshapen_G():
    K = kron()
    opt = ms.RGD(K, lr=0.05, momentum=0.9)
    x = opt.step(point(K), torch.eye(KA * KB, dtype=F64))
    G = _eigen_gradient(K, x)
    opt.step_eigenbasis(x, G)
    for bad, exc in [
        (type(G)(G.t, G.G_R, G.G_L), ValueError),
        (G.to(F32), TypeError),
        (G.G_L, TypeError),
        (type(G)(G.t, G.G_L, torch.full_like(G.G_R, float("nan"))), ValueError),
    ]:
        rejects(lambda b=bad: opt.step_eigenbasis(x, b), exc, "G", x, bad, state=opt.state_dict)


def test_kronecker_apply_power_matrix_rejects_float32_or_list_G():
    K = kron()
    x = point(K)
    for G, exc in [
        (torch.ones(KA, KB, dtype=F32), TypeError),
        ([[1.0] * KB] * KA, TypeError),
        (torch.ones(KB, KA, dtype=F64), ValueError),
    ]:
        rejects(lambda g=G: K.apply_power_matrix(x, g, -0.5), exc, "G", x, G)


def test_point_of_another_dtype_is_rejected_by_name(manifold):
    """A float32 point given to a float64 manifold: TypeError naming ``x``, not torch's
    'expected m1 and m2 to have the same dtype'."""
    x32 = point(manifold).to(F32)
    egrad, v = good_egrad(manifold), torch.ones(N, dtype=F64)
    V = torch.ones(manifold.egrad_shape[-1], 2, dtype=F64)
    rejects(lambda: manifold.natural_gradient(x32, egrad), TypeError, "x", x32, egrad)
    rejects(lambda: manifold.local_gradient(x32, egrad), TypeError, "x", x32, egrad)
    rejects(lambda: manifold.apply_power(x32, v, -0.5), TypeError, "x", x32, v)
    rejects(lambda: manifold.gop_eigenbasis(x32, V), TypeError, "x", x32, V)
    rejects(lambda: manifold.logdet(x32), TypeError, "x", x32)  # returned float32 before
    rejects(lambda: manifold.to_matrix(x32), TypeError, "x", x32)
    other = ms.DiagonalPoint(v) if not isinstance(x32, ms.DiagonalPoint) else x32.to(F64).d
    rejects(lambda: manifold.natural_gradient(other, egrad), TypeError, "x", egrad)


@pytest.mark.parametrize(
    "make, shapes",
    [
        (lambda: ms.SpectralSPD(N, dtype=F64), [(4 * N, 1), (N,), (N + 1, 2), (1, N, 2), (N, 0)]),
        (lambda: ms.DiagonalSPD(N, dtype=F64), [(4 * N, 1), (N,), (N + 1, 2), (1, N, 2)]),
        # (12, 1) reshaped silently into two 2 x 3 samples before
        (lambda: ms.KroneckerSpectralSPD(KA, KB, dtype=F64), [(12, 1), (6,), (1, 6, 1), (3, 2)]),
        (
            lambda: ms.SpectralSPD(N, dtype=F64, batch=4),
            [(4, N + 1, 1), (3, N, 1), (4, N), (N, 1)],
        ),
        (
            lambda: ms.KroneckerSpectralSPD(KA, KB, dtype=F64, batch=4),
            [(4, 7, 1), (3, 6, 1), (4, 6), (6, 1), (4, 12, 1)],
        ),
    ],
    ids=["spectral", "diagonal", "kronecker", "spectral_batched", "kronecker_batched"],
)
def test_gop_eigenbasis_rejects_wrong_V_shapes(make, shapes):
    manifold = make()
    x = point(manifold)
    for shape in shapes:
        V = torch.ones(shape, dtype=F64)
        rejects(lambda v=V: manifold.gop_eigenbasis(x, v), ValueError, "V", x, V)
    V = torch.ones(*manifold.egrad_shape[:-1], 2, dtype=F32)
    if manifold.batch is None:
        V = torch.ones(manifold.egrad_shape[-1], 2, dtype=F32)
    rejects(lambda: manifold.gop_eigenbasis(x, V), TypeError, "V", x, V)


# Found probing further: retr, powers, eigenbasis paths, spd inputs ----------------------------


def _foreign_tangent(manifold: ms.SpectralManifold) -> Any:
    if isinstance(manifold, ms.DiagonalSPD):
        return ms.SpectralTangent(torch.zeros(N, dtype=F64), torch.zeros(N, N, dtype=F64))
    return ms.DiagonalTangent(torch.zeros(N, dtype=F64))


def test_retr_rejects_foreign_point_or_tangent(manifold):
    """Before: torch's 'linalg.solve: Expected A and B to have the same dtype' (or a silent
    float64 result for DiagonalSPD) for a float32 point, AttributeError for other types."""
    x = point(manifold)
    t = manifold.zero_tangent(x)
    x32 = x.to(F32)
    rejects(lambda: manifold.retr(x32, t, 0.1), TypeError, "x", x32, t)
    rejects(lambda: manifold.retr("x", t, 0.1), TypeError, "x", t)
    foreign = _foreign_tangent(manifold)
    rejects(lambda: manifold.retr(x, foreign, 0.1), TypeError, "tangent", x, foreign)


def test_diagonal_retr_checks_the_cayley_it_ignores():
    manifold = ms.DiagonalSPD(N, dtype=F64)
    x = point(manifold)
    t = manifold.zero_tangent(x)
    rejects(lambda: manifold.retr(x, t, 0.1, cayley="pade"), ValueError, "cayley", x, t)


@pytest.mark.parametrize(
    "r, exc",
    [(float("nan"), ValueError), (float("inf"), ValueError), ("0.5", TypeError), (None, TypeError)],
    ids=repr,
)
def test_power_rejects_a_bad_exponent(manifold, r, exc):
    """Before: a NaN matrix for ``r = nan``, torch's 'pow() received an invalid combination
    of arguments' for a string."""
    x = point(manifold)
    v = torch.ones(N, dtype=F64)
    rejects(lambda: manifold.power(x, r), exc, "r", x)
    rejects(lambda: manifold.apply_power(x, v, r), exc, "r", x, v)


def test_eigenbasis_paths_reject_wrong_shapes(manifold):
    """``rotate``, ``precision_egrad_eigenbasis`` and ``natural_gradient_eigenbasis`` (public,
    used by the Gaussian layer): named errors, not torch's size mismatch."""
    x = point(manifold)
    E = torch.ones(N + 1, N + 1, dtype=F64)
    rejects(
        lambda: manifold.rotate(x, E),
        ValueError,
        "E" if not isinstance(manifold, ms.SpectralSPD) else "egrad",
        x,
        E,
    )
    if not isinstance(manifold, ms.KroneckerSpectralSPD):  # its Ht is a typed container
        rejects(lambda: manifold.precision_egrad_eigenbasis(x, E, 1.0), ValueError, "Ht", x, E)
    exc = TypeError if isinstance(manifold, ms.KroneckerSpectralSPD) else ValueError
    name = "g" if isinstance(manifold, ms.KroneckerSpectralSPD) else "G"
    rejects(lambda: manifold.natural_gradient_eigenbasis(x, E), exc, name, x, E)
    x32 = x.to(F32)
    G = _eigen_gradient(manifold, x)
    rejects(lambda: manifold.natural_gradient_eigenbasis(x32, G), TypeError, "x", x32, G)


@pytest.mark.parametrize("method", ["spectral", "cholesky", "retraction"])
def test_spd_x0_spectral_point_is_checked_for_every_method(method):
    """The baselines turned any ``SpectralPoint`` into ``B Diag(d) B^T`` unchecked (a
    non-orthogonal ``B`` silently gave another matrix; float32 factors were accepted)."""
    from manifold_spectral.solvers import spd

    problem = spd.LogDet(_logdet_Q(5))
    x = ms.SpectralSPD(5, dtype=F64).random(torch.Generator().manual_seed(0))
    cases = [
        (ms.SpectralPoint(1.5 * x.B, x.d), ValueError),
        (x.to(F32), TypeError),
        (ms.SpectralPoint(x.B, -x.d), ValueError),
    ]
    if method != "spectral":  # which takes the point itself, valid; the others its product,
        # which rounds to an indefinite matrix (their errors named "S" or "S0" before)
        cases.append((ms.SpectralPoint(x.B, torch.logspace(-12, 12, 5, dtype=F64)), ValueError))
    for x0, exc in cases:
        rejects(lambda x0=x0: spd.minimize(problem, method, lr=0.1, steps=2, x0=x0), exc, "x0", x0)


def test_spd_problem_factors_and_f_star_are_checked():
    from manifold_spectral.solvers import spd

    Q = _logdet_Q(5)
    A, w, A5 = torch.eye(4, dtype=F64), torch.ones(4, dtype=F64), torch.eye(5, dtype=F32)
    for problem in (spd.LogDet(Q), spd.MetricNearness(Q)):
        rejects(lambda p=problem: p.congruence_grad(A, w), ValueError, "A", A, w)
        rejects(lambda p=problem: p.congruence_grad(A5, w), TypeError, "A", A5, w)
    for f_star, exc in [
        ("a", TypeError),
        (torch.ones(2), ValueError),
        (True, TypeError),
        (float("nan"), ValueError),
    ]:
        rejects(lambda f=f_star: spd.Objective(lambda S: S.trace(), 3, f_star=f), exc, "f_star")
    assert spd.Objective(lambda S: S.trace(), 3, f_star=torch.tensor(1.5)).f_star == 1.5


@pytest.mark.parametrize("device", ["foo", "cuda", "cuda:7"])
def test_bad_device_is_rejected_by_name(device):
    """Before: torch's RuntimeError for 'foo' and 'Torch not compiled with CUDA enabled'
    (an AssertionError) on a machine without CUDA."""
    if device.startswith("cuda") and torch.cuda.is_available():
        if device == "cuda" or torch.cuda.device_count() > 7:
            pytest.skip("this machine has that CUDA device")
    from manifold_spectral.solvers import spd

    rejects(lambda: ms.SpectralSPD(N, device=device), ValueError, "device")
    rejects(lambda: ms.DiagonalSPD(N, device=device), ValueError, "device")
    rejects(lambda: ms.KroneckerSpectralSPD(KA, KB, device=device), ValueError, "device")
    rejects(lambda: spd.Objective(lambda S: S.trace(), N, device=device), ValueError, "device")


def test_eigenbasis_inputs_on_meta_device_are_rejected_by_name(manifold):
    x = point(manifold)
    n = manifold.egrad_shape[-1]
    V = torch.ones(n, 2, dtype=F64, device="meta")
    rejects(lambda: manifold.gop_eigenbasis(x, V), ValueError, "V", x)
    E = torch.ones(manifold.egrad_shape, dtype=F64, device="meta")
    name = "egrad" if isinstance(manifold, ms.SpectralSPD) else "E"
    rejects(lambda: manifold.rotate(x, E), ValueError, name, x)
    G = _eigen_gradient(manifold, x).to("meta")
    name = "g" if isinstance(manifold, ms.KroneckerSpectralSPD) else "G"
    rejects(lambda: manifold.natural_gradient_eigenbasis(x, G), ValueError, name, x)
    x_meta = x.to("meta")
    rejects(lambda: manifold.natural_gradient_eigenbasis(x_meta, G), ValueError, "x")
    rejects(lambda: manifold.apply_power(x_meta, torch.ones(n, dtype=F64), 0.5), ValueError, "x")


@pytest.mark.parametrize("method", ["spectral", "cholesky", "retraction"])
@pytest.mark.parametrize("record_every", [1, 3])
def test_spd_nan_value_returns_the_last_finite_iterate(method, record_every):
    """``f`` NaN from its 5th evaluation on: the run stops, ``x`` is the last recorded
    iterate with a finite ``f`` and ``fun == f(x)`` (before: ``fun = nan`` at an ``x`` whose
    value was never finite)."""
    from manifold_spectral.solvers import spd

    Q = _logdet_Q()
    calls = {"fun": 0}

    def true_f(S):
        return (S * Q).sum() - torch.logdet(S)

    def fun(S):
        calls["fun"] += 1
        return true_f(S) if calls["fun"] < 5 else torch.tensor(float("nan"), dtype=F64)

    problem = spd.Objective(fun, Q.shape[0], grad=lambda S: Q - torch.linalg.inv(S))
    res = spd.minimize(problem, method, lr=0.1, steps=30, record_every=record_every)
    last = 3 * record_every  # the 4th record (iterations 0, r, 2r, 3r) was the last finite one
    assert not res.success and "non-finite" in res.message and f"iteration {last}" in res.message
    assert math.isnan(res.history["fun"][-1]) and res.nit == 4 * record_every
    assert math.isfinite(res.fun)
    assert res.fun == pytest.approx(float(true_f(torch.as_tensor(res.x))), rel=1e-12)
    assert res.fun == res.history["fun"][-2]


@pytest.mark.parametrize(
    "sym_tol, exc", [(float("nan"), ValueError), (-1.0, ValueError), ("1e-8", TypeError)], ids=repr
)
def test_from_matrix_rejects_a_bad_sym_tol(sym_tol, exc):
    """``sym_tol = nan`` accepted any asymmetry (``asym > nan`` is false)."""
    S = BAD_MATRICES["non_symmetric"]
    rejects(lambda: ms.SpectralSPD(N, dtype=F64).from_matrix(S, sym_tol=sym_tol), exc, "sym_tol", S)
    S6 = torch.eye(KA * KB, dtype=F64)
    rejects(lambda: kron().from_matrix(S6, sym_tol=sym_tol), exc, "sym_tol", S6)


def test_rgd_load_state_dict_rejects_foreign_state(manifold):
    """Before: ``int('a')``'s message, a KeyError, or a buffer of another manifold accepted
    and failing at the next step with torch's size mismatch."""
    opt, x = rgd_with_momentum(manifold)
    good = opt.state_dict()
    other = ms.SpectralSPD(N + 1, dtype=F64)
    foreign = other.zero_tangent(other.origin())
    nan = good["buffer"].map(lambda t: torch.full_like(t, float("nan")))
    for state, name in [
        ({"steps": "a", "buffer": None}, "steps"),
        ({"steps": -1, "buffer": None}, "steps"),
        ({}, "state"),
        ({"steps": 1, "buffer": foreign}, "buffer"),
        ({"steps": 1, "buffer": good["buffer"].to(F32)}, "buffer"),
        ({"steps": 1, "buffer": nan}, "buffer"),
    ]:
        rejects(lambda s=state: opt.load_state_dict(s), ValueError, name, state=opt.state_dict)
    opt.load_state_dict(good)
    assert_same(good, opt.state_dict())
