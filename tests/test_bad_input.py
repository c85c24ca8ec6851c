"""Rejected calls: the right exception, a message naming the argument, and no side effects.

Every test snapshots (clones) the caller's tensors, points and optimiser state before the bad
call and checks afterwards that nothing changed (NaN-aware, bitwise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.manifolds.points import TensorTree

F64 = torch.float64
N = 3


# Helpers ---------------------------------------------------------------------------------


def snapshot(obj: Any) -> Any:
    """A deep copy of tensors / points / state dicts, for comparison after the call."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, TensorTree):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


def assert_same(before: Any, after: Any) -> None:
    if isinstance(before, torch.Tensor):
        assert isinstance(after, torch.Tensor)
        assert after.dtype == before.dtype and after.shape == before.shape
        assert after.device == before.device
        if before.device.type != "meta":
            torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)
    elif isinstance(before, TensorTree):
        assert type(after) is type(before)
        for a, b in zip(before.leaves(), after.leaves(), strict=True):
            assert_same(a, b)
    elif isinstance(before, dict):
        assert before.keys() == after.keys()
        for k in before:
            assert_same(before[k], after[k])
    elif isinstance(before, (list, tuple)):
        assert len(before) == len(after)
        for a, b in zip(before, after, strict=True):
            assert_same(a, b)
    else:
        assert before == after


def rejects(
    call: Callable[[], Any],
    exc: type[Exception] | tuple[type[Exception], ...],
    name: str,
    *watched: Any,
    state: Callable[[], Any] | None = None,
) -> None:
    """``call()`` raises ``exc`` whose message names ``name``; ``watched`` objects and
    ``state()`` are unchanged."""
    before = [snapshot(w) for w in watched]
    state_before = None if state is None else snapshot(state())
    with pytest.raises(exc, match=rf"(^|\W){re.escape(name)}\b"):
        call()
    for b, w in zip(before, watched, strict=True):
        assert_same(b, w)
    if state is not None:
        assert_same(state_before, state())


def spd(n: int = N) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    return A @ A.T + n * torch.eye(n, dtype=F64)


def point(manifold: ms.SpectralManifold, seed: int = 0) -> Any:
    return manifold.random(generator=torch.Generator().manual_seed(seed))


MANIFOLDS = {
    "SpectralSPD": lambda: ms.SpectralSPD(N, dtype=F64),
    "DiagonalSPD": lambda: ms.DiagonalSPD(N, dtype=F64),
    # ab = N keeps the shared (N,)-sized means and gradients below; a 1 x 1 left factor.
    # Non-degenerate Kronecker shapes are covered in the Kronecker section at the end.
    "KroneckerSpectralSPD": lambda: ms.KroneckerSpectralSPD(1, N, dtype=F64),
}


def same_manifold_on(manifold: ms.SpectralManifold, device: Any) -> ms.SpectralManifold:
    """``manifold`` rebuilt on another device."""
    if isinstance(manifold, ms.KroneckerSpectralSPD):
        return ms.KroneckerSpectralSPD(manifold.a, manifold.b, dtype=F64, device=device)
    return type(manifold)(N, dtype=F64, device=device)


@pytest.fixture(params=list(MANIFOLDS), ids=str)
def manifold(request) -> ms.SpectralManifold:
    return MANIFOLDS[request.param]()


def good_egrad(manifold: ms.SpectralManifold) -> torch.Tensor:
    E = torch.ones(manifold.egrad_shape, dtype=F64)
    return E + torch.eye(N, dtype=F64) if E.ndim == 2 else E


def rgd_with_momentum(manifold: ms.SpectralManifold):
    """An ``RGD`` with momentum whose buffer is non-empty, and its current point."""
    opt = ms.RGD(manifold, lr=0.05, momentum=0.9)
    x = opt.step(point(manifold), good_egrad(manifold))
    return opt, x


# Manifold construction -------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ms.SpectralSPD, ms.DiagonalSPD], ids=lambda c: c.__name__)
@pytest.mark.parametrize("n", [0, -1, 2.0, True, "3", None])
def test_bad_size(cls, n):
    rejects(lambda: cls(n), (ValueError, TypeError), "n")


@pytest.mark.parametrize("cls", [ms.SpectralSPD, ms.DiagonalSPD], ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, "float64", torch.complex128])
def test_bad_dtype(cls, dtype):
    rejects(lambda: cls(3, dtype=dtype), TypeError, "dtype")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"cayley": "cholesky"}, "cayley"),
        ({"neumann_max_norm": 1.0}, "neumann_max_norm"),
        ({"neumann_max_norm": 0.0}, "neumann_max_norm"),
        ({"neumann_max_norm": float("nan")}, "neumann_max_norm"),
        ({"eig_tol": -1.0}, "eig_tol"),
        ({"neumann_max_norm": None}, "neumann_max_norm"),
        ({"neumann_max_norm": "0.25"}, "neumann_max_norm"),
    ],
)
def test_bad_spectral_options(kwargs, name):
    rejects(lambda: ms.SpectralSPD(3, **kwargs), (ValueError, TypeError), name)


