"""Edges of the geoopt adapters: ``KroneckerSpectralSPD.projx`` of a point with non-positive
(or non-finite) entries gives a usable point, as ``SpectralSPD.projx`` does; both adapters
refuse a packed tensor of the wrong size, and a vector whose dtype or device differs from
the point's, with an error naming the argument instead of a raw torch error."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("geoopt")

from manifold_spectral.geoopt import KroneckerSpectralSPD, SpectralSPD, pack  # noqa: E402

F64 = torch.float64
A_, B_ = 3, 2
NUMEL = 1 + A_ * A_ + A_ + B_ * B_ + B_


def _kron(alpha, dL, dR, dtype=F64):
    """A packed Kronecker point with identity bases and the given (possibly bad) entries."""
    man = KroneckerSpectralSPD(A_, B_)
    _, BL, _, BR, _ = man.split(man.origin(dtype=dtype))

    def t(v):
        return torch.as_tensor(v, dtype=dtype)

    return man, man.join(t(alpha), BL, t(dL), BR, t(dR))


def _assert_usable(man, p, seed=0):
    """On the manifold, finite, and a random tangent there has a finite positive norm."""
    assert torch.isfinite(p).all()
    ok, why = man.check_point_on_manifold(p, explain=True)
    assert ok, why
    g = torch.Generator().manual_seed(seed)
    u = man.proju(p, torch.randn(p.shape, dtype=p.dtype, generator=g))
    norm = man.inner(p, u)
    assert torch.isfinite(norm).all() and bool((norm > 0).all())


# projx --------------------------------------------------------------------------------------

BAD_POINTS = {
    "negative alpha and d entries": (-1.0, [2.0, -1.0, 0.5], [1.0, -1.0]),
    "one negative d_L entry": (1.0, [2.0, -1.0, 0.5], [1.0, 1.0]),
    "zero entries": (0.0, [0.0, 1.0, 3.0], [0.0, 0.0]),
    "all negative": (-2.0, [-1.0, -2.0, -3.0], [-1.0, -4.0]),
    "nan alpha": (math.nan, [1.0, 2.0, 0.5], [1.0, 1.0]),
    "inf alpha": (math.inf, [1.0, 2.0, 0.5], [1.0, 1.0]),
    "-inf alpha": (-math.inf, [1.0, 2.0, 0.5], [1.0, 1.0]),
    "huge spread": (1e-30, [1e200, -1e-200, 1.0], [1e-100, 1e100]),
}


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("case", sorted(BAD_POINTS))
def test_projx_result_is_a_usable_point(case, dtype):
    alpha, dL, dR = BAD_POINTS[case]
    if dtype == torch.float32 and case == "huge spread":
        dL, dR = [1e30, -1e-30, 1.0], [1e-20, 1e20]
    man, x = _kron(alpha, dL, dR, dtype)
    p = man.projx(x)
    _assert_usable(man, p)
    torch.testing.assert_close(man.projx(p), p)


def test_projx_floors_each_factor_as_spectral_spd_does():
    """Each factor's ``d`` follows ``SpectralSPD.projx`` up to the scale moved into alpha."""
    dL, dR = [2.0, -1.0, 0.5], [1.0, -1.0]
    man, x = _kron(1.0, dL, dR)
    alpha, _, pL, _, pR = man.split(man.projx(x))
    scale = 1.0
    for d, p in ((dL, pL), (dR, pR)):
        n = len(d)
        ref = SpectralSPD(n).projx(pack(torch.eye(n, dtype=F64), torch.tensor(d, dtype=F64)))[-1]
        geo = torch.exp(torch.log(ref).mean())
        torch.testing.assert_close(p, ref / geo)
        scale *= geo
    torch.testing.assert_close(alpha, scale)
    # The floor is relative (eps * max|d|), not the smallest normal number.
    assert float(pL.max() / pL.min()) <= 1.01 / torch.finfo(F64).eps


def test_projx_of_a_negative_alpha_is_the_polar_factor():
    """``alpha < 0`` with valid factors: ``|alpha| (S_L kron S_R)``, i.e. ``-S``."""
    man = KroneckerSpectralSPD(A_, B_)
    x = man.random(dtype=F64, generator=torch.Generator().manual_seed(1))
    x = x.as_subclass(torch.Tensor)
    neg = x.clone()
    neg[..., 0] = -neg[..., 0]
    p = man.projx(neg)
    torch.testing.assert_close(p, x)
    torch.testing.assert_close(man.to_matrix(p), -man.to_matrix(neg))


