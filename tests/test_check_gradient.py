"""``spd.check_gradient``: a right gradient gives Taylor slope 2 and passes, a wrong one
(factor 2, sign, small offset) slope 1 and fails; for user objectives and the built-in
problems' fast path (``congruence_grad``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_spectral import SpectralSPD
from manifold_spectral.solvers import nes, spd
from manifold_spectral.solvers.check import GradientCheck

N = 5
F64 = torch.float64


def _Q() -> torch.Tensor:
    A = torch.randn(N, N, dtype=F64, generator=torch.Generator().manual_seed(0))
    return A @ A.T / N + torch.eye(N, dtype=F64)


def _f(Q: torch.Tensor):
    return lambda S: (S * Q).sum() - torch.logdet(S)


def _right(Q):
    return lambda S: Q - torch.linalg.inv(S)


@pytest.mark.parametrize(
    "make",
    [
        lambda Q: spd.Objective(_f(Q), N),  # autograd
        lambda Q: spd.Objective(_f(Q), N, grad=_right(Q)),
        lambda Q: spd.LogDet(Q),  # congruence_grad fast path
        lambda Q: spd.MetricNearness(Q),
    ],
    ids=["autograd", "grad", "logdet", "nearness"],
)
def test_right_gradient_passes(make):
    res = spd.check_gradient(make(_Q()))
    assert isinstance(res, GradientCheck) and res.ok, res
    assert (abs(res.slopes - 2.0) < 0.1).all(), res
    assert (res.rel_error < 1e-6).all(), res
    assert "looks right" in repr(res) and "\n" not in repr(res)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda g: 2.0 * g,
        lambda g: -g,
        lambda g: g + 1e-3 * torch.eye(N, dtype=F64),
        lambda g: g.T @ g,
    ],
    ids=["factor2", "sign", "offset", "garbage"],
)
def test_wrong_gradient_fails(wrong):
    Q = _Q()
    right = _right(Q)
    res = spd.check_gradient(spd.Objective(_f(Q), N, grad=lambda S: wrong(right(S))))
    assert not res.ok, res
    assert (abs(res.slopes - 1.0) < 0.2).all(), res
    assert "WRONG" in repr(res)


def test_wrong_congruence_grad_fails():
    """The fast path that spd.minimize uses for factored problems is what gets checked."""

    class Broken(spd.LogDet):
        def congruence_grad(self, A, w, batch=None, *, orthogonal=False):
            return 2.0 * super().congruence_grad(A, w, batch, orthogonal=orthogonal)

    res = spd.check_gradient(Broken(_Q()))
    assert res.gradient == "congruence_grad" and not res.ok, res


def test_point_argument_forms():
    Q = _Q()
    p = spd.LogDet(Q)
    x = SpectralSPD(N, dtype=F64).random(generator=torch.Generator().manual_seed(3))
    assert spd.check_gradient(p, x, directions=1).ok
    assert spd.check_gradient(p, 2.0 * torch.eye(N, dtype=F64) + 0.1 * Q, directions=1).ok
    with pytest.raises(ValueError):
        spd.check_gradient(p, directions=0)


def test_results_print_short():
    """print(result) names the fields without dumping tensors or the history."""
    r = spd.minimize(spd.LogDet(_Q()), lr=0.3, steps=5)
    text = repr(r)
    assert text.startswith("SPDResult(") and "tensor(" not in text and len(text) < 600, text
    assert "history: nit, fun, time, gap (6 records)" in text
    res = nes.minimize(lambda x: float((x**2).sum()), [1.0, 1.0], 0.5, max_evals=60, seed=0)
    text = repr(res)
    assert "array(" not in text and "tensor(" not in text and len(text) < 600, text


def test_slope_fit_reads_the_small_steps():
    """A wrong gradient whose error is small next to the curvature, err = 1e-6 t + t^2, has
    slope 1 only below t ~ 1e-6: the fit must report that asymptotic slope, not the cleaner
    t^2 segment above it."""
    from manifold_spectral.solvers.check import DEFAULT_STEPS, _fit_slope

    t = DEFAULT_STEPS
    assert abs(_fit_slope(t, 1e-6 * t + t**2, 1e-14, 7) - 1.0) < 0.2
    assert abs(_fit_slope(t, t**2 + 1e-15, 1e-13, 7) - 2.0) < 0.05


@pytest.mark.parametrize(
    "value",
    [None, 1 + 1j, torch.tensor(1 + 1j), np.complex128(1 + 1j), "1.0", True],
    ids=["none", "complex", "complex-tensor", "complex-numpy", "str", "bool"],
)
@pytest.mark.parametrize("as_numpy", [False, True])
def test_objective_value_must_be_a_real_number(value, as_numpy):
    """``fun`` returning None raised torch's 'Could not infer dtype of NoneType'
    (RuntimeError), and a complex value was silently cut to its real part."""
    grad = (lambda S: np.zeros((N, N))) if as_numpy else (lambda S: torch.zeros(N, N, dtype=F64))
    problem = spd.Objective(lambda S: value, N, grad=grad, numpy=as_numpy)
    with pytest.raises(TypeError, match="fun: expected a real number"):
        spd.minimize(problem, lr=0.1, steps=2)


@pytest.mark.parametrize("value", [2, 2.0, np.float32(2.0), torch.tensor(2.0), np.array([2.0])])
def test_objective_value_accepts_real_scalars(value):
    problem = spd.Objective(lambda S: value, N, grad=lambda S: torch.zeros(N, N, dtype=F64))
    assert spd.minimize(problem, lr=0.1, steps=2).fun == 2.0