# from_matrix -------------------------------------------------------------------------------


def _singular_numerically_positive() -> torch.Tensor:
    # Rank 2 in exact arithmetic; eigh returns the zero eigenvalue as +2.5e-16 in float64.
    A = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=F64)
    return A @ A.T


BAD_MATRICES = {
    "non_square": torch.ones(3, 4, dtype=F64),
    "batched": torch.eye(3, dtype=F64).expand(2, 3, 3).clone(),
    "vector": torch.ones(3, dtype=F64),
    "wrong_size": torch.eye(4, dtype=F64),
    "non_symmetric": torch.eye(3, dtype=F64) + torch.triu(torch.ones(3, 3, dtype=F64), 1),
    "indefinite": torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=F64)),
    "negative_definite": -torch.eye(3, dtype=F64),
    "singular_exact": torch.diag(torch.tensor([1.0, 0.0, 2.0], dtype=F64)),
    "singular_rounding": _singular_numerically_positive(),
    "zero": torch.zeros(3, 3, dtype=F64),
    "nan": torch.where(torch.eye(3, dtype=torch.bool), float("nan"), 0.0).to(F64),
    "inf": torch.eye(3, dtype=F64) * float("inf"),
}


@pytest.mark.parametrize("key", list(BAD_MATRICES))
def test_from_matrix_rejects(key):
    S = BAD_MATRICES[key]
    manifold = ms.SpectralSPD(N, dtype=F64)
    rejects(lambda: manifold.from_matrix(S), ValueError, "S", S)


def test_from_matrix_integer_input_is_converted_or_rejected_by_name():
    """An array-like of ints is either converted (it is SPD) or rejected naming ``S``."""
    manifold = ms.SpectralSPD(2, dtype=F64)
    S = [[2, 1], [1, 2]]
    try:
        x = manifold.from_matrix(S)
    except (TypeError, ValueError) as err:
        assert re.search(r"(^|\W)S\b", str(err)), str(err)
    else:
        torch.testing.assert_close(manifold.to_matrix(x), torch.tensor(S, dtype=F64))


# Euclidean gradients -----------------------------------------------------------------------


def bad_egrads(manifold: ms.SpectralManifold) -> list[tuple[str, Any, type[Exception]]]:
    shape = manifold.egrad_shape
    good = good_egrad(manifold)
    nan, inf = good.clone(), good.clone()
    nan.view(-1)[0] = float("nan")
    inf.view(-1)[-1] = -float("inf")
    return [
        ("wrong_shape", torch.ones(*shape, 2, dtype=F64), ValueError),
        ("wrong_length", torch.ones(N + 1, dtype=F64), ValueError),
        ("float32", good.float(), TypeError),
        ("int64", good.long(), TypeError),
        ("list", good.tolist(), TypeError),
        ("nan", nan, ValueError),
        ("inf", inf, ValueError),
    ]


EGRAD_DEFECTS = ["wrong_shape", "wrong_length", "float32", "int64", "list", "nan", "inf"]
POINT_DEFECTS = [
    "float32",
    "other_type",
    "d_zero",
    "d_negative",
    "d_nan",
    "d_wrong_shape",
    "B_not_orthogonal",
    "B_wrong_shape",
    "B_float32",
    "alpha_zero",
    "alpha_negative",
    "alpha_nan",
    "alpha_wrong_shape",
    "det_not_one",
]


def pick(cases: list[tuple[str, Any, type[Exception]]], key: str) -> tuple[Any, type[Exception]]:
    found = {k: (value, exc) for k, value, exc in cases}
    if key not in found:
        pytest.skip(f"{key}: not a defect this manifold's inputs can have")
    return found[key]


@pytest.mark.parametrize("key", EGRAD_DEFECTS)
def test_bad_egrad_to_natural_gradient(manifold, key):
    egrad, exc = pick(bad_egrads(manifold), key)
    x = point(manifold)
    rejects(lambda: manifold.natural_gradient(x, egrad), exc, "egrad", x, egrad)
    rejects(lambda: manifold.local_gradient(x, egrad), exc, "egrad", x, egrad)


@pytest.mark.parametrize("key", EGRAD_DEFECTS)
def test_bad_egrad_to_rgd_step_keeps_momentum_state(manifold, key):
    egrad, exc = pick(bad_egrads(manifold), key)
    opt, x = rgd_with_momentum(manifold)
    assert opt.state_dict()["buffer"] is not None
    rejects(lambda: opt.step(x, egrad), exc, "egrad", x, egrad, state=opt.state_dict)


# Points ------------------------------------------------------------------------------------