@pytest.mark.parametrize("bad", [0.0, -0.0, math.nan, math.inf, -math.inf])
def test_projx_of_an_alpha_without_scale_is_one(bad):
    """0, NaN and +-Inf become 1 (the origin's scale); the factors' scales still move in."""
    man, x = _kron(bad, [1.0, 1.0, 1.0], [4.0, 4.0])
    alpha, _, dL, _, dR = man.split(man.projx(x))
    torch.testing.assert_close(alpha, torch.tensor(4.0, dtype=F64))
    torch.testing.assert_close(dR, torch.ones(2, dtype=F64))


def test_projx_keeps_a_valid_point_of_any_scale():
    man = KroneckerSpectralSPD(A_, B_)
    g = torch.Generator().manual_seed(2)
    x = man.random(4, NUMEL, dtype=F64, generator=g).as_subclass(torch.Tensor).clone()
    x[..., 0] = torch.tensor([1e-200, 1e-20, 1.0, 1e200], dtype=F64)
    torch.testing.assert_close(man.projx(x), x)


def test_projx_batched_bad_points():
    rows = [_kron(*BAD_POINTS[c])[1] for c in sorted(BAD_POINTS)]
    man, xb = KroneckerSpectralSPD(A_, B_), torch.stack(rows)
    p = man.projx(xb)
    _assert_usable(man, p)
    for i, row in enumerate(rows):
        torch.testing.assert_close(p[i], man.projx(row))


# Shapes -------------------------------------------------------------------------------------


def _kron_setup(dtype=F64):
    man = KroneckerSpectralSPD(A_, B_)
    g = torch.Generator().manual_seed(3)
    x = man.random(dtype=dtype, generator=g).as_subclass(torch.Tensor)
    u = man.proju(x, torch.randn(NUMEL, dtype=dtype, generator=g))
    return man, x, u


def _spectral_setup(dtype=F64):
    man = SpectralSPD(4)
    g = torch.Generator().manual_seed(4)
    x = man.random(dtype=dtype, generator=g).as_subclass(torch.Tensor)
    u = man.proju(x, torch.randn(5, 4, dtype=dtype, generator=g))
    return man, x, u


#: Every method that takes a point ``x`` and a vector, with the vector's argument name.
VECTOR_CALLS = {
    "inner": ("u", lambda M, x, u, w: M.inner(x, w)),
    "inner_v": ("v", lambda M, x, u, w: M.inner(x, u, w)),
    "egrad2rgrad": ("u", lambda M, x, u, w: M.egrad2rgrad(x, w)),
    "retr": ("u", lambda M, x, u, w: M.retr(x, w)),
    "expmap": ("u", lambda M, x, u, w: M.expmap(x, w)),
    "proju": ("u", lambda M, x, u, w: M.proju(x, w)),
    "chart_coordinates": ("u", lambda M, x, u, w: M.chart_coordinates(x, w)),
    "transp": ("v", lambda M, x, u, w: M.transp(x, x, w)),
    "transp_y": ("y", lambda M, x, u, w: M.transp(x, w, u)),
    "retr_transp": ("v", lambda M, x, u, w: M.retr_transp(x, u, w)),
    "check_vector_on_tangent": ("u", lambda M, x, u, w: M._check_vector_on_tangent(x, w)),
}


@pytest.mark.parametrize("size", [NUMEL + 1, 1])
@pytest.mark.parametrize("call", sorted(VECTOR_CALLS))
def test_kronecker_vector_of_another_size_is_refused(call, size):
    man, x, u = _kron_setup()
    name, f = VECTOR_CALLS[call]
    msg = rf"^{name}: expected shape \(\*batch, {NUMEL}\).*SpectralSPD\(3, 2\).*got \({size},\)"
    with pytest.raises(ValueError, match=msg):
        f(man, x, u, torch.zeros(size, dtype=F64))


POINT_CALLS = {
    "inner": lambda M, x, u: M.inner(x, u),
    "egrad2rgrad": lambda M, x, u: M.egrad2rgrad(x, u),
    "retr": lambda M, x, u: M.retr(x, u),
    "proju": lambda M, x, u: M.proju(x, u),
    "projx": lambda M, x, u: M.projx(x),
    "transp": lambda M, x, u: M.transp(x, x, u),
    "to_matrix": lambda M, x, u: M.to_matrix(x),
    "factors": lambda M, x, u: M.factors(x),
    "split": lambda M, x, u: M.split(x),
}


