"""Rejected calls: manifold construction, ``from_matrix``, Euclidean gradients, points, step
sizes and momentum, retraction.

Every test snapshots (clones) the caller's tensors, points and optimiser state before the bad
call and checks afterwards that nothing changed (NaN-aware, bitwise); helpers in
``_bad_input.py``, the ``manifold`` fixture in ``conftest.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from _bad_input import (
    BAD_MATRICES,
    F64,
    N,
    bad_points,
    good_egrad,
    point,
    rejects,
    rgd_with_momentum,
)

import manifold_spectral as ms

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