def bad_points(manifold: ms.SpectralManifold) -> list[tuple[str, Any, type[Exception]]]:
    x = point(manifold)
    # The factor holding ``d`` (and ``B``): the point itself, or a Kronecker point's
    # N x N right factor.
    f = x.right if isinstance(x, ms.KroneckerSpectralPoint) else x
    other = (
        ms.DiagonalPoint(f.d)
        if isinstance(x, (ms.SpectralPoint, ms.KroneckerSpectralPoint))
        else ms.SpectralPoint(torch.eye(N, dtype=F64), f.d)
    )
    d_neg = f.d.clone()
    d_neg[0] = -1.0
    d_nan = f.d.clone()
    d_nan[-1] = float("nan")
    out = [
        ("float32", x.to(torch.float32), TypeError),
        ("other_type", other, ValueError),
        ("d_zero", _with_d(x, torch.zeros_like(f.d)), ValueError),
        ("d_negative", _with_d(x, d_neg), ValueError),
        ("d_nan", _with_d(x, d_nan), ValueError),
        ("d_wrong_shape", _with_d(x, torch.ones(N + 1, dtype=F64)), ValueError),
    ]
    if isinstance(f, ms.SpectralPoint):
        out += [
            ("B_not_orthogonal", _with_B(x, f.B * 1.2), ValueError),
            ("B_wrong_shape", _with_B(x, torch.eye(N + 1, dtype=F64)), ValueError),
            ("B_float32", _with_B(x, f.B.float()), TypeError),
        ]
    if isinstance(x, ms.KroneckerSpectralPoint):
        K = ms.KroneckerSpectralPoint
        out += [
            ("alpha_zero", K(torch.zeros_like(x.alpha), x.left, x.right), ValueError),
            ("alpha_negative", K(-x.alpha, x.left, x.right), ValueError),
            ("alpha_nan", K(torch.full_like(x.alpha, float("nan")), x.left, x.right), ValueError),
            ("alpha_wrong_shape", K(x.alpha.reshape(1), x.left, x.right), ValueError),
            # S is unchanged, but det S_R = 2^N != 1: the factorisation is not normalised.
            ("det_not_one", K(x.alpha / 2**N, x.left, _with_d(x, 2 * f.d).right), ValueError),
        ]
    return out


def _with_d(x: Any, d: torch.Tensor) -> Any:
    if isinstance(x, ms.KroneckerSpectralPoint):
        return ms.KroneckerSpectralPoint(x.alpha, x.left, ms.SpectralPoint(x.right.B, d))
    return ms.SpectralPoint(x.B, d) if isinstance(x, ms.SpectralPoint) else ms.DiagonalPoint(d)


def _with_B(x: Any, B: torch.Tensor) -> Any:
    if isinstance(x, ms.KroneckerSpectralPoint):
        return ms.KroneckerSpectralPoint(x.alpha, x.left, ms.SpectralPoint(B, x.right.d))
    return ms.SpectralPoint(B, x.d)


@pytest.mark.parametrize("key", POINT_DEFECTS)
def test_bad_point_to_rgd_step_keeps_momentum_state(manifold, key):
    x, exc = pick(bad_points(manifold), key)
    opt, _ = rgd_with_momentum(manifold)
    egrad = good_egrad(manifold)
    rejects(lambda: opt.step(x, egrad), exc, "x", x, egrad, state=opt.state_dict)


def test_check_point_explains(manifold):
    for key, x, _ in bad_points(manifold):
        ok, reason = manifold.check_point(x)
        assert not ok and isinstance(reason, str) and reason, key


# Step sizes and momentum -------------------------------------------------------------------


BAD_LR = [
    (0.0, ValueError),
    (-0.1, ValueError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    (True, TypeError),
    ("0.1", TypeError),
    (None, TypeError),
    (torch.tensor([0.1, 0.2]), ValueError),
]


@pytest.mark.parametrize("lr, exc", BAD_LR, ids=repr)
def test_bad_lr(manifold, lr, exc):
    rejects(lambda: ms.RGD(manifold, lr=lr), exc, "lr")
    x = point(manifold)
    t = manifold.natural_gradient(x, good_egrad(manifold))
    rejects(lambda: manifold.retr(x, t, lr), exc, "lr", x, t)


@pytest.mark.parametrize(
    "momentum, exc",
    [
        (-0.1, ValueError),
        (1.0, ValueError),
        (1.5, ValueError),
        (float("nan"), ValueError),
        (False, TypeError),
    ],
    ids=repr,
)
def test_bad_momentum(manifold, momentum, exc):
    rejects(lambda: ms.RGD(manifold, lr=0.1, momentum=momentum), exc, "momentum")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"cayley": "qr"}, "cayley"),
        ({"reorthogonalize_every": 0}, "reorthogonalize_every"),
        ({"reorthogonalize_every": 1.5}, "reorthogonalize_every"),
        # One spelling everywhere: "exact", "truncated" or "continued"; no other string
        # (or number) may be read as one of them.
        ({"exponential": "exp"}, "exponential"),
        ({"exponential": 1}, "exponential"),
    ],
)
def test_bad_rgd_options(manifold, kwargs, name):
    rejects(lambda: ms.RGD(manifold, lr=0.1, **kwargs), (ValueError, TypeError), name)


