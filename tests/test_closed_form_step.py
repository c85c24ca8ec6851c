"""The closed-form precision step on a GOP (``closed_form_step``, paper Fig. 6 right and
App. A.1) against (1) the paper's box written out here from dense matrices, independently of
the package, and (2) the layered RGD step it replaces (``precision_egrad_eigenbasis`` ->
``natural_gradient_eigenbasis`` -> ``retr``), which ``Gaussian.precision_step`` no longer takes
for a GOP. float64: equal to rounding.
"""

from __future__ import annotations

import pytest
import torch

import manifold_spectral as ms
from manifold_spectral.gaussian import GOP, DenseCurvature, Gaussian, Rotated
from manifold_spectral.manifolds import DiagonalPoint, KroneckerSpectralPoint, SpectralPoint, blocks
from manifold_spectral.manifolds.kronecker import KroneckerGOP
from manifold_spectral.rgd import RGD

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel(u: torch.Tensor, v: torch.Tensor) -> float:
    return float((u - v).norm() / v.norm())


def paper_box(x, G: torch.Tensor, lam: float, beta2: float, gamma: float, c: float = 1.0):
    """Fig. 6 (right), one gradient matrix, exact Cayley, hard Moore-Penrose rule: dense
    ``S_l^-1``, ``Q_L = G S_R^-1 G^T``, ``Q_R = G^T S_L^-1 G``, ``W_l = B_l^T Q_l B_l`` plus the
    damping's ``lambda tr(S_other^-1) I`` (the GOP ``vec(G) vec(G)^T + lambda I``), then
    ``n_l = (1 - gamma beta2) d_l + beta2 diag(W_l) / (alpha kappa_l)``, the rotation
    ``B_l (I - N)^-1 (I + N)`` with ``N = Skew(Tril(U))``,
    ``U_ij = -beta2 W_ij / (2 alpha kappa_l (d_i - d_j))``, and the normalisation. ``c``:
    ``basis_scale``, the rotation's step ``c beta2`` (``U`` times ``c``), ``n_l`` unchanged."""
    a, b = G.shape
    alpha = x.alpha
    inv = {side: p.B @ torch.diag(1.0 / p.d) @ p.B.T for side, p in (("L", x.left), ("R", x.right))}
    out = {}
    for side, p, Q, kappa, other in (
        ("L", x.left, G @ inv["R"] @ G.T, b, inv["R"]),
        ("R", x.right, G.T @ inv["L"] @ G, a, inv["L"]),
    ):
        n = p.d.numel()
        W = p.B.T @ Q @ p.B + lam * torch.trace(other) * torch.eye(n, dtype=DT)
        nl = (1 - gamma * beta2) * p.d + beta2 * torch.diagonal(W) / (alpha * kappa)
        gap = p.d[:, None] - p.d[None, :]
        U = torch.zeros(n, n, dtype=DT)
        off = ~torch.eye(n, dtype=torch.bool)
        U[off] = -c * beta2 * W[off] / (2 * alpha * kappa * gap[off])
        L = torch.tril(U, -1)
        N = L - L.T
        I = torch.eye(n, dtype=DT)
        out[side] = (p.B @ torch.linalg.solve(I - N, I + N), nl)
    cL, cR = torch.log(out["L"][1]).mean(), torch.log(out["R"][1]).mean()
    return (
        alpha * torch.exp((cL + cR) / 2),
        out["L"][0],
        out["L"][1] / torch.exp(cL),
        out["R"][0],
        out["R"][1] / torch.exp(cR),
    )


@pytest.mark.parametrize("c", [1.0, 2.0, 0.5])  # basis_scale
@pytest.mark.parametrize("gamma", [1.0, 0.0])
@pytest.mark.parametrize("shape", [(3, 4), (5, 2), (4, 4)])  # square: both factors in one pass
def test_kronecker_closed_form_is_the_papers_box(shape, gamma, c):
    a, b = shape
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT, cayley="exact")
    x = K.random(gen(1))
    G = torch.randn(a, b, generator=gen(2), dtype=DT)
    lam, beta2 = 0.05, 0.3
    gauss = Gaussian(K, beta2=beta2, gamma=gamma, exponential="truncated", basis_scale=c)
    y = gauss.precision_step(x, GOP(G.reshape(-1), damping=lam), count=1)
    want = paper_box(x, G, lam, beta2, gamma, c)
    got = (y.alpha, y.left.B, y.left.d, y.right.B, y.right.d)
    for name, u, v in zip(("alpha", "B_L", "d_L", "B_R", "d_R"), got, want, strict=True):
        assert rel(u, v) < 1e-12, name


