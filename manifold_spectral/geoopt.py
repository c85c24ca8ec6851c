"""``SpectralSPD`` (and ``KroneckerSpectralSPD``) as ``geoopt.Manifold``s: train spectral
factors with geoopt's optimizers.

A point is the pair of spectral factors ``(B, d)`` of ``S = B Diag(d) B^T`` packed in one
tensor of shape ``(*batch, n + 1, n)``::

    x[..., :n, :] = B   (orthogonal, n x n)
    x[..., n, :]  = d   (positive eigenvalues, the last row)

so that ``geoopt.ManifoldParameter(x, manifold=SpectralSPD(n))`` trains it with
``geoopt.optim.RiemannianSGD`` / ``RiemannianAdam`` next to any geoopt manifold (Stiefel,
Sphere, ...), in one optimizer. The loss is usually a function of ``S = to_matrix(x)``;
autograd then gives the Euclidean gradient of the packed tensor,
``(dL/dB, dL/dd) = (2 Sym(E) B Diag(d), diag(B^T E B))`` with ``E = dL/dS``, and any other
function of ``(B, d)`` works too.

Tangent vectors are ambient, of the point's shape: ``u = (U, u_d)`` with ``B^T U`` skew
(the tangent space of O(n) x R^n). They correspond to the chart coordinates of DESIGN.md
section 2 at ``x`` by ``m = u_d / d`` and ``M = Tril(Omega) / 2`` with ``Omega = B^T U``
(the chart's differential is ``dB = 2 B Skew(M)``, ``dd = d * m``). Every method goes through
these coordinates and the closed forms of ``manifolds.blocks``:

* ``inner``: the Fisher-Rao metric at the chart origin (Claim 4),
  ``<u, v>_x = sum(F_mm m_u m_v) + sum_{i>j} C_ij M_u,ij M_v,ij``, which equals
  ``1/2 tr(S^-1 dS_u S^-1 dS_v)`` for the induced ``dS``;
* ``egrad2rgrad``: the chart gradient ``df/dm = d * g_d``, ``df/dM_ij = 2 (A_ij - A_ji)``
  (``A = B^T dL/dB``), times the Moore-Penrose inverse of the diagonal metric (entries with
  ``|d_i - d_j| <= eig_tol * max(d_i, d_j)`` are 0, as in ``SpectralSPD.natural_gradient``),
  mapped back to an ambient tangent. For a loss of ``S`` this is exactly the library's
  ``natural_gradient``, so ``RiemannianSGD(lr)`` takes the library's RGD step;
* ``retr`` (and ``expmap``, which is the same map): the chart map at ``u``,
  ``(B Cayley(Skew(M)), d exp(m))`` — no decomposition, one solve (``cayley="exact"``) or
  four products (``"neumann"``). It is a retraction, not the exponential map of the metric;
* ``transp``: transport by left translation in the group O(n) x R^n_{>0}: the chart
  coordinates are kept, ``(U, u_d) at x -> (B_y B_x^T U, d_y * u_d / d_x) at y``;
  linear, the identity when ``y = x``, tangent to tangent (not an isometry: the metric
  depends on ``d``).

``projx`` (an SVD polar factor and a positive floor on ``d``) and ``from_matrix`` (one
``eigh``) are for initialisation and geoopt's occasional ``stabilize``; no training step
calls a decomposition. geoopt's ``weight_decay`` adds the packed point to its gradient,
which has no meaning here: leave it at 0.

``KroneckerSpectralSPD(a, b)`` does the same for ``S = alpha (S_L kron S_R)`` (DESIGN.md
section 3), packed flat; see its docstring.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._compat import import_geoopt
from .linalg import NEUMANN_MAX_NORM, check_cayley, haar_orthogonal, skew, tril
from .manifolds import blocks
from .manifolds.base import check_positive, check_size

geoopt = import_geoopt()

__all__ = ["SpectralSPD", "KroneckerSpectralSPD", "pack", "unpack", "ROTATIONS"]

#: Rotation steps of ``retr``: the chart map itself (``"linear"``), each pair turned by its
#: exact 2 x 2 Jacobi angle (``"jacobi"``, ``blocks.jacobi_angles``) or by the second-order
#: angles (``"second_order"``, ``blocks.second_order_angles``). All three agree to first
#: order (each is a retraction with the same differential); see ``SpectralSPD.retr``.
ROTATIONS = ("linear", "jacobi", "second_order")


def pack(B: Tensor, d: Tensor) -> Tensor:
    """The packed point ``[B; d^T]`` of shape ``(*batch, n + 1, n)``."""
    return torch.cat([B, d[..., None, :]], dim=-2)


def unpack(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, d)`` views of a packed point (or ``(U, u_d)`` of a packed tangent)."""
    return x[..., :-1, :], x[..., -1, :]