@pytest.mark.parametrize("old, new", [(True, "exact"), (False, "truncated")])
def test_exponential_has_one_spelling_and_old_bools_warn(manifold, old, new):
    """``exponential`` is spelled ``"exact"``/``"truncated"``/``"continued"`` by ``RGD``,
    ``retr``, ``Gaussian`` and ``SpectralKron``; the booleans of earlier versions still work,
    with a ``DeprecationWarning`` naming the new spelling, and give the same step."""
    with pytest.warns(DeprecationWarning, match=f"exponential={new!r}"):
        old_rgd = ms.RGD(manifold, lr=0.05, exponential=old)
    assert old_rgd.exponential == new == ms.RGD(manifold, lr=0.05, exponential=new).exponential
    with pytest.warns(DeprecationWarning, match=f"exponential={new!r}"):
        gauss = ms.Gaussian(manifold, beta2=0.05, exponential=old)
    assert gauss.exponential == new


@pytest.mark.parametrize("old, new", [(True, "truncated"), (False, "exact")])
def test_spectral_kron_truncated_is_deprecated_for_exponential(old, new):
    from manifold_spectral.optim import SpectralKron

    W = torch.nn.Parameter(torch.randn(3, 4))
    with pytest.warns(DeprecationWarning, match=f"exponential={new!r}"):
        opt = SpectralKron([W], truncated=old)
    assert opt.param_groups[0]["exponential"] == new
    assert "truncated" not in opt.param_groups[0]
    with pytest.warns(DeprecationWarning, match=f"exponential={new!r}"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(2))], "truncated": old})
    assert opt.param_groups[1]["exponential"] == new
    with pytest.raises(ValueError, match="exponential"):
        SpectralKron([W], exponential="exp")


def test_rgd_rejects_a_non_manifold():
    rejects(lambda: ms.RGD(object(), lr=0.1), TypeError, "manifold")


# Retraction --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=repr)
def test_retr_rejects_non_finite_tangent(manifold, bad):
    x = point(manifold)
    t = manifold.natural_gradient(x, good_egrad(manifold))
    leaves = t.leaves()
    for i in range(len(leaves)):
        broken = t.map(lambda v: v.clone())
        target = broken.leaves()[i]
        target.view(-1)[-1 if target.ndim == 2 else 0] = bad  # M: an in-range (tril) entry
        rejects(lambda b=broken: manifold.retr(x, b, 0.1), ValueError, "tangent", x, broken)


def test_retr_rejects_tangent_of_wrong_dtype(manifold):
    x = point(manifold)
    t = manifold.natural_gradient(x, good_egrad(manifold)).to(torch.float32)
    rejects(lambda: manifold.retr(x, t, 0.1), TypeError, "tangent", x, t)


def test_retr_rejects_bad_cayley():
    manifold = ms.SpectralSPD(N, dtype=F64)
    x = point(manifold)
    t = manifold.zero_tangent(x)
    rejects(lambda: manifold.retr(x, t, 0.1, cayley="pade"), ValueError, "cayley", x, t)


# Gaussian and curvature --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name, exc",
    [
        ({"root": 0.0}, "root", ValueError),
        ({"root": -2.0}, "root", ValueError),
        ({"root": float("nan")}, "root", ValueError),
        ({"beta1": 0.0}, "beta1", ValueError),
        ({"beta1": -1.0}, "beta1", ValueError),
        ({"beta2": 0.0}, "beta2", ValueError),
        ({"beta2": -0.1}, "beta2", ValueError),
        ({"beta2": float("inf")}, "beta2", ValueError),
        ({"gamma": -1.0}, "gamma", ValueError),
        ({"exponential": "taylor"}, "exponential", ValueError),
        # (the booleans of earlier versions are deprecated spellings, accepted with a warning:
        # test_exponential_has_one_spelling_and_old_bools_warn)
        ({"exponential": 1}, "exponential", ValueError),
        ({"cayley": "cholesky"}, "cayley", ValueError),
    ],
)
def test_bad_gaussian_options(manifold, kwargs, name, exc):
    rejects(lambda: ms.Gaussian(manifold, **kwargs), exc, name)


def test_gaussian_rejects_a_non_manifold():
    rejects(lambda: ms.Gaussian(object()), TypeError, "manifold")


@pytest.mark.parametrize(
    "grads, exc",
    [
        (torch.tensor([1.0, float("nan"), 0.0], dtype=F64), ValueError),
        (torch.tensor([[1.0, 0.0, float("inf")]], dtype=F64), ValueError),
        (torch.ones(2, 2, 2, N, dtype=F64), ValueError),
        (torch.tensor(1.0, dtype=F64), ValueError),
        ([1.0, 2.0, 3.0], TypeError),
    ],
    ids=["nan", "inf", "4d", "0d", "list"],
)
def test_bad_gop(grads, exc):
    rejects(lambda: ms.GOP(grads), exc, "grads", grads)


@pytest.mark.parametrize(
    "H",
    [torch.ones(N, N + 1, dtype=F64), torch.ones(N, dtype=F64), torch.ones(1, 1, N, N, dtype=F64)],
    ids=["non_square", "vector", "4d"],
)
def test_bad_hessian_shape(H):
    rejects(lambda: ms.DenseCurvature(H), ValueError, "H", H)