def layered(K, x, Ht, beta2, gamma, **rgd):
    G = K.precision_egrad_eigenbasis(x, Ht, gamma)
    return RGD(K, beta2, **rgd).step_eigenbasis(x, G, count=1)


def leaves(x):
    if isinstance(x, DiagonalPoint):
        return [x.d]
    return [x.alpha, x.left.B, x.left.d, x.right.B, x.right.d]


@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize(
    "opts",
    [
        dict(exponential="truncated", cayley="neumann", jacobi=True, gap=0.3),
        dict(exponential="exact", cayley="exact", jacobi=False, gap=0.0),
        dict(exponential="continued", cayley="neumann", jacobi=False, gap=0.05),
    ],
)
@pytest.mark.parametrize("shape", [(4, 3), (3, 3)])  # square: both factors in one pass
def test_kronecker_closed_form_equals_the_layered_step(opts, m, batch, shape):
    a, b = shape
    K = ms.KroneckerSpectralSPD(a, b, dtype=DT, gap_damping=opts["gap"], batch=batch)
    x = K.random(gen(3), log_scale=0.5)
    bs = () if batch is None else (batch,)
    V = torch.randn(*bs, a * b, m, generator=gen(4), dtype=DT)
    Ht = K.gop_eigenbasis(x, V, damping=0.02)
    rgd = dict(cayley=opts["cayley"], exponential=opts["exponential"], jacobi=opts["jacobi"])
    want = layered(K, x, Ht, 0.2, 1.0, **rgd)
    got = K.closed_form_step(x, Ht, 0.2, 1.0, **rgd)
    for u, v in zip(leaves(got), leaves(want), strict=True):
        assert rel(u, v) < 1e-12


@pytest.mark.parametrize("exponential", ["truncated", "exact"])
def test_diagonal_closed_form_is_rmsprop(exponential):
    """App. A.1: ``d <- (1 - gamma beta2) d + beta2 (g^2 + lambda)`` (truncated), and equal to
    the layered step for both maps."""
    D = ms.DiagonalSPD(6, dtype=DT)
    x = DiagonalPoint(torch.rand(6, generator=gen(5), dtype=DT) + 0.1)
    g = torch.randn(6, generator=gen(6), dtype=DT)
    Ht = D.gop_eigenbasis(x, g[:, None], damping=0.01)
    y = Gaussian(D, beta2=0.1, gamma=1.0, exponential=exponential).precision_step(x, GOP(g, 0.01))
    want = layered(D, x, Ht, 0.1, 1.0, exponential=exponential)
    assert rel(y.d, want.d) < 1e-14
    if exponential == "truncated":
        assert rel(y.d, 0.9 * x.d + 0.1 * (g * g + 0.01)) < 1e-14


def test_other_curvatures_take_the_layered_step():
    """A dense curvature has no closed form: ``closed_form_step`` declines it and
    ``Gaussian.precision_step`` gives the layered step."""
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    x = K.random(gen(7))
    A = torch.randn(6, 6, generator=gen(8), dtype=DT)
    H = A @ A.T
    Ht = K.rotate(x, H)
    assert K.closed_form_step(x, Ht, 0.1, 1.0) is None
    y = Gaussian(K, beta2=0.1).precision_step(x, DenseCurvature(H))
    want = layered(K, x, Ht, 0.1, 1.0)
    for u, v in zip(leaves(y), leaves(want), strict=True):
        assert rel(u, v) < 1e-14


def test_closed_form_rejects_a_wrong_gop_shape():
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    x = K.origin()
    bad = KroneckerGOP(torch.ones(1, 3, 2, dtype=DT), torch.tensor(0.0, dtype=DT))  # b, a
    with pytest.raises(ValueError, match="Z"):
        K.closed_form_step(x, bad, 0.1, 1.0)


def test_finish_step_refuses_a_driver_with_momentum():
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    with pytest.raises(ValueError, match="momentum"):
        RGD(K, 0.1, momentum=0.5).finish_step(K.origin())


def test_a_closed_form_step_off_the_manifold_is_rejected():
    """``RGD.finish_step`` checks the point: an overflowing closed-form step raises
    ``FloatingPointError`` (the optimizer keeps the previous curvature)."""
    K = ms.KroneckerSpectralSPD(2, 3, dtype=torch.float32)
    x = K.origin()
    Ht = K.gop_from_rotated(torch.full((2, 3), 1e30))
    with pytest.raises(FloatingPointError):
        Gaussian(K, beta2=0.5, exponential="truncated").precision_step(x, Rotated(Ht))