@pytest.mark.parametrize("call", sorted(POINT_CALLS))
def test_kronecker_point_of_another_size_is_refused(call):
    man, _, _ = _kron_setup()
    bad = torch.ones(2, NUMEL - 1, dtype=F64)
    msg = rf"^x: expected shape \(\*batch, {NUMEL}\).*got \(2, 18\)"
    with pytest.raises(ValueError, match=msg):
        POINT_CALLS[call](man, bad, bad)


def test_kronecker_non_tensor_is_refused():
    man, x, _ = _kron_setup()
    with pytest.raises(TypeError, match=r"^u: expected a torch tensor, got list"):
        man.inner(x, [0.0] * NUMEL)


def test_spectral_inner_names_v():
    """``inner(x, u, v)`` with a ``v`` of another size names ``v`` (it said ``u``)."""
    man, x, u = _spectral_setup()
    with pytest.raises(ValueError, match=r"^v: expected shape \(\*batch, 5, 4\)"):
        man.inner(x, u, torch.zeros(6, 5, dtype=F64))


def test_right_shapes_still_work_batched():
    man, x, u = _kron_setup()
    xb, ub = x.expand(2, 3, NUMEL), u.expand(2, 3, NUMEL)
    assert man.retr(xb, ub).shape == (2, 3, NUMEL)
    assert man.inner(xb, ub).shape == (2, 3)
    assert man.inner(x, ub).shape == (2, 3)  # a batch of vectors at one point broadcasts
    assert man.transp(x, man.retr(x, u), ub).shape == (2, 3, NUMEL)


# Dtype and device ---------------------------------------------------------------------------

SETUPS = {"kronecker": _kron_setup, "spectral": _spectral_setup}


@pytest.mark.parametrize("adapter", sorted(SETUPS))
@pytest.mark.parametrize("call", sorted(VECTOR_CALLS))
def test_vector_of_another_dtype_is_refused(call, adapter):
    man, x, u = SETUPS[adapter]()
    name, f = VECTOR_CALLS[call]
    msg = rf"^{name}: expected dtype torch.float64 \(the point's\), got torch.float32"
    with pytest.raises(TypeError, match=msg):
        f(man, x, u, u.float())


@pytest.mark.parametrize("adapter", sorted(SETUPS))
@pytest.mark.parametrize("call", sorted(VECTOR_CALLS))
def test_vector_on_another_device_is_refused(call, adapter):
    """A ``meta`` tensor stands for another device (the check reads metadata only)."""
    man, x, u = SETUPS[adapter]()
    name, f = VECTOR_CALLS[call]
    with pytest.raises(TypeError, match=rf"^{name}: expected device cpu \(the point's\), got meta"):
        f(man, x, u, torch.empty_like(u, device="meta"))


@pytest.mark.parametrize("adapter", sorted(SETUPS))
def test_float32_point_and_vector_still_work(adapter):
    man, x, u = SETUPS[adapter](torch.float32)
    y = man.retr(x, man.egrad2rgrad(x, u))
    assert y.dtype == torch.float32 and man.check_point_on_manifold(y)
    assert man.inner(x, u, man.transp(x, x, u)).dtype == torch.float32


def test_neumann_adapter_converges_where_the_linear_angle_cycled():
    """geoopt's RiemannianSGD on the log-det problem where the Neumann map's trust radius
    turned the linearised angle into the same overshoot every step (f - f* 3.5e-2 after 600
    steps): the Neumann adapter's default rotation is the Jacobi one."""
    import geoopt

    from manifold_spectral import SpectralSPD as CoreSPD
    from manifold_spectral.geoopt import SpectralSPD as GeoSPD
    from manifold_spectral.geoopt import pack

    n, dt = 6, torch.float64
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(n, n, generator=gen, dtype=dt)
    Q = A @ A.T / n + 0.5 * torch.eye(n, dtype=dt)
    x0 = CoreSPD(n, dtype=dt).random(gen)
    f_star = n + float(torch.logdet(Q))
    G = GeoSPD(n, cayley="neumann")
    assert G.rotation == "jacobi" and GeoSPD(n).rotation == "linear"
    p = geoopt.ManifoldParameter(pack(x0.B.clone(), x0.d.clone()), manifold=G)
    opt = geoopt.optim.RiemannianSGD([p], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        S = G.to_matrix(p)
        loss = (S * Q).sum() - torch.logdet(S)
        loss.backward()
        opt.step()
    assert abs(float(loss.detach()) - f_star) < 1e-10