def test_hessian_nan():
    H = torch.eye(N, dtype=F64)
    H[1, 1] = float("nan")
    rejects(lambda: ms.DenseCurvature(H), ValueError, "H", H)


def test_gaussian_step_rejects_curvature_of_wrong_size_or_dtype(manifold):
    family = ms.Gaussian(manifold, beta2=0.1)
    x, mu, g = point(manifold), torch.zeros(N, dtype=F64), torch.ones(N, dtype=F64)
    cases = [
        (ms.GOP(torch.ones(N + 1, dtype=F64)), ValueError, "grads"),
        (ms.GOP(torch.ones(N, dtype=torch.float32)), TypeError, "grads"),
        (ms.DenseCurvature(torch.eye(N + 1, dtype=F64)), ValueError, "H"),
        # (k, m, n) gradients and (k, n, n) curvatures are for manifolds with batch=k
        (ms.GOP(torch.ones(2, 2, N, dtype=F64)), ValueError, "grads"),
        (ms.DenseCurvature(torch.ones(1, N, N, dtype=F64)), ValueError, "H"),
        (torch.eye(N, dtype=torch.float32), TypeError, "H"),
        ("gop", TypeError, "curvature"),
    ]
    for curvature, exc, name in cases:
        rejects(lambda c=curvature: family.step(mu, x, g, c), exc, name, x, mu, g)


@pytest.mark.parametrize(
    "what, value, exc",
    [
        ("mu", torch.zeros(N + 1, dtype=F64), ValueError),
        ("mu", torch.zeros(N, dtype=torch.float32), TypeError),
        ("grad", torch.tensor([0.0, float("nan"), 1.0], dtype=F64), ValueError),
        ("grad", torch.ones(N, 1, dtype=F64), ValueError),
        ("grad", torch.ones(N, dtype=torch.bfloat16), TypeError),
    ],
)
def test_gaussian_step_rejects_bad_mean_or_gradient(manifold, what, value, exc):
    family = ms.Gaussian(manifold, beta2=0.1)
    args = {"mu": torch.zeros(N, dtype=F64), "x": point(manifold), "grad": torch.ones(N, dtype=F64)}
    args[what] = value
    rejects(
        lambda: family.step(args["mu"], args["x"], args["grad"]),
        exc,
        what,
        args["mu"],
        args["x"],
        args["grad"],
    )


def test_gaussian_step_rejects_bad_precision(manifold):
    family = ms.Gaussian(manifold, beta2=0.1)
    mu, g = torch.zeros(N, dtype=F64), torch.ones(N, dtype=F64)
    for _key, x, exc in bad_points(manifold):
        rejects(lambda x=x: family.step(mu, x, g), exc, "precision", mu, x, g)


def test_truncated_exponential_with_indefinite_hessian(manifold):
    """``d (1 + m)`` would be <= 0: ValueError, and the point (and inputs) unchanged."""
    family = ms.Gaussian(manifold, beta2=0.5, gamma=1.0, exponential="truncated")
    x = point(manifold)
    mu, g = torch.zeros(N, dtype=F64), torch.ones(N, dtype=F64)
    H = -100.0 * torch.eye(N, dtype=F64)  # new d = 0.5 d - 50 < 0
    rejects(lambda: family.precision_step(x, ms.DenseCurvature(H)), ValueError, "exponential", x, H)
    rejects(lambda: family.step(mu, x, g, H), ValueError, "exponential", x, H, mu, g)
    # The exact exponential handles the same indefinite curvature.
    exact = ms.Gaussian(manifold, beta2=0.5, gamma=1.0)
    assert manifold.check_point(exact.precision_step(x, H))[0]


def test_truncated_rgd_step_that_would_make_d_non_positive(manifold):
    opt = ms.RGD(manifold, lr=0.05, momentum=0.5, exponential="truncated")
    x = opt.step(point(manifold), good_egrad(manifold))
    egrad = 1e3 * good_egrad(manifold)  # m = -2 lr d G_ii << -1
    rejects(lambda: opt.step(x, egrad), ValueError, "exponential", x, egrad, state=opt.state_dict)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
def test_step_whose_exponential_underflows_is_rejected(dtype):
    """d exp(m) underflowing to 0 is not a point: the step raises, the state is kept."""
    for manifold in (
        ms.SpectralSPD(N, dtype=dtype),
        ms.DiagonalSPD(N, dtype=dtype),
        ms.KroneckerSpectralSPD(1, N, dtype=dtype),
    ):
        opt = ms.RGD(manifold, lr=1.0, momentum=0.5)
        x = opt.step(manifold.origin(), torch.zeros(manifold.egrad_shape, dtype=dtype))
        egrad = torch.zeros(manifold.egrad_shape, dtype=dtype)
        egrad.view(-1)[0] = 1e6  # m_0 = -2 lr d_0 G_00 = -2e6: exp underflows to 0
        before, state = snapshot((x, egrad)), snapshot(opt.state_dict())
        with pytest.raises((ValueError, FloatingPointError)):
            opt.step(x, egrad)
        assert_same(before, (x, egrad))
        assert_same(state, opt.state_dict())