# Factor-level pieces shared by both manifolds (one spectral factor B Diag(d) B^T, whose
# metric blocks carry the weight kappa: 1 for a full matrix, the other factor's size for a
# Kronecker factor, Claim 6).


def _coords(B: Tensor, d: Tensor, U: Tensor, ud: Tensor) -> tuple[Tensor, Tensor]:
    """Chart coordinates of an ambient tangent: ``m = u_d / d``, ``M = Tril(A - A^T) / 4``
    with ``A = B^T U`` (``Tril(Omega) / 2`` of the skew part ``Omega = (A - A^T) / 2``)."""
    A = B.mT @ U
    return ud / d, tril(A - A.mT) * 0.25


def _ambient(B: Tensor, d: Tensor, m: Tensor, M: Tensor) -> tuple[Tensor, Tensor]:
    """Ambient tangent ``(2 B Skew(M), d * m)`` of chart coordinates ``(m, M)``."""
    return 2.0 * (B @ skew(tril(M))), d * m


def _metric(d: Tensor, mu: Tensor, Mu: Tensor, mv: Tensor, Mv: Tensor, kappa: float) -> Tensor:
    """``sum(F_mm m_u m_v) + sum_{i>j} kappa C_ij M_u,ij M_v,ij`` (``blocks`` metric)."""
    eig = (blocks.eig_metric(d, kappa) * mu * mv).sum(-1)
    return eig + (blocks.rotation_metric(d, kappa) * Mu * Mv).sum((-2, -1))


def _rotation_rgrad(B: Tensor, d: Tensor, GB: Tensor, tol: float, kappa: float) -> Tensor:
    """Ambient rotation part ``B Omega`` of ``F^+ grad_eta f``: chart gradient
    ``df/dM_ij = 2 (A_ij - A_ji)``, ``A = B^T G_B``, over ``kappa C_ij`` (0 where
    ``|d_i - d_j| <= tol max(d_i, d_j)``, Moore-Penrose); both triangles at once, since
    ``Omega = 2 Skew(M) = 4 (A - A^T) / (kappa (C + C^T))`` off the diagonal."""
    A = B.mT @ GB
    C = blocks.rotation_metric(d, kappa)
    C = C + C.mT
    # The mask holds the diagonal and every exactly equal pair, where C = 0.
    zero = blocks.equal_eigenvalues(d, tol)
    Omega = (A - A.mT).mul_(4.0).div_(C.masked_fill_(zero, 1.0)).masked_fill_(zero, 0.0)
    return B @ Omega


def _rotate(
    B: Tensor, d: Tensor, d_new: Tensor, M: Tensor, cayley: str, max_norm: float, rotation: str
) -> Tensor:
    """``B Cayley(Skew(M))`` with the chosen rotation angles (``blocks.rotation_retract``)."""
    return blocks.rotation_retract(
        B,
        M,
        cayley,
        max_norm,
        jacobi=rotation == "jacobi",
        second_order=(d, d_new) if rotation == "second_order" else None,
    )


