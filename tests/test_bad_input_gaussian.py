"""Rejected calls: the Gaussian and its curvatures, devices.

Every test snapshots (clones) the caller's tensors, points and optimiser state before the bad
call and checks afterwards that nothing changed (NaN-aware, bitwise); helpers in
``_bad_input.py``, the ``manifold`` fixture in ``conftest.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from _bad_input import (
    F64,
    N,
    assert_same,
    bad_points,
    good_egrad,
    point,
    rejects,
    rgd_with_momentum,
    same_manifold_on,
    snapshot,
)

import manifold_spectral as ms

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