# Devices ------------------------------------------------------------------------------------


def test_inputs_on_meta_device_are_rejected_by_name(manifold):
    """A CPU manifold given tensors on the ``meta`` device (a second device always present)."""
    opt, x = rgd_with_momentum(manifold)
    egrad = good_egrad(manifold).to("meta")
    rejects(lambda: manifold.natural_gradient(x, egrad), ValueError, "egrad", x)
    rejects(lambda: opt.step(x, egrad), ValueError, "egrad", x, state=opt.state_dict)
    x_meta = x.to("meta")
    rejects(lambda: opt.step(x_meta, good_egrad(manifold)), ValueError, "x", state=opt.state_dict)
    family = ms.Gaussian(manifold, beta2=0.1)
    mu, g = torch.zeros(N, dtype=F64), torch.ones(N, dtype=F64)
    rejects(lambda: family.step(mu, x, g.to("meta")), ValueError, "grad", mu, x)
    rejects(lambda: family.step(mu.to("meta"), x, g), ValueError, "mu", x, g)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_cuda(manifold):
    cuda_manifold = same_manifold_on(manifold, "cuda")
    x_cuda = point(cuda_manifold)
    x_cpu = point(manifold)
    opt = ms.RGD(cuda_manifold, lr=0.05, momentum=0.9)
    x_cuda = opt.step(x_cuda, good_egrad(manifold).cuda())
    rejects(
        lambda: opt.step(x_cuda, good_egrad(manifold)),
        ValueError,
        "egrad",
        x_cuda,
        state=opt.state_dict,
    )
    rejects(
        lambda: opt.step(x_cpu, good_egrad(manifold).cuda()),
        ValueError,
        "x",
        x_cpu,
        state=opt.state_dict,
    )
    t = cuda_manifold.zero_tangent(x_cuda).to("cpu")
    rejects(lambda: cuda_manifold.retr(x_cuda, t, 0.1), ValueError, "tangent", x_cuda, t)
    assert math.isfinite(float(cuda_manifold.logdet(x_cuda)))


# KroneckerSpectralSPD (non-degenerate factors) -----------------------------------------------

KA, KB = 2, 3  # a != b, so a transposed (b, a) matrix is a wrong shape


def kron() -> ms.KroneckerSpectralSPD:
    return ms.KroneckerSpectralSPD(KA, KB, dtype=F64)


@pytest.mark.parametrize(
    "a, b, name",
    [
        (0, 3, "a"),
        (-1, 3, "a"),
        (2.0, 3, "a"),
        (True, 3, "a"),
        (None, 3, "a"),
        (3, 0, "b"),
        (3, "2", "b"),
    ],
)
def test_bad_kronecker_size(a, b, name):
    rejects(lambda: ms.KroneckerSpectralSPD(a, b), (ValueError, TypeError), name)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"dtype": torch.int64}, "dtype"),
        ({"dtype": "float64"}, "dtype"),
        ({"cayley": "cholesky"}, "cayley"),
        ({"neumann_max_norm": 1.0}, "neumann_max_norm"),
        ({"eig_tol": -1.0}, "eig_tol"),
    ],
)
def test_bad_kronecker_options(kwargs, name):
    rejects(lambda: ms.KroneckerSpectralSPD(KA, KB, **kwargs), (ValueError, TypeError), name)