def _skew_part(B: Tensor, U: Tensor) -> Tensor:
    """Euclidean projection of ``U`` onto the tangent space of O(n) at ``B``."""
    A = B.mT @ U
    return B @ (0.5 * (A - A.mT))


def _orthogonal(B: Tensor, atol: float, rtol: float) -> bool:
    eye = torch.eye(B.shape[-1], dtype=B.dtype, device=B.device)
    return torch.allclose(B.mT @ B, eye.expand_as(B), atol=atol, rtol=rtol)


def _polar(B: Tensor) -> Tensor:
    """Nearest orthogonal matrix (SVD polar factor; init-only / ``stabilize``)."""
    P, _, Qt = torch.linalg.svd(B)  # init-only
    return P @ Qt


def _size(manifold: Any, size: tuple[Any, ...], default: tuple[int, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    size = tuple(size) or default
    manifold._assert_check_shape(size, "x")
    return size


class _ChartTransport:
    """What both adapters share: the chart retraction stands for the exponential map, and
    vectors are transported by keeping their chart coordinates (left translation)."""

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """The chart retraction ``retr`` (a first-order approximation of the exponential map)."""
        return self.retr(x, u)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Left-translation transport: chart coordinates of ``v`` at ``x`` kept at ``y``."""
        return self.from_chart_coordinates(y, *self.chart_coordinates(x, v))

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``y = retr(x, u)`` and ``transp(x, y, v)``."""
        y = self.retr(x, u)
        return y, self.transp(x, y, v)

    def expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.retr_transp(x, u, v)

    def transp_follow_retr(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return self.retr_transp(x, u, v)[1]

    def transp_follow_expmap(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return self.retr_transp(x, u, v)[1]


class SpectralSPD(_ChartTransport, geoopt.Manifold):
    """SPD matrices ``S = B Diag(d) B^T`` as a geoopt manifold of packed factors ``[B; d^T]``.

    Metric: the Fisher-Rao metric ``1/2 tr(S^-1 dS S^-1 dS)`` in the spectral chart (half of
    geoopt's ``SymmetricPositiveDefinite`` affine-invariant metric ``tr(S^-1 dS S^-1 dS)``,
    so its Riemannian gradients are twice geoopt's). Retraction: the chart map. See the
    module docstring for the packing and every formula.

    Args:
        n: matrix size; points have shape ``(*batch, n + 1, n)``.
        eig_tol: relative eigenvalue gap treated as equal (Moore-Penrose rule); default
            ``blocks.default_eig_tol(dtype)`` of the point, ``sqrt(eps)``.
        cayley: ``"exact"`` (a linear solve) or ``"neumann"`` (products only; the argument is
            rescaled to a spectral-norm bound ``neumann_max_norm``).
        rotation: the rotation step of ``retr``, one of ``ROTATIONS``: ``"linear"`` (the chart
            map; default), ``"jacobi"`` or ``"second_order"`` (bounded angles at nearly equal
            eigenvalues, as ``spd.minimize`` uses by default).
    """

    name = "SpectralSPD"
    ndim = 2
    reversible = False

    def __init__(
        self,
        n: int,
        *,
        eig_tol: float | None = None,
        cayley: str = "exact",
        neumann_max_norm: float = NEUMANN_MAX_NORM,
        rotation: str = "linear",
    ) -> None:
        super().__init__()
        self.n = check_size(n, "n")
        self.eig_tol = (
            None if eig_tol is None else check_positive(eig_tol, "eig_tol", allow_zero=True)
        )
        self.cayley = check_cayley(cayley)
        self.neumann_max_norm = check_positive(neumann_max_norm, "neumann_max_norm")
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
        self.rotation = rotation

    def extra_repr(self) -> str:
        return f"n={self.n}, cayley={self.cayley!r}, rotation={self.rotation!r}"

    # Conversions -------------------------------------------------------------------------

    def to_matrix(self, x: Tensor) -> Tensor:
        """``S = B Diag(d) B^T`` (differentiable; ``(*batch, n, n)``)."""
        B, d = unpack(x)
        return (B * d[..., None, :]) @ B.mT

    def power(self, x: Tensor, r: float) -> Tensor:
        """``S^r = B Diag(d^r) B^T`` for any real ``r`` (elementwise on ``d``)."""
        B, d = unpack(x)
        return (B * d.pow(r)[..., None, :]) @ B.mT

    def from_matrix(self, S: Tensor) -> Tensor:
        """Packed factors of a symmetric positive-definite ``S`` (one ``eigh``, init-only)."""
        d, B = torch.linalg.eigh(0.5 * (S + S.mT))  # init-only
        if not bool((d > 0).all()):
            raise ValueError(f"S: not positive definite (smallest eigenvalue {float(d.min()):.3e})")
        return pack(B, d)

    def _tol(self, x: Tensor) -> float:
        return blocks.default_eig_tol(x.dtype) if self.eig_tol is None else self.eig_tol

    def chart_coordinates(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Chart coordinates ``(m, M)`` of an ambient tangent ``u`` at ``x``:
        ``m = u_d / d``, ``M = Tril(Omega) / 2`` with ``Omega = (A - A^T) / 2``, ``A = B^T U``
        (the skew part, so a non-tangent ``u`` is read through its projection)."""
        return _coords(*unpack(x), *unpack(u))

    def from_chart_coordinates(self, x: Tensor, m: Tensor, M: Tensor) -> Tensor:
        """Ambient tangent ``(2 B Skew(M), d * m)`` of chart coordinates ``(m, M)`` at ``x``."""
        return pack(*_ambient(*unpack(x), m, M))

    # geoopt's contract -----------------------------------------------------------------------

    def _check_shape(self, shape: tuple[int, ...], name: str) -> tuple[bool, str | None]:
        if len(shape) < 2 or tuple(shape[-2:]) != (self.n + 1, self.n):
            return False, f"`{name}` expected shape (*, {self.n + 1}, {self.n}), got {tuple(shape)}"
        return True, None

    def _check_point_on_manifold(
        self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        B, d = unpack(x)
        if not _orthogonal(B, atol, rtol):
            return False, "B is not orthogonal (B^T B != I)"
        if not bool((d > 0).all()):
            return False, "d has non-positive entries"
        return True, None

    def _check_vector_on_tangent(
        self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        B, _ = unpack(x)
        U, _ = unpack(u)
        A = B.mT @ U
        if not torch.allclose(A, -A.mT, atol=atol, rtol=rtol):
            return False, "B^T U is not skew-symmetric"
        return True, None

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Euclidean projection onto the tangent space: ``(B Skew-part(B^T U), u_d)``."""
        B, _ = unpack(x)
        U, ud = unpack(u)
        return pack(_skew_part(B, U), ud)

    def projx(self, x: Tensor) -> Tensor:
        """Nearest orthogonal ``B`` (SVD polar factor) and ``d`` floored at
        ``eps * max|d|`` (init-only / ``stabilize``; never in a step)."""
        B, d = unpack(x)
        floor = torch.finfo(x.dtype).eps * d.abs().amax(-1, keepdim=True).clamp_min(1.0)
        return pack(_polar(B), torch.maximum(d, floor))

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """Fisher-Rao metric ``sum(F_mm m_u m_v) + sum_{i>j} C_ij M_u,ij M_v,ij`` (Claim 4)."""
        _, d = unpack(x)
        mu, Mu = self.chart_coordinates(x, u)
        mv, Mv = (mu, Mu) if v is None else self.chart_coordinates(x, v)
        out = _metric(d, mu, Mu, mv, Mv, 1.0)
        return out[..., None, None] if keepdim else out

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        """Riemannian gradient ``F^+ grad_eta f`` as an ambient tangent.

        Chart gradient at the origin from the packed Euclidean gradient ``(G_B, g_d)``:
        ``df/dm = d * g_d`` (``blocks.eig_local_grad``), ``df/dM_ij = 2 (A_ij - A_ji)`` with
        ``A = B^T G_B`` (i > j); divided by the metric blocks ``F_mm`` and ``C_ij``, 0 where
        ``C_ij`` is (numerically) zero.
        """
        B, d = unpack(x)
        GB, gd = unpack(u)
        m = blocks.eig_local_grad(d, gd) / blocks.eig_metric(d)
        return pack(_rotation_rgrad(B, d, GB, self._tol(x), 1.0), d * m)

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        """Chart map at ``u``: ``(B Cayley(Skew(M)), d exp(m))`` (``blocks`` retractions)."""
        B, d = unpack(x)
        m, M = self.chart_coordinates(x, u)
        d_new = blocks.eig_retract(d, m)
        return pack(
            _rotate(B, d, d_new, M, self.cayley, self.neumann_max_norm, self.rotation), d_new
        )

    def random(
        self,
        *size: Any,
        dtype: torch.dtype | None = None,
        device: Any = None,
        generator: torch.Generator | None = None,
        log_scale: float = 1.0,
    ) -> Tensor:
        """Haar-random ``B`` (QR of a Gaussian, init-only), ``log d ~ N(0, log_scale^2)``.

        ``size`` defaults to ``(n + 1, n)``; leading dimensions make a batch.
        """
        size = _size(self, size, (self.n + 1, self.n))
        bs = size[:-2]
        Q = haar_orthogonal(self.n, bs, generator)
        d = torch.exp(
            log_scale * torch.randn(*bs, self.n, generator=generator, dtype=torch.float64)
        )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return geoopt.ManifoldTensor(pack(Q, d).to(dtype=dtype, device=device), manifold=self)

    def origin(
        self,
        *size: Any,
        dtype: torch.dtype | None = None,
        device: Any = None,
        seed: int | None = 42,
    ) -> Tensor:
        """The identity matrix: ``B = I``, ``d = 1`` (a canonical basis; see DESIGN.md
        section 2 on repeated eigenvalues). ``seed`` is unused."""
        size = _size(self, size, (self.n + 1, self.n))
        dtype = torch.get_default_dtype() if dtype is None else dtype
        eye = torch.eye(self.n, dtype=dtype, device=device).expand(*size[:-2], self.n, self.n)
        ones = torch.ones(*size[:-2], self.n, dtype=dtype, device=device)
        return geoopt.ManifoldTensor(pack(eye, ones), manifold=self)


class KroneckerSpectralSPD(_ChartTransport, geoopt.Manifold):
    """``S = alpha (S_L kron S_R)`` with spectral, unit-determinant factors, as a geoopt
    manifold of one flat tensor (DESIGN.md section 3, Claims 5 and 6).

    Packing, ``(*batch, 1 + a^2 + a + b^2 + b)``::

        [alpha, vec(B_L) (row-major), d_L, vec(B_R), d_R],   sum(log d_l) = 0

    (``split`` / ``join`` convert; ``factors(x)`` gives ``(alpha, S_L, S_R)``.) Tangents are
    ambient of the same shape, ``B_l^T U_l`` skew and ``sum(u_l / d_l) = 0``, with chart
    coordinates ``n = u_alpha / alpha``, ``m_l = u_l / d_l`` (sum zero) and
    ``M_l = Tril(B_l^T U_l) / 2``. Metric (Claim 6): ``F_nn = ab / 2``,
    ``F_{m_l} = (kappa_l / 2) I`` on sum-zero vectors, ``F_{M_l} = kappa_l C_ij`` with
    ``kappa_L = b``, ``kappa_R = a``. ``egrad2rgrad``: ``n = 2 alpha g_alpha / (ab)``,
    ``m_l = (2 / kappa_l) center(d_l g_l)``, the rotation part as in ``SpectralSPD``
    divided by ``kappa_l`` (for a loss of ``S`` this is the library's
    ``KroneckerSpectralSPD.natural_gradient``). ``retr``: ``alpha e^n``,
    ``d_l e^{m_l}``, ``B_l Cayley(Skew(M_l))``, then ``det S_l = 1`` restored by moving
    ``geomean(d_l)`` into ``alpha`` (rounding for a tangent ``u``). ``transp``: chart
    coordinates kept (left translation), as in ``SpectralSPD``.

    Args:
        a, b: factor sizes (``S`` is ab x ab).
        eig_tol, cayley, neumann_max_norm, rotation: as for ``SpectralSPD``, per factor.
    """

    name = "KroneckerSpectralSPD"
    ndim = 1
    reversible = False

    def __init__(
        self,
        a: int,
        b: int,
        *,
        eig_tol: float | None = None,
        cayley: str = "exact",
        neumann_max_norm: float = NEUMANN_MAX_NORM,
        rotation: str = "linear",
    ) -> None:
        super().__init__()
        self.a, self.b = check_size(a, "a"), check_size(b, "b")
        self.numel = 1 + a * a + a + b * b + b
        self.eig_tol = (
            None if eig_tol is None else check_positive(eig_tol, "eig_tol", allow_zero=True)
        )
        self.cayley = check_cayley(cayley)
        self.neumann_max_norm = check_positive(neumann_max_norm, "neumann_max_norm")
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
        self.rotation = rotation
        # kappa_l: the size of the other factor (Claim 6).
        self.kappa = (float(b), float(a))

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}, cayley={self.cayley!r}, rotation={self.rotation!r}"

    # Packing -------------------------------------------------------------------------------

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(alpha, B_L, d_L, B_R, d_R)`` views of a packed point (or tangent)."""
        a, b = self.a, self.b
        i = [1, 1 + a * a, 1 + a * a + a, 1 + a * a + a + b * b]
        return (
            x[..., 0],
            x[..., i[0] : i[1]].unflatten(-1, (a, a)),
            x[..., i[1] : i[2]],
            x[..., i[2] : i[3]].unflatten(-1, (b, b)),
            x[..., i[3] :],
        )

    @staticmethod
    def join(alpha: Tensor, BL: Tensor, dL: Tensor, BR: Tensor, dR: Tensor) -> Tensor:
        """The packed tensor ``[alpha, vec(B_L), d_L, vec(B_R), d_R]``."""
        parts = [alpha[..., None], BL.flatten(-2), dL, BR.flatten(-2), dR]
        return torch.cat(parts, dim=-1)

    def factors(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(alpha, S_L, S_R)`` (differentiable)."""
        alpha, BL, dL, BR, dR = self.split(x)
        return alpha, (BL * dL[..., None, :]) @ BL.mT, (BR * dR[..., None, :]) @ BR.mT

    def to_matrix(self, x: Tensor) -> Tensor:
        """``S = alpha (S_L kron S_R)``, (*batch, ab, ab) (research sizes)."""
        alpha, SL, SR = self.factors(x)
        K = SL[..., :, None, :, None] * SR[..., None, :, None, :]
        return alpha[..., None, None] * K.reshape(*K.shape[:-4], self.a * self.b, self.a * self.b)

    def _tol(self, x: Tensor) -> float:
        return blocks.default_eig_tol(x.dtype) if self.eig_tol is None else self.eig_tol

    def chart_coordinates(
        self, x: Tensor, u: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``(n, (m_L, M_L), (m_R, M_R))`` of an ambient tangent ``u`` at ``x``."""
        alpha, BL, dL, BR, dR = self.split(x)
        ua, UL, uL, UR, uR = self.split(u)
        return ua / alpha, _coords(BL, dL, UL, uL), _coords(BR, dR, UR, uR)

    def from_chart_coordinates(
        self, x: Tensor, n: Tensor, left: tuple[Tensor, Tensor], right: tuple[Tensor, Tensor]
    ) -> Tensor:
        """Ambient tangent of chart coordinates at ``x`` (inverse of ``chart_coordinates``)."""
        alpha, BL, dL, BR, dR = self.split(x)
        UL, uL = _ambient(BL, dL, *left)
        UR, uR = _ambient(BR, dR, *right)
        return self.join(alpha * n, UL, uL, UR, uR)

    # geoopt's contract ---------------------------------------------------------------------

    def _check_shape(self, shape: tuple[int, ...], name: str) -> tuple[bool, str | None]:
        if len(shape) < 1 or shape[-1] != self.numel:
            return False, f"`{name}` expected shape (*, {self.numel}), got {tuple(shape)}"
        return True, None

    def _check_point_on_manifold(
        self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        alpha, BL, dL, BR, dR = self.split(x)
        if not bool((alpha > 0).all()):
            return False, "alpha is not positive"
        for name, B, d in (("L", BL, dL), ("R", BR, dR)):
            if not _orthogonal(B, atol, rtol):
                return False, f"B_{name} is not orthogonal"
            if not bool((d > 0).all()):
                return False, f"d_{name} has non-positive entries"
            if float(torch.log(d).sum(-1).abs().max()) > atol * d.shape[-1]:
                return False, f"det S_{name} != 1 (sum(log d_{name}) != 0)"
        return True, None

    def _check_vector_on_tangent(
        self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        _, BL, dL, BR, dR = self.split(x)
        _, UL, uL, UR, uR = self.split(u)
        for name, B, d, U, ud in (("L", BL, dL, UL, uL), ("R", BR, dR, UR, uR)):
            A = B.mT @ U
            if not torch.allclose(A, -A.mT, atol=atol, rtol=rtol):
                return False, f"B_{name}^T U_{name} is not skew-symmetric"
            tr = (ud / d).sum(-1).abs()
            if not bool((tr <= atol + rtol * torch.linalg.vector_norm(ud / d, dim=-1)).all()):
                return False, f"sum(u_{name} / d_{name}) != 0 (the determinant constraint)"
        return True, None

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Euclidean projection: skew part for each ``B_l``, and ``u_l`` minus its component
        along ``1 / d_l`` (the normal of ``sum(log d_l) = 0``)."""
        _, BL, dL, BR, dR = self.split(x)
        ua, UL, uL, UR, uR = self.split(u)
        out = []
        for B, d, U, ud in ((BL, dL, UL, uL), (BR, dR, UR, uR)):
            w = 1.0 / d
            ud = ud - ((ud * w).sum(-1, keepdim=True) / (w * w).sum(-1, keepdim=True)) * w
            out += [_skew_part(B, U), ud]
        return self.join(ua, *out)

    def projx(self, x: Tensor) -> Tensor:
        """Polar ``B_l``, positive ``d_l`` rescaled to determinant 1 with the scale moved into
        ``alpha`` (init-only / ``stabilize``)."""
        alpha, BL, dL, BR, dR = self.split(x)
        tiny = torch.finfo(x.dtype).tiny
        dL, dR = dL.clamp_min(tiny), dR.clamp_min(tiny)
        cL, cR = torch.log(dL).mean(-1), torch.log(dR).mean(-1)
        alpha = alpha.clamp_min(tiny) * torch.exp(cL + cR)
        dL, dR = dL * torch.exp(-cL)[..., None], dR * torch.exp(-cR)[..., None]
        return self.join(alpha, _polar(BL), dL, _polar(BR), dR)

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """``(ab / 2) n_u n_v + sum_l [(kappa_l / 2) m_u . m_v + kappa_l sum C M_u M_v]``."""
        _, _, dL, _, dR = self.split(x)
        nu, Lu, Ru = self.chart_coordinates(x, u)
        nv, Lv, Rv = (nu, Lu, Ru) if v is None else self.chart_coordinates(x, v)
        out = 0.5 * self.a * self.b * nu * nv
        out = out + _metric(dL, *Lu, *Lv, self.kappa[0]) + _metric(dR, *Ru, *Rv, self.kappa[1])
        return out[..., None] if keepdim else out

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        """``F^+ grad_eta f`` (Claim 6 blocks) as an ambient tangent; see the class docstring."""
        alpha, BL, dL, BR, dR = self.split(x)
        ga, GL, gL, GR, gR = self.split(u)
        tol = self._tol(x)
        n = 2.0 * alpha * ga / (self.a * self.b)
        out = []
        for B, d, GB, gd, kappa in (
            (BL, dL, GL, gL, self.kappa[0]),
            (BR, dR, GR, gR, self.kappa[1]),
        ):
            local = blocks.eig_local_grad(d, gd)
            m = blocks.eig_natural_grad(d, gd, kappa) - (2.0 / kappa) * local.mean(-1, keepdim=True)
            out += [_rotation_rgrad(B, d, GB, tol, kappa), d * m]
        return self.join(alpha * n, *out)

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        """Chart map at ``u``, then ``det S_l = 1`` restored into ``alpha`` (``S`` unchanged)."""
        alpha, BL, dL, BR, dR = self.split(x)
        n, (mL, ML), (mR, MR) = self.chart_coordinates(x, u)
        new, logs = [], []
        for B, d, m, M in ((BL, dL, mL, ML), (BR, dR, mR, MR)):
            d_new = blocks.eig_retract(d, m)
            # Rounding for a tangent u (sum(m) = 0); a non-tangent u's mean(m) goes to alpha.
            c = torch.log(d_new).mean(-1)
            d_new = d_new * torch.exp(-c)[..., None]
            logs.append(c)
            B_new = _rotate(B, d, d_new, M, self.cayley, self.neumann_max_norm, self.rotation)
            new += [B_new, d_new]
        return self.join(alpha * torch.exp(n + logs[0] + logs[1]), *new)

    def random(
        self,
        *size: Any,
        dtype: torch.dtype | None = None,
        device: Any = None,
        generator: torch.Generator | None = None,
        log_scale: float = 1.0,
    ) -> Tensor:
        """Haar-random ``B_l`` (init-only), ``log d_l ~ N(0, log_scale^2)`` centred,
        ``log alpha ~ N(0, log_scale^2)``. ``size`` defaults to ``(numel,)``."""
        size = _size(self, size, (self.numel,))
        bs = size[:-1]
        parts = []
        for s in (self.a, self.b):
            logd = log_scale * torch.randn(*bs, s, generator=generator, dtype=torch.float64)
            parts += [
                haar_orthogonal(s, bs, generator),
                torch.exp(logd - logd.mean(-1, keepdim=True)),
            ]
        alpha = torch.exp(log_scale * torch.randn(bs, generator=generator, dtype=torch.float64))
        x = self.join(alpha, *parts)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return geoopt.ManifoldTensor(x.to(dtype=dtype, device=device), manifold=self)

    def origin(
        self,
        *size: Any,
        dtype: torch.dtype | None = None,
        device: Any = None,
        seed: int | None = 42,
    ) -> Tensor:
        """The identity: ``alpha = 1``, ``B_l = I``, ``d_l = 1``. ``seed`` is unused."""
        size = _size(self, size, (self.numel,))
        bs = size[:-1]
        dtype = torch.get_default_dtype() if dtype is None else dtype
        kw = dict(dtype=dtype, device=device)
        parts = []
        for s in (self.a, self.b):
            parts += [torch.eye(s, **kw).expand(*bs, s, s), torch.ones(*bs, s, **kw)]
        x = self.join(torch.ones(bs, **kw), *parts)
        return geoopt.ManifoldTensor(x, manifold=self)
