"""``manifold_spectral.geoopt.SpectralSPD`` checked the way geoopt checks its manifolds
(projections idempotent, retraction on the manifold, ``egrad2rgrad`` against ``inner``,
Riemannian gradient against finite differences) and against the library's closed forms."""

from __future__ import annotations

import pytest
import torch

from manifold_spectral import KroneckerSpectralPoint, SpectralPoint
from manifold_spectral import KroneckerSpectralSPD as CoreKronecker
from manifold_spectral import SpectralSPD as CoreSpectralSPD
from manifold_spectral.geoopt import KroneckerSpectralSPD, SpectralSPD, pack, unpack

geoopt = pytest.importorskip("geoopt")

N = 5
F64 = torch.float64


def _setup(seed: int = 0, batch: tuple[int, ...] = ()):
    man = SpectralSPD(N)
    g = torch.Generator().manual_seed(seed)
    x = man.random(*batch, N + 1, N, dtype=F64, generator=g).as_subclass(torch.Tensor)
    u = man.proju(x, torch.randn(*batch, N + 1, N, dtype=F64, generator=g))
    return man, x, u, g


def _logdet_loss(man: SpectralSPD, Q: torch.Tensor):
    """f(S) = tr(S Q) - log det S (minimum at S = Q^-1)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return (man.to_matrix(x) * Q).sum() - torch.log(unpack(x)[1]).sum()

    return f


def _egrad(f, x: torch.Tensor) -> torch.Tensor:
    xp = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xp), xp)
    return g


def _spd(seed: int) -> torch.Tensor:
    A = torch.randn(N, N, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return A @ A.T / N + torch.eye(N, dtype=F64)


@pytest.mark.parametrize("batch", [(), (3,)])
def test_projections_idempotent_and_on_manifold(batch):
    man, x, u, g = _setup(1, batch)
    assert man.check_point_on_manifold(x)
    assert man.check_vector_on_tangent(x, u)
    torch.testing.assert_close(man.proju(x, u), u)
    torch.testing.assert_close(man.projx(x), x)
    noisy = x + 0.05 * torch.randn(x.shape, dtype=F64, generator=g)
    px = man.projx(noisy)
    assert man.check_point_on_manifold(px)
    torch.testing.assert_close(man.projx(px), px)
    bad = x.clone()
    bad[..., -1, 0] = -1.0
    assert not man.check_point_on_manifold(bad)
    assert not man.check_point_on_manifold(noisy)
    assert not man.check_vector_on_tangent(x, torch.ones_like(x))


@pytest.mark.parametrize(
    "cayley,rotation",
    [("exact", "linear"), ("neumann", "linear"), ("exact", "jacobi"), ("exact", "second_order")],
)
def test_retraction_on_manifold_and_first_order(cayley, rotation):
    man, x, u, _ = _setup(2)
    man = SpectralSPD(N, cayley=cayley, rotation=rotation)
    y = man.retr(x, u)
    # Neumann: one step's orthogonality defect is up to 2 rho^6 + rho^12 = 4.9e-4 at the clip.
    assert man.check_point_on_manifold(y, atol=1e-3 if cayley == "neumann" else 1e-4)
    torch.testing.assert_close(man.retr(x, torch.zeros_like(u)), x)
    # First order: ||retr(x, t u) - x - t u|| = O(t^2) (slope 2 on a log-log plot).
    err = [float((man.retr(x, t * u) - x - t * u).abs().max()) for t in (1e-4, 1e-5)]
    assert err[0] / err[1] > 30.0, err
    torch.testing.assert_close(man.expmap(x, u), y)


def test_inner_is_fisher_rao():
    """<u, v>_x = 1/2 tr(S^-1 dS_u S^-1 dS_v), dS the differential of S(B, d) along u."""
    man, x, u, g = _setup(3)
    v = man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))
    S = man.to_matrix(x)
    dSu = torch.func.jvp(man.to_matrix, (x,), (u,))[1]
    dSv = torch.func.jvp(man.to_matrix, (x,), (v,))[1]
    ref = 0.5 * torch.trace(torch.linalg.solve(S, dSu) @ torch.linalg.solve(S, dSv))
    torch.testing.assert_close(man.inner(x, u, v), ref)
    assert man.inner(x, u, v, keepdim=True).shape == (1, 1)


@pytest.mark.parametrize("of_s", [True, False])
def test_egrad2rgrad_consistent_with_inner(of_s):
    """inner(x, egrad2rgrad(g), v) == <g, v> for every tangent v (distinct eigenvalues);
    for any function of (B, d) (of_s=False) as well as for a function of S."""
    man, x, v, g = _setup(4)
    if of_s:
        egrad = _egrad(_logdet_loss(man, _spd(0)), x)
    else:
        W = torch.randn(x.shape, dtype=F64, generator=g)
        egrad = _egrad(lambda z: (W * z).sum() + (z**3).sum(), x)
    rgrad = man.egrad2rgrad(x, egrad)
    assert man.check_vector_on_tangent(x, rgrad)
    for _ in range(3):
        torch.testing.assert_close(man.inner(x, rgrad, v), (egrad * v).sum())
        v = man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))


def test_egrad2rgrad_is_library_natural_gradient():
    man, x, _, _ = _setup(5)
    Q = _spd(1)
    egrad = _egrad(_logdet_loss(man, Q), x)
    B, d = unpack(x)
    core = CoreSpectralSPD(N, dtype=F64)
    E = Q - torch.linalg.inv(man.to_matrix(x))  # df/dS
    nat = core.natural_gradient(SpectralPoint(B.clone(), d.clone()), E)
    ref = man.from_chart_coordinates(x, nat.m, nat.M)
    torch.testing.assert_close(man.egrad2rgrad(x, egrad), ref)


def test_riemannian_gradient_against_finite_differences():
    """d/dt f(retr(x, t v)) at 0 == <grad f, v>_x (central differences, float64)."""
    man, x, v, g = _setup(6)
    f = _logdet_loss(man, _spd(2))
    rgrad = man.egrad2rgrad(x, _egrad(f, x))
    for _ in range(3):
        t = 1e-5
        fd = (f(man.retr(x, t * v)) - f(man.retr(x, -t * v))) / (2 * t)
        torch.testing.assert_close(fd, man.inner(x, rgrad, v), atol=1e-7, rtol=1e-6)
        v = man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))


def test_repeated_eigenvalues_moore_penrose():
    """At the identity every eigenvalue is repeated: no rotation step, finite eigenvalue step."""
    man = SpectralSPD(N)
    x = man.origin(dtype=F64).as_subclass(torch.Tensor)
    rgrad = man.egrad2rgrad(x, _egrad(_logdet_loss(man, _spd(3)), x))
    assert torch.isfinite(rgrad).all()
    assert float(unpack(rgrad)[0].abs().max()) == 0.0
    assert float(unpack(rgrad)[1].abs().max()) > 0.0
    # Numerically equal (relative gap 1e-12 < eig_tol): that pair gets no rotation step,
    # the others do.
    _, x, _, _ = _setup(9)
    x[-1, 1] = x[-1, 0] * (1 + 1e-12)
    rgrad = man.egrad2rgrad(x, _egrad(_logdet_loss(man, _spd(3)), x))
    m, M = man.chart_coordinates(x, rgrad)
    assert torch.isfinite(rgrad).all() and abs(float(M[1, 0])) < 1e-12
    assert float(M[2:, :2].abs().min()) > 1e-8


def test_transport_tangent_linear_identity():
    man, x, u, g = _setup(7)
    v = man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))
    y, w = man.retr_transp(x, u, v)
    assert man.check_vector_on_tangent(y, w)
    torch.testing.assert_close(man.transp(x, x, v), v)
    # Left translation: the chart coordinates at y are those of v at x.
    for a, b in zip(man.chart_coordinates(y, w), man.chart_coordinates(x, v), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(man.transp(x, y, 2 * v + u), 2 * w + man.transp(x, y, u))


def test_riemannian_sgd_step_is_library_rgd_step():
    man, x, _, _ = _setup(8)
    Q = _spd(4)
    p = geoopt.ManifoldParameter(x.clone(), manifold=man)
    opt = geoopt.optim.RiemannianSGD([p], lr=0.1)
    _logdet_loss(man, Q)(p).backward()
    opt.step()
    B, d = unpack(x)
    core = CoreSpectralSPD(N, dtype=F64)
    pt = SpectralPoint(B.clone(), d.clone())
    E = Q - torch.linalg.inv(man.to_matrix(x))
    ref = core.retr(pt, -core.natural_gradient(pt, E), 0.1)
    torch.testing.assert_close(p.detach().as_subclass(torch.Tensor), pack(ref.B, ref.d))


def test_riemannian_adam_next_to_stiefel():
    """One RiemannianAdam trains a spectral SPD parameter (log-det, minimum at Q^-1) and a
    Stiefel parameter (top-2 eigenspace of A) together."""
    torch.manual_seed(0)
    man = SpectralSPD(N)
    Q = _spd(5)
    f = _logdet_loss(man, Q)
    S_par = geoopt.ManifoldParameter(man.random(dtype=F64), manifold=man)
    A = _spd(6)
    stiefel = geoopt.Stiefel()
    X = geoopt.ManifoldParameter(stiefel.random(N, 2, dtype=F64), manifold=stiefel)
    opt = geoopt.optim.RiemannianAdam([S_par, X], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = f(S_par) - torch.trace(X.T @ A @ X)
        loss.backward()
        opt.step()
    assert man.check_point_on_manifold(S_par.detach())
    assert stiefel.check_point_on_manifold(X.detach())
    S = man.to_matrix(S_par.detach())
    err = torch.linalg.matrix_norm(S @ Q - torch.eye(N, dtype=F64)) / N**0.5
    assert float(err) < 1e-2
    top = torch.linalg.eigvalsh(A)[-2:].sum()
    assert float(torch.trace(X.T @ A @ X).detach()) > float(top) - 1e-3


# KroneckerSpectralSPD: S = alpha (S_L kron S_R), packed flat ---------------------------------

A_, B_ = 3, 4


def _kron_setup(seed: int = 0):
    man = KroneckerSpectralSPD(A_, B_)
    g = torch.Generator().manual_seed(seed)
    x = man.random(dtype=F64, generator=g).as_subclass(torch.Tensor)
    u = man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))
    return man, x, u, g


def _kron_loss(man: KroneckerSpectralSPD, Q: torch.Tensor):
    def f(x: torch.Tensor) -> torch.Tensor:
        S = man.to_matrix(x)
        return (S * Q).sum() - torch.logdet(S)

    return f


def _core_point(man: KroneckerSpectralSPD, x: torch.Tensor) -> KroneckerSpectralPoint:
    al, BL, dL, BR, dR = (t.clone() for t in man.split(x))
    return KroneckerSpectralPoint(al, SpectralPoint(BL, dL), SpectralPoint(BR, dR))


@pytest.mark.parametrize("rotation", ["linear", "second_order"])
def test_kronecker_projections_and_retraction(rotation):
    man, x, u, g = _kron_setup(10)
    man = KroneckerSpectralSPD(A_, B_, rotation=rotation)
    assert man.check_point_on_manifold(x) and man.check_vector_on_tangent(x, u)
    torch.testing.assert_close(man.proju(x, u), u)
    torch.testing.assert_close(man.projx(x), x)
    w = torch.randn(x.shape, dtype=F64, generator=g)
    assert not man.check_vector_on_tangent(x, w)
    assert man.check_vector_on_tangent(x, man.proju(x, w))
    y = man.retr(x, u)
    assert man.check_point_on_manifold(y)  # orthogonal B_l, det S_l = 1, alpha > 0
    assert not man.check_point_on_manifold(x + 0.01 * w)
    assert man.check_point_on_manifold(man.retr(x, 0.1 * w))  # det restored for any u
    err = [float((man.retr(x, t * u) - x - t * u).abs().max()) for t in (1e-4, 1e-5)]
    assert err[0] / err[1] > 30.0, err
    y, w2 = man.retr_transp(x, u, u)
    assert man.check_vector_on_tangent(y, w2)


def test_kronecker_inner_is_fisher_rao():
    man, x, u, g = _kron_setup(11)
    v = man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))
    S = man.to_matrix(x)
    dSu = torch.func.jvp(man.to_matrix, (x,), (u,))[1]
    dSv = torch.func.jvp(man.to_matrix, (x,), (v,))[1]
    ref = 0.5 * torch.trace(torch.linalg.solve(S, dSu) @ torch.linalg.solve(S, dSv))
    torch.testing.assert_close(man.inner(x, u, v), ref)


def test_kronecker_egrad2rgrad_inner_library_and_finite_differences():
    man, x, v, g = _kron_setup(12)
    Q = torch.randn(A_ * B_, A_ * B_, dtype=F64, generator=g)
    Q = Q @ Q.T / (A_ * B_) + torch.eye(A_ * B_, dtype=F64)
    f = _kron_loss(man, Q)
    egrad = _egrad(f, x)
    rgrad = man.egrad2rgrad(x, egrad)
    assert man.check_vector_on_tangent(x, rgrad)
    torch.testing.assert_close(man.inner(x, rgrad, v), (egrad * v).sum())
    # The library's closed form (Claim 6) and its RGD step.
    core, pt = CoreKronecker(A_, B_, dtype=F64), _core_point(man, x)
    nat = core.natural_gradient(pt, Q - torch.linalg.inv(man.to_matrix(x)))
    ref = man.from_chart_coordinates(x, nat.n, (nat.left.m, nat.left.M), (nat.right.m, nat.right.M))
    torch.testing.assert_close(rgrad, ref)
    y, yc = man.retr(x, -0.1 * rgrad), core.retr(pt, -nat, 0.1)
    torch.testing.assert_close(y, man.join(yc.alpha, yc.left.B, yc.left.d, yc.right.B, yc.right.d))
    t = 1e-5
    fd = (f(man.retr(x, t * v)) - f(man.retr(x, -t * v))) / (2 * t)
    torch.testing.assert_close(fd, man.inner(x, rgrad, v), atol=1e-7, rtol=1e-6)


def test_kronecker_riemannian_adam_next_to_sphere():
    """log-det with a Kronecker Q = Q_L kron Q_R (minimum Q^-1 on the manifold) beside a
    Sphere parameter (the leading eigenvector of A), in one RiemannianAdam."""
    man = KroneckerSpectralSPD(A_, B_)
    g = torch.Generator().manual_seed(13)
    QL, QR = (torch.randn(k, k, dtype=F64, generator=g) for k in (A_, B_))
    Q = torch.kron(
        QL @ QL.T / A_ + torch.eye(A_, dtype=F64), QR @ QR.T / B_ + torch.eye(B_, dtype=F64)
    )
    f = _kron_loss(man, Q)
    x = geoopt.ManifoldParameter(man.origin(dtype=F64), manifold=man)
    sphere = geoopt.Sphere()
    A = _spd(14)
    w = geoopt.ManifoldParameter(sphere.random(N, dtype=F64), manifold=sphere)
    opt = geoopt.optim.RiemannianAdam([x, w], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        (f(x) - w @ A @ w).backward()
        opt.step()
    assert man.check_point_on_manifold(x.detach())
    S = man.to_matrix(x.detach())
    eye = torch.eye(A_ * B_, dtype=F64)
    assert float(torch.linalg.matrix_norm(S @ Q - eye)) < 1e-3
    assert float((w @ A @ w).detach()) > float(torch.linalg.eigvalsh(A)[-1]) - 1e-3


@pytest.mark.parametrize("adapter", ["spectral", "kronecker"])
def test_neumann_retraction_does_not_drift_off_the_orthogonal_group(adapter):
    """The truncated Cayley map is orthogonal only to ``2 rho^6`` a step; a stateless geoopt
    retraction must not let that add up: 600 retractions along large tangents (each clipped to
    the Neumann bound) leave every factor orthogonal to 1e-6 (without the correction the
    defect grows to about 0.1)."""
    g = torch.Generator().manual_seed(7)
    if adapter == "spectral":
        man = SpectralSPD(N, cayley="neumann")
        x = man.random(N + 1, N, dtype=F64, generator=g).as_subclass(torch.Tensor)
    else:
        man = KroneckerSpectralSPD(3, 4, cayley="neumann")
        x = man.random(dtype=F64, generator=g).as_subclass(torch.Tensor)
    for _ in range(600):
        u = man.proju(x, torch.randn(x.shape, dtype=F64, generator=g))
        if adapter == "kronecker":
            # rotations only: 5x the eigenvalue parts overflowed alpha and d_R to NaN within
            # ten steps (the retraction refuses that now), leaving the rest of the walk on
            # NaN eigenvalues
            n, GL, _, GR, _ = man.split(u)
            u = man.join(0 * n, GL, torch.zeros(3, dtype=F64), GR, torch.zeros(4, dtype=F64))
        x = man.retr(x, 5.0 * u)
    assert torch.isfinite(x).all()
    if adapter == "spectral":
        Bs = [unpack(x)[0]]
    else:
        _, BL, _, BR, _ = man.split(x)
        Bs = [BL, BR]
    for B in Bs:
        err = torch.linalg.matrix_norm(B.mT @ B - torch.eye(B.shape[-1], dtype=F64))
        assert float(err) < 1e-6


def test_from_matrix_and_random_check_their_input_like_the_core_manifold():
    """``from_matrix`` silently used ``Sym(S)``, built points of another size, and let
    ``eigh`` fail on NaN, (3, 4) and numpy input; ``random`` drew NaN eigenvalues for
    ``log_scale=nan``. Now the core manifold's checks, naming the argument."""
    man = SpectralSPD(3)
    S = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]], dtype=F64)
    nan = torch.full((3, 3), float("nan"), dtype=F64)
    for bad, exc, what in [
        (S, ValueError, "not symmetric"),
        (torch.eye(4, dtype=F64), ValueError, "shape"),
        (nan, ValueError, "NaN"),
        (torch.ones(3, 4, dtype=F64), ValueError, "shape"),
        (-torch.eye(3, dtype=F64), ValueError, "positive definite"),
        (torch.stack([torch.eye(3, dtype=F64), S]), ValueError, "not symmetric"),
        ("S", TypeError, "matrix"),
    ]:
        before = bad.clone() if isinstance(bad, torch.Tensor) else bad
        with pytest.raises(exc, match=f"S: .*{what}"):
            man.from_matrix(bad)
        if isinstance(bad, torch.Tensor):
            torch.testing.assert_close(bad, before, rtol=0, atol=0, equal_nan=True)
    # numpy and batches: the point of diag(1, 2, 3) is B = I (up to signs), d = (1, 2, 3)
    D = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    for given, batch in [(D.numpy(), ()), (D, ()), (torch.stack([D, 2 * D]), (2,))]:
        x = man.from_matrix(given)
        assert x.shape == (*batch, 4, 3) and x.dtype == F64
        B, d = unpack(x)
        want = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
        torch.testing.assert_close(d, torch.stack([want, 2 * want]) if batch else want)
        torch.testing.assert_close(B.abs(), torch.eye(3, dtype=F64).expand_as(B))
    for log_scale, exc in [(float("nan"), ValueError), (-1.0, ValueError), ("1", TypeError)]:
        for adapter in (man, KroneckerSpectralSPD(2, 3)):
            with pytest.raises(exc, match="log_scale"):
                adapter.random(dtype=F64, log_scale=log_scale)
    with pytest.raises(ValueError, match="log_scale"):  # exp(100 z) overflows float32
        man.random(dtype=torch.float32, log_scale=100.0, generator=torch.Generator())