def test_from_factors_rejects_bad_alpha_and_unnormalised_factors():
    K = kron()
    x = point(K)
    L, R = x.left, x.right
    y = K.from_factors(x.alpha, L, R)  # the valid call works
    assert K.check_point(y)[0]
    for alpha, exc in [
        (0.0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (torch.tensor([1.0, 2.0], dtype=F64), ValueError),
        ("1", TypeError),
    ]:
        rejects(lambda a=alpha: K.from_factors(a, L, R), exc, "alpha", L, R)
    twice = ms.SpectralPoint(L.B, 2 * L.d)  # det S_L = 2^a
    rejects(lambda: K.from_factors(1.0, twice, R), ValueError, "left", twice, R)
    half = ms.SpectralPoint(R.B, R.d / 2)
    rejects(lambda: K.from_factors(1.0, L, half), ValueError, "right", L, half)
    skewed = ms.SpectralPoint(L.B * 1.2, L.d)
    rejects(lambda: K.from_factors(1.0, skewed, R), ValueError, "left", skewed, R)
    rejects(lambda: K.from_factors(1.0, R, L), ValueError, "left", L, R)  # swapped sizes
    R32 = R.to(torch.float32)
    rejects(lambda: K.from_factors(1.0, L, R32), TypeError, "right", L, R32)


@pytest.mark.parametrize(
    "v, exc",
    [
        (torch.ones(KB, KA, dtype=F64), ValueError),
        (torch.ones(KA * KB + 1, dtype=F64), ValueError),
        (torch.ones(1, KA * KB, dtype=F64), ValueError),
        (torch.ones(KA * KB, 2, 1, dtype=F64), ValueError),
        (torch.ones(KA, KB, 1, dtype=F64), ValueError),
        (torch.tensor(1.0, dtype=F64), ValueError),
        (torch.ones(KA, KB, dtype=torch.float32), TypeError),
        ([[1.0] * KB] * KA, TypeError),
    ],
    ids=["transposed", "wrong_length", "row", "3d", "matrix_3d", "0d", "float32", "list"],
)
def test_kronecker_apply_power_rejects_wrong_shapes(v, exc):
    K = kron()
    x = point(K)
    rejects(lambda: K.apply_power(x, v, -0.5), exc, "v", x, v)


def _kronecker_bad_matrices() -> dict[str, torch.Tensor]:
    ab = KA * KB
    S = torch.kron(spd(KA), spd(KB))
    nonsym = S.clone()
    nonsym[0, 1] += 1.0
    nan = S.clone()
    nan[2, 2] = float("nan")
    return {
        "non_symmetric": nonsym,
        "wrong_size": torch.eye(ab + 1, dtype=F64),
        "factor_size": torch.eye(KA, dtype=F64),
        "non_square": torch.ones(ab, ab + 1, dtype=F64),
        "nan": nan,
        "negative_definite": -torch.eye(ab, dtype=F64),
        "indefinite": torch.kron(torch.diag(torch.tensor([1.0, -1.0], dtype=F64)), spd(KB)),
        "zero": torch.zeros(ab, ab, dtype=F64),
    }


@pytest.mark.parametrize("key", list(_kronecker_bad_matrices()))
def test_kronecker_from_matrix_rejects(key):
    S = _kronecker_bad_matrices()[key]
    rejects(lambda: kron().from_matrix(S), ValueError, "S", S)


@pytest.mark.parametrize(
    "S",
    ["abc", torch.eye(KA * KB, dtype=torch.complex128)],
    ids=["string", "complex"],
)
def test_kronecker_from_matrix_rejects_non_real_input(S):
    """As ``SpectralSPD.from_matrix``: a TypeError naming ``S`` (not torch's own message, and
    not a silent cast that drops the imaginary part)."""
    rejects(lambda: kron().from_matrix(S), TypeError, "S", S)


def test_kronecker_gop_of_wrong_size_or_with_nan():
    K = kron()
    ab = KA * KB
    x = point(K)
    family = ms.Gaussian(K, beta2=0.1)
    mu, g = torch.zeros(ab, dtype=F64), torch.ones(ab, dtype=F64)
    G = torch.ones(KA, KB, dtype=F64)
    cases = [
        (ms.GOP(torch.ones(ab + 1, dtype=F64)), ValueError, "grads"),
        (ms.GOP(torch.ones(2, ab - 1, dtype=F64)), ValueError, "grads"),
        (ms.GOP(G), ValueError, "grads"),  # an unflattened (a, b) gradient matrix
        (ms.GOP(torch.ones(ab, dtype=torch.float32)), TypeError, "grads"),
        (ms.DenseCurvature(torch.eye(ab + 1, dtype=F64)), ValueError, "H"),
        (ms.DenseCurvature(torch.eye(KA, dtype=F64)), ValueError, "H"),
    ]
    for curvature, exc, name in cases:
        rejects(lambda c=curvature: family.precision_step(x, c), exc, name, x)
        rejects(lambda c=curvature: family.step(mu, x, g, c), exc, name, x, mu, g)
    nan = g.clone()
    nan[3] = float("nan")
    rejects(lambda: ms.GOP(nan), ValueError, "grads", nan)
    rejects(lambda: ms.GOP(nan, damping=1e-3), ValueError, "grads", nan)
    rejects(lambda: ms.GOP(g, damping=-1.0), ValueError, "damping", g)
    rejects(lambda: ms.GOP(g, damping=float("nan")), ValueError, "damping", g)
    rejects(lambda: family.step(mu, x, nan), ValueError, "grad", mu, x, nan)
    rejects(lambda: ms.DenseCurvature(torch.outer(nan, nan)), ValueError, "H")


def test_kronecker_rgd_rejects_nan_or_misshapen_egrad_and_keeps_momentum():
    K = kron()
    ab = KA * KB
    opt = ms.RGD(K, lr=0.05, momentum=0.9)
    E = torch.eye(ab, dtype=F64)
    x = opt.step(point(K), E)
    assert opt.state_dict()["buffer"] is not None
    nan = E.clone()
    nan[1, 4] = nan[4, 1] = float("nan")
    for egrad, exc in [
        (nan, ValueError),
        (torch.eye(KA, dtype=F64), ValueError),  # a factor-sized gradient
        (torch.ones(ab, dtype=F64), ValueError),
        (E.reshape(KA, KB, KA, KB), ValueError),
        (E.float(), TypeError),
    ]:
        rejects(lambda e=egrad: opt.step(x, e), exc, "egrad", x, egrad, state=opt.state_dict)
        rejects(lambda e=egrad: K.natural_gradient(x, e), exc, "egrad", x, egrad)


def test_kronecker_retr_rejects_tangent_with_swapped_factors():
    K = kron()
    x = point(K)
    t = K.zero_tangent(x)
    swapped = ms.KroneckerSpectralTangent(t.n, t.right, t.left)
    rejects(lambda: K.retr(x, swapped, 0.1), ValueError, "tangent", x, swapped)
    vector = ms.KroneckerSpectralTangent(t.n.reshape(1), t.left, t.right)
    rejects(lambda: K.retr(x, vector, 0.1), ValueError, "tangent", x, vector)


def test_kronecker_precision_gradient_rejects_foreign_curvature():
    K = kron()
    x = point(K)
    Ht = torch.eye(KA * KB, dtype=F64)  # a bare tensor, not in the Kronecker eigenbasis form
    rejects(lambda: K.precision_egrad_eigenbasis(x, Ht, 1.0), TypeError, "Ht", x, Ht)


# Values the manifold's dtype cannot hold (issue 14) -----------------------------------------

F32 = torch.float32


@pytest.mark.parametrize("scale", [1e40, 1e-60], ids=["overflow", "underflow"])
def test_from_matrix_outside_the_dtype_range(scale):
    """``1e40 I`` is SPD in float64 but would be ``d = inf`` in float32 (``1e-60 I``: ``d = 0``):
    no point of the float32 manifold, so a ValueError naming ``S``."""
    S = scale * torch.eye(N, dtype=F64)
    rejects(lambda: ms.SpectralSPD(N, dtype=F32).from_matrix(S), ValueError, "S", S)
    S6 = scale * torch.eye(KA * KB, dtype=F64)
    rejects(lambda: ms.KroneckerSpectralSPD(KA, KB, dtype=F32).from_matrix(S6), ValueError, "S", S6)
    SL, SR = scale * torch.eye(KA, dtype=F64), torch.eye(KB, dtype=F64)
    K32 = ms.KroneckerSpectralSPD(KA, KB, dtype=F32)
    rejects(lambda: K32.from_kronecker(SL, SR), ValueError, "S_L", SL, SR)
    d = torch.tensor([1.0, scale, 2.0], dtype=F64)
    rejects(lambda: ms.DiagonalSPD(N, dtype=F32).from_eigenvalues(d), ValueError, "d", d)
    # The same values are fine in float64.
    assert ms.SpectralSPD(N, dtype=F64).from_matrix(S).d.isfinite().all()


def test_from_factors_alpha_outside_the_dtype_range():
    K32 = ms.KroneckerSpectralSPD(KA, KB, dtype=F32)
    x = point(K32)
    rejects(lambda: K32.from_factors(1e40, x.left, x.right), ValueError, "alpha", x)
    rejects(lambda: K32.from_factors(1e-60, x.left, x.right), ValueError, "alpha", x)


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: ms.SpectralSPD(N, dtype=dt),
        lambda dt: ms.SpectralSPD(N, dtype=dt, batch=2),
        lambda dt: ms.DiagonalSPD(N, dtype=dt),
        lambda dt: ms.KroneckerSpectralSPD(KA, KB, dtype=dt),
    ],
    ids=["spectral", "spectral_batched", "diagonal", "kronecker"],
)
@pytest.mark.parametrize(
    "log_scale, dtype",
    [
        (1e3, F32),
        (1e5, F64),
        (float("nan"), F64),
        (float("inf"), F64),
        (-1.0, F64),
        ("1", F64),
    ],
    ids=["1e3_f32", "1e5_f64", "nan", "inf", "negative", "str"],
)
def test_random_rejects_bad_log_scale(make, log_scale, dtype):
    manifold = make(dtype)
    gen = torch.Generator().manual_seed(0)
    exc = TypeError if isinstance(log_scale, str) else ValueError
    rejects(lambda: manifold.random(gen, log_scale=log_scale), exc, "log_scale")
    assert manifold.check_point(manifold.random(gen, log_scale=0.0))[0]