@pytest.mark.parametrize("scale", [1e200, 1e300])
def test_a_huge_finite_gradient_is_a_numerical_failure_not_a_linalg_error(scale):
    """Past ~1e300 the rotation's Cayley system ``I - N`` overflows to a singular matrix: the
    step fails the way it does at 1e200 (``FloatingPointError``, ``RGD.step``, the state
    unchanged), not with torch's ``LinAlgError`` from inside the solve."""
    M = ms.SpectralSPD(3, dtype=DT)
    x = M.random(gen(0))
    off = torch.zeros(3, 3, dtype=DT)
    off[0, 1] = off[1, 0] = scale
    E = x.B @ off @ x.B.T  # finite and symmetric; rotates the first two eigenvectors
    H = scale * torch.eye(3, dtype=DT)
    opt = RGD(M, lr=1.0, momentum=0.5)
    opt.step(x, torch.eye(3, dtype=DT))
    state = {"steps": opt.steps, "buffer": opt.buffer.clone()}
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    xK = K.random(gen(1))
    g = 1e150 * torch.randn(6, dtype=DT, generator=gen(2))  # the closed form's solve fails
    for call in (
        lambda: opt.step(x, E),
        lambda: Gaussian(M, beta2=0.1).precision_step(x, DenseCurvature(H)),
        lambda: Gaussian(K, beta2=0.1).precision_step(xK, GOP(g)),
    ):
        with pytest.raises(FloatingPointError, match="RGD.step: the step left the manifold"):
            call()
    assert opt.steps == state["steps"] and torch.equal(opt.buffer.m, state["buffer"].m)
    assert torch.equal(opt.buffer.M, state["buffer"].M)


def test_an_overflowing_retraction_is_caught_by_every_step_that_returns_it():
    """``retr`` leaves its result unchecked (no host synchronisation on the step path): with
    ``lr = 1e10`` ``d`` overflows to ``inf`` (or ``0`` backwards), which ``check_point``
    rejects; ``RGD`` and ``Gaussian``, which hand points to users, raise ``FloatingPointError``
    instead of returning it."""
    M = ms.SpectralSPD(3, dtype=DT)
    x = M.random(gen(0))
    eye = torch.eye(3, dtype=DT)
    g = M.natural_gradient(x, eye)
    for tangent, reason in [(g, "NaN or Inf"), (-g, "non-positive")]:
        y = M.retr(x, tangent, lr=1e10)
        ok, why = M.check_point(y)
        assert not ok and reason in why
    for call in (
        lambda: RGD(M, lr=1e10).step(x, eye),
        lambda: RGD(M, lr=1e10).step(x, -eye),
        lambda: Gaussian(M, beta2=1e10).precision_step(x, DenseCurvature(1e3 * eye)),
        lambda: Gaussian(M, beta2=1e10).precision_step(x, DenseCurvature(0 * eye)),
    ):
        with pytest.raises(FloatingPointError, match="left the manifold"):
            call()


def test_point_kinds_are_unchanged():
    """The result is the manifold's point type with the input's dtype."""
    K = ms.KroneckerSpectralSPD(3, 2, dtype=DT)
    x = K.random(gen(9))
    y = K.closed_form_step(x, K.gop_from_rotated(torch.ones(3, 2, dtype=DT)), 0.1, 1.0)
    assert isinstance(y, KroneckerSpectralPoint) and isinstance(y.left, SpectralPoint)
    assert all(t.dtype == DT for t in leaves(y))


def test_truncated_map_below_zero_still_raises_when_gamma_beta2_is_large():
    """``gamma beta2 < 1`` makes the closed form's ``n_l`` positive, so its positivity check is
    skipped; at ``gamma beta2 >= 1`` the check runs and a non-positive ``n_l`` raises
    ``TruncationError`` (the optimizer then takes the continued map)."""
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    Ht = K.gop_from_rotated(torch.full((2, 3), 1e-3, dtype=DT))
    with pytest.raises(blocks.TruncationError):
        K.closed_form_step(K.origin(), Ht, 1.5, 1.0, exponential="truncated")
    y = K.closed_form_step(K.origin(), Ht, 1.5, 1.0, exponential="continued")
    assert K.check_point(y)[0]


def test_gop_damping_must_not_be_negative():
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    with pytest.raises(ValueError, match="damping"):
        K.gop_from_rotated(torch.ones(2, 3, dtype=DT), -1.0)


def test_gop_damping_follows_each_call():
    """The 0-d damping tensor is made once per value: a later call with another damping (or
    the first again) carries its own value, never the previous call's."""
    K = ms.KroneckerSpectralSPD(2, 3, dtype=DT)
    Z = torch.ones(2, 3, dtype=DT)
    for lam in (0.5, 0.25, 0.5, 0.0):
        Ht = K.gop_from_rotated(Z, lam)
        assert Ht.damping.dtype == DT and Ht.damping.shape == ()
        assert float(Ht.damping) == lam


