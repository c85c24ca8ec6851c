"""``KroneckerSpectralSPD`` as a ``geoopt.Manifold`` of one flat tensor (DESIGN.md section 3,
Claims 5 and 6; see its docstring for the packing and the formulas)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._compat import import_geoopt
from ..linalg import NEUMANN_MAX_NORM, haar_orthogonal
from ..linalg_init import check_generator
from ..manifolds import blocks
from ..manifolds.base import check_size
from ..manifolds.checks import check_log_scale, det_tol
from ..manifolds.kronecker_metric import kronecker_log_relative_eigs
from .factor import (
    _ambient,
    _ChartTransport,
    _check_factors,
    _check_packed,
    _coords,
    _metric,
    _orthogonal,
    _projected_factor,
    _rotate,
    _rotation_rgrad,
    _set_options,
    _size,
    _skew_part,
)

geoopt = import_geoopt()

__all__ = ["KroneckerSpectralSPD"]


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
        rotation: str | None = None,
    ) -> None:
        super().__init__()
        self.a, self.b = check_size(a, "a"), check_size(b, "b")
        self.numel = 1 + a * a + a + b * b + b
        _set_options(self, eig_tol, cayley, neumann_max_norm, rotation)
        # kappa_l: the size of the other factor (Claim 6).
        self.kappa = (float(b), float(a))

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}, cayley={self.cayley!r}, rotation={self.rotation!r}"

    # Packing -------------------------------------------------------------------------------

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(alpha, B_L, d_L, B_R, d_R)`` views of a packed point (or tangent); ``ValueError``
        naming ``x`` for a tensor whose last dimension is not ``numel``."""
        return self._parts(x, "x")

    def _parts(
        self, t: Tensor, name: str, like: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``split(t)`` after ``factor._check_packed``: a tensor of shape ``(*batch, numel)``
        and, for a vector at the point ``like``, its dtype and device."""
        what = f"packed [alpha, vec(B_L), d_L, vec(B_R), d_R] of {self.name}({self.a}, {self.b})"
        _check_packed(t, name, (self.numel,), what, like)
        a, b = self.a, self.b
        i = [1, 1 + a * a, 1 + a * a + a, 1 + a * a + a + b * b]
        return (
            t[..., 0],
            t[..., i[0] : i[1]].unflatten(-1, (a, a)),
            t[..., i[1] : i[2]],
            t[..., i[2] : i[3]].unflatten(-1, (b, b)),
            t[..., i[3] :],
        )

    @staticmethod
    def join(alpha: Tensor, BL: Tensor, dL: Tensor, BR: Tensor, dR: Tensor) -> Tensor:
        """The packed tensor ``[alpha, vec(B_L), d_L, vec(B_R), d_R]``; ``TypeError`` for a
        factor that is not a tensor, ``ValueError`` naming every shape unless they are
        ``(*batch)``, ``(*batch, a, a)``, ``(*batch, a)``, ``(*batch, b, b)``, ``(*batch, b)``:
        the flat packing keeps no sizes, so factors swapped or of mismatched sizes with the
        right total would be split into other factors (metadata only)."""
        _check_factors("join", alpha=alpha, BL=BL, dL=dL, BR=BR, dR=dR)
        batch = tuple(alpha.shape)
        a = BL.shape[-1] if BL.ndim else -1
        b = BR.shape[-1] if BR.ndim else -1
        want = [(*batch, a, a), (*batch, a), (*batch, b, b), (*batch, b)]
        got = [tuple(t.shape) for t in (BL, dL, BR, dR)]
        if got != want:
            shapes = ", ".join(map(str, [batch, *got]))
            raise ValueError(
                "join: expected alpha (*batch), B_L (*batch, a, a), d_L (*batch, a), "
                f"B_R (*batch, b, b), d_R (*batch, b), got shapes {shapes}"
            )
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
        return self._chart(x, u, "u")

    def _chart(
        self, x: Tensor, u: Tensor, name: str
    ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``chart_coordinates(x, u)`` with the vector checked under ``name``."""
        alpha, BL, dL, BR, dR = self.split(x)
        ua, UL, uL, UR, uR = self._parts(u, name, like=x)
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
        if not bool(torch.isfinite(x).all()):  # an infinite d or alpha passes the "> 0" tests
            return False, "x contains NaN or Inf"
        if not bool((alpha > 0).all()):
            return False, "alpha is not positive"
        for name, B, d in (("L", BL, dL), ("R", BR, dR)):
            if not _orthogonal(B, atol, rtol):
                return False, f"B_{name} is not orthogonal"
            if not bool((d > 0).all()):
                return False, f"d_{name} has non-positive entries"
            # In float32 at least, to the core check's tolerance at least (det_tol: a 16-bit
            # d_l is rounded once, so |log det| reaches s eps / 2, above geoopt's 1e-5 s).
            logdet = torch.log(d.float() if d.dtype in (torch.float16, torch.bfloat16) else d)
            tol = max(atol * d.shape[-1], det_tol(d.dtype, d.shape[-1]))
            if float(logdet.sum(-1).abs().max()) > tol:
                return False, f"det S_{name} != 1 (sum(log d_{name}) != 0)"
        return True, None

    def _check_vector_on_tangent(
        self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        _, BL, dL, BR, dR = self.split(x)
        _, UL, uL, UR, uR = self._parts(u, "u", like=x)
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
        ua, UL, uL, UR, uR = self._parts(u, "u", like=x)
        out = []
        for B, d, U, ud in ((BL, dL, UL, uL), (BR, dR, UR, uR)):
            w = 1.0 / d
            ud = ud - ((ud * w).sum(-1, keepdim=True) / (w * w).sum(-1, keepdim=True)) * w
            out += [_skew_part(B, U), ud]
        return self.join(ua, *out)

    def projx(self, x: Tensor) -> Tensor:
        """Polar ``B_l``; ``d_l`` floored at ``eps * max(max|d_l|, 1)`` (the rule of
        ``SpectralSPD.projx``), then rescaled to determinant 1 with the scale moved into
        ``alpha``; ``alpha`` replaced by ``|alpha|``, or by 1 where that is 0 or not finite
        (init-only / ``stabilize``).

        The relative floor bounds each factor's condition number by ``1 / eps``, so the result
        passes ``check_point_on_manifold`` and its metric is finite. ``alpha`` multiplies the
        whole matrix, so no floor relative to other entries applies to it: a positive ``alpha``
        is kept whatever its size; a negative one becomes ``|alpha|``, which makes
        ``|alpha| (S_L kron S_R)`` the positive polar factor ``(S^T S)^(1/2)`` of
        ``S = alpha (S_L kron S_R)`` (same eigenvectors, eigenvalue magnitudes kept); 0, NaN
        and +-Inf carry no usable scale and become 1, the scale of ``origin``. NaN or Inf in
        ``B_l`` or ``d_l`` raises ``NonFiniteError`` (a ``ValueError``) naming ``x``, as in
        ``SpectralSPD.projx``.
        """
        alpha, BL, dL, BR, dR = self.split(x)
        BL, dL = _projected_factor(BL, dL, ("B_L", "d_L"))
        BR, dR = _projected_factor(BR, dR, ("B_R", "d_R"))
        cL, cR = torch.log(dL).mean(-1), torch.log(dR).mean(-1)
        alpha = alpha.abs()
        alpha = torch.where(torch.isfinite(alpha) & (alpha > 0), alpha, torch.ones_like(alpha))
        # In logs: the factors' scales can overflow alone where the product does not.
        alpha = torch.exp(torch.log(alpha) + cL + cR)
        dL, dR = dL * torch.exp(-cL)[..., None], dR * torch.exp(-cR)[..., None]
        return self.join(alpha, BL, dL, BR, dR)

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """``(ab / 2) n_u n_v + sum_l [(kappa_l / 2) m_u . m_v + kappa_l sum C M_u M_v]``."""
        _, _, dL, _, dR = self.split(x)
        nu, Lu, Ru = self._chart(x, u, "u")
        nv, Lv, Rv = (nu, Lu, Ru) if v is None else self._chart(x, v, "v")
        out = 0.5 * self.a * self.b * nu * nv
        out = out + _metric(dL, *Lu, *Lv, self.kappa[0]) + _metric(dR, *Ru, *Rv, self.kappa[1])
        return out[..., None] if keepdim else out

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Fisher-Rao distance ``sqrt(1/2 sum_ij (log(alpha_y/alpha_x) + l_i + r_j)^2)``, the
        geodesic distance of ``inner`` (``manifold_spectral.KroneckerSpectralSPD.dist``).
        Differentiable."""
        parts = self._parts(x, "x"), self._parts(y, "y", like=x)
        out = blocks.fisher_rao_dist(kronecker_log_relative_eigs(*parts), dims=2)
        return out[..., None] if keepdim else out

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        """``F^+ grad_eta f`` (Claim 6 blocks) as an ambient tangent; see the class docstring."""
        alpha, BL, dL, BR, dR = self.split(x)
        ga, GL, gL, GR, gR = self._parts(u, "u", like=x)
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
        n, (mL, ML), (mR, MR) = self._chart(x, u, "u")
        new, logs = [], []
        for B, d, m, M in ((BL, dL, mL, ML), (BR, dR, mR, MR)):
            d_new = blocks.eig_retract(d, m)
            # Rounding for a tangent u (sum(m) = 0); a non-tangent u's mean(m) goes to alpha.
            c = torch.log(d_new).mean(-1)
            d_new = d_new * torch.exp(-c)[..., None]
            logs.append(c)
            B_new = _rotate(B, d, d_new, M, self.cayley, self.neumann_max_norm, self.rotation)
            new += [B_new, d_new]
        return self._finite_step(x, self.join(alpha * torch.exp(n + logs[0] + logs[1]), *new))

    def random(
        self,
        *size: Any,
        dtype: torch.dtype | None = None,
        device: Any = None,
        generator: torch.Generator | None = None,
        log_scale: float = 1.0,
    ) -> Tensor:
        """Haar-random ``B_l`` (init-only), ``log d_l ~ N(0, log_scale^2)`` centred,
        ``log alpha ~ N(0, log_scale^2)``. ``size`` defaults to ``(numel,)``. ``ValueError``
        naming ``log_scale`` if it is not a finite number >= 0 (the core manifolds' rule)."""
        log_scale = check_log_scale(log_scale)
        generator = check_generator(generator)
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