def test_kronecker_from_matrix_rejects_indefinite_non_kronecker_matrix():
    """Its nearest Kronecker product is positive definite; ``S`` is not. Same rule and message
    as ``SpectralSPD.from_matrix``."""
    S = torch.diag(torch.tensor([1.0, -1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64))
    with pytest.raises(ValueError, match="not positive definite") as spectral:
        ms.SpectralSPD(KA * KB, dtype=F64).from_matrix(S)
    rejects(lambda: kron().from_matrix(S), ValueError, "S", S)
    with pytest.raises(ValueError) as kronecker:
        kron().from_matrix(S)
    assert str(kronecker.value) == str(spectral.value)
    singular = torch.diag(torch.tensor([1.0, 0.0, 2.0, 3.0, 4.0, 5.0], dtype=F64))
    rejects(lambda: kron().from_matrix(singular), ValueError, "S", singular)


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


# spd.minimize: results and stopping rules (issue 14) ----------------------------------------


def _logdet_Q(n: int = 10, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    return (A @ A.T / n + 0.1 * torch.eye(n, dtype=F64)).to(dtype)


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
    for x0, exc in [
        (ms.SpectralPoint(1.5 * x.B, x.d), ValueError),
        (x.to(F32), TypeError),
        (ms.SpectralPoint(x.B, -x.d), ValueError),
    ]:
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