def test_the_optimizer_takes_the_closed_form(monkeypatch):
    """``SpectralKron``'s curvature steps (Kronecker, batched Kronecker and diagonal) never
    compose the layered step, whose tensor operations dominate the step of small layers."""
    from manifold_spectral.manifolds import DiagonalSPD, KroneckerSpectralSPD
    from manifold_spectral.optim import SpectralKron

    def layered(*args, **kwargs):
        raise AssertionError("layered precision step taken")

    for cls in (KroneckerSpectralSPD, DiagonalSPD):
        monkeypatch.setattr(cls, "precision_egrad_eigenbasis", layered)
    ps = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(3)] + [
        torch.nn.Parameter(torch.randn(5))
    ]
    opt = SpectralKron(ps, lr=1e-3)
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
    assert opt.skipped_steps == 0 and opt.curvature_rejections == 0


@pytest.mark.parametrize("exponential", ["truncated", "continued"])
def test_closed_forms_do_not_divide_before_the_eigenvalue_map(exponential):
    """float32: an eigenvalue at 1e-16 of the others and a curvature entry of 1e24 there. The
    quotient ``h / d`` of ``m = beta2 (h / d - gamma)`` is 1e40 (overflow), the new eigenvalue
    ``(1 - gamma beta2) d + beta2 h`` (1e23) is not: both closed forms return it, finite."""
    f32 = torch.float32
    D = ms.DiagonalSPD(3, dtype=f32)
    x = DiagonalPoint(torch.tensor([1.0, 1e-16, 2.0], dtype=f32))
    Ht = torch.tensor([1.0, 1e24, 1.0], dtype=f32)
    y = D.closed_form_step(x, Ht, 0.1, 1.0, exponential=exponential)
    want = 0.9 * x.d.double() + 0.1 * Ht.double()
    assert rel(y.d.double(), want) < 1e-6
    # Kronecker (alpha = 1): one gradient entry of 1e10 in the (second, first) eigenvector
    # pair, where d_L = 1e-14 and d_R = 1e-8: diag(W_l) / kappa_l = 3.3e27 and 5e33, whose
    # quotients by those eigenvalues (3e41, 5e41) overflow while the new ones do not.
    K = ms.KroneckerSpectralSPD(2, 3, dtype=f32)
    o = K.origin()
    dL = torch.tensor([1e14, 1e-14], dtype=f32)
    dR = torch.tensor([1e-8, 1e4, 1e4], dtype=f32)
    x = KroneckerSpectralPoint(o.alpha, SpectralPoint(o.left.B, dL), SpectralPoint(o.right.B, dR))
    Z = torch.zeros(2, 3, dtype=f32)
    Z[1, 0] = 1e10
    y = K.closed_form_step(x, K.gop_from_rotated(Z), 0.1, 1.0, exponential=exponential)
    assert K.check_point(y)[0]
    Z64, dL64, dR64 = Z.double(), dL.double(), dR.double()
    hL = ((Z64 / dR64) @ Z64.T).diagonal() / 3  # kappa_L = b = 3 (damping 0)
    hR = ((Z64.T / dL64) @ Z64).diagonal() / 2  # kappa_R = a = 2
    for got, d, h in ((y.left.d, dL64, hL), (y.right.d, dR64, hR)):
        n = 0.9 * d + 0.1 * h  # normalised by its geometric mean: compare the ratios
        assert rel(got.double() / got[0].double(), n / n[0]) < 1e-5


def test_basis_scale_is_refused_where_there_is_no_closed_form_and_checked():
    """``basis_scale != 1`` is a variant of the closed-form step: a dense curvature (layered
    step) and the second-order rotation refuse it by name, as ``updated_gaps``; a
    non-positive or NaN value is refused."""
    K = ms.KroneckerSpectralSPD(3, 2, dtype=DT)
    x = K.random(gen(1))
    H = torch.eye(6, dtype=DT)
    Gaussian(K, beta2=0.1).precision_step(x, DenseCurvature(H))  # c = 1: the layered step
    with pytest.raises(ValueError, match="^basis_scale: .*no closed-form step"):
        Gaussian(K, beta2=0.1, basis_scale=2.0).precision_step(x, DenseCurvature(H))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="basis_scale"):
            Gaussian(K, beta2=0.1, basis_scale=bad)
    # the second-order rotation takes no closed form: c would be ignored, silently
    Gaussian(K, beta2=0.1, second_order=True)  # c = 1
    with pytest.raises(ValueError, match="^basis_scale: .*not of second_order"):
        Gaussian(K, beta2=0.1, second_order=True, basis_scale=2.0)
