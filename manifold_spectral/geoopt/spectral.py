"""``SpectralSPD`` as a ``geoopt.Manifold`` of packed factors ``[B; d^T]`` (see the package
docstring for the packing and every formula)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._compat import import_geoopt
from ..linalg import NEUMANN_MAX_NORM
from ..manifolds import SpectralSPD as CoreSpectralSPD
from ..manifolds import blocks
from ..manifolds.base import check_real, check_size
from ..manifolds.checks import check_log_scale
from .factor import (
    _ambient,
    _ChartTransport,
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
    pack,
    unpack,
)

geoopt = import_geoopt()

__all__ = ["SpectralSPD"]


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
            map), ``"jacobi"`` or ``"second_order"`` (bounded angles at nearly equal
            eigenvalues, as ``spd.minimize`` uses by default); ``None`` (default): ``"jacobi"``
            with the Neumann map, ``"linear"`` with the exact one (``factor._set_options``).
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
        rotation: str | None = None,
    ) -> None:
        super().__init__()
        self.n = check_size(n, "n")
        _set_options(self, eig_tol, cayley, neumann_max_norm, rotation)

    def extra_repr(self) -> str:
        return f"n={self.n}, cayley={self.cayley!r}, rotation={self.rotation!r}"

    def _parts(self, t: Tensor, name: str, like: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``unpack(t)`` after ``factor._check_packed``: a tensor of shape
        ``(*batch, n + 1, n)`` and, for a vector at the point ``like``, its dtype and device."""
        what = f"packed [B; d^T] of SpectralSPD({self.n})"
        _check_packed(t, name, (self.n + 1, self.n), what, like)
        return unpack(t)

    def _chart(self, x: Tensor, u: Tensor, name: str) -> tuple[Tensor, Tensor]:
        """``chart_coordinates(x, u)`` with the vector checked under ``name``."""
        return _coords(*self._parts(x, "x"), *self._parts(u, name, like=x))

    # Conversions -------------------------------------------------------------------------

    def to_matrix(self, x: Tensor) -> Tensor:
        """``S = B Diag(d) B^T`` (differentiable; ``(*batch, n, n)``)."""
        B, d = self._parts(x, "x")
        return (B * d[..., None, :]) @ B.mT

    def power(self, x: Tensor, r: float) -> Tensor:
        """``S^r = B Diag(d^r) B^T`` for any real ``r`` (elementwise on ``d``); ``r`` is checked
        as by ``manifold_spectral.SpectralSPD.power`` (NaN, Inf or a bool: an error naming it)."""
        B, d = self._parts(x, "x")
        check_real(r, "r")
        return (B * d.pow(r)[..., None, :]) @ B.mT

    def _core(
        self, dtype: torch.dtype | None, device: Any, batch: int | None = None
    ) -> CoreSpectralSPD:
        """The library manifold of these points, whose checks the constructors reuse."""
        return CoreSpectralSPD(self.n, dtype, device, eig_tol=self.eig_tol, batch=batch)

    def from_matrix(self, S: Any, *, sym_tol: float | None = None) -> Tensor:
        """Packed factors of a symmetric positive-definite ``S`` (one ``eigh`` per matrix,
        init-only): ``(n, n)`` or a batch ``(*batch, n, n)``, a tensor (the point keeps its
        floating dtype and device) or an array (float64, CPU).

        The checks of ``manifold_spectral.SpectralSPD.from_matrix``, which computes the
        factors: ``TypeError``/``ValueError`` naming ``S`` for a non-matrix, a wrong shape,
        NaN/Inf, a non-symmetric (relative asymmetry above ``sym_tol``, default
        ``sqrt(eps)``) or non-positive-definite matrix.
        """
        floating = isinstance(S, Tensor) and S.dtype.is_floating_point
        dtype = S.dtype if floating else torch.float64
        device = S.device if isinstance(S, Tensor) else None
        core = self._core(dtype, device)
        if not isinstance(S, Tensor) or S.ndim <= 2:
            x = core.from_matrix(S, sym_tol=sym_tol)
            return pack(x.B, x.d)
        if tuple(S.shape[-2:]) != (self.n, self.n):
            raise ValueError(
                f"S: expected shape (*batch, {self.n}, {self.n}), got {tuple(S.shape)}"
            )
        lead = S.shape[:-2]
        if S.numel() == 0:  # an empty batch: no matrix to decompose, no point to stack
            return pack(S.new_empty(*lead, self.n, self.n), S.new_empty(*lead, self.n))
        points = [core.from_matrix(Si, sym_tol=sym_tol) for Si in S.reshape(-1, self.n, self.n)]
        B = torch.stack([x.B for x in points]).reshape(*lead, self.n, self.n)
        d = torch.stack([x.d for x in points]).reshape(*lead, self.n)
        return pack(B, d)

    def _tol(self, x: Tensor) -> float:
        return blocks.default_eig_tol(x.dtype) if self.eig_tol is None else self.eig_tol

    def chart_coordinates(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Chart coordinates ``(m, M)`` of an ambient tangent ``u`` at ``x``:
        ``m = u_d / d``, ``M = Tril(Omega) / 2`` with ``Omega = (A - A^T) / 2``, ``A = B^T U``
        (the skew part, so a non-tangent ``u`` is read through its projection)."""
        return self._chart(x, u, "u")

    def from_chart_coordinates(self, x: Tensor, m: Tensor, M: Tensor) -> Tensor:
        """Ambient tangent ``(2 B Skew(M), d * m)`` of chart coordinates ``(m, M)`` at ``x``."""
        return pack(*_ambient(*self._parts(x, "x"), m, M))

    # geoopt's contract -----------------------------------------------------------------------

    def _check_shape(self, shape: tuple[int, ...], name: str) -> tuple[bool, str | None]:
        if len(shape) < 2 or tuple(shape[-2:]) != (self.n + 1, self.n):
            return False, f"`{name}` expected shape (*, {self.n + 1}, {self.n}), got {tuple(shape)}"
        return True, None

    def _check_point_on_manifold(
        self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        B, d = self._parts(x, "x")
        if not bool(torch.isfinite(x).all()):  # an infinite d or alpha passes the "> 0" tests
            return False, "x contains NaN or Inf"
        if not _orthogonal(B, atol, rtol):
            return False, "B is not orthogonal (B^T B != I)"
        if not bool((d > 0).all()):
            return False, "d has non-positive entries"
        return True, None

    def _check_vector_on_tangent(
        self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        B, _ = self._parts(x, "x")
        U, _ = self._parts(u, "u", like=x)
        A = B.mT @ U
        if not torch.allclose(A, -A.mT, atol=atol, rtol=rtol):
            return False, "B^T U is not skew-symmetric"
        return True, None

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Euclidean projection onto the tangent space: ``(B Skew-part(B^T U), u_d)``."""
        B, _ = self._parts(x, "x")
        U, ud = self._parts(u, "u", like=x)
        return pack(_skew_part(B, U), ud)

    def projx(self, x: Tensor) -> Tensor:
        """Nearest orthogonal ``B`` (SVD polar factor) and ``d`` floored at
        ``eps * max(max|d|, 1)`` (``factor._floor_positive``: a condition number of at most
        ``1 / eps``; init-only / ``stabilize``, never in a step). NaN or Inf in ``B`` or
        ``d``: ``NonFiniteError`` (a ``ValueError``) naming ``x`` (``factor._projected_factor``)."""
        B, d = self._parts(x, "x")
        return pack(*_projected_factor(B, d, ("B", "d")))

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """Fisher-Rao metric ``sum(F_mm m_u m_v) + sum_{i>j} C_ij M_u,ij M_v,ij`` (Claim 4)."""
        _, d = self._parts(x, "x")
        mu, Mu = self._chart(x, u, "u")
        mv, Mv = (mu, Mu) if v is None else self._chart(x, v, "v")
        out = _metric(d, mu, Mu, mv, Mv, 1.0)
        return out[..., None, None] if keepdim else out

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Fisher-Rao distance ``sqrt(1/2 sum log^2 lambda(S_x^-1 S_y))``, the geodesic distance
        of ``inner`` (``manifold_spectral.SpectralSPD.dist``; geoopt's
        ``SymmetricPositiveDefinite`` distance divided by ``sqrt 2``). Differentiable."""
        B1, d1 = self._parts(x, "x")
        B2, d2 = self._parts(y, "y", like=x)
        out = blocks.fisher_rao_dist(blocks.log_relative_eigs(B1, d1, B2, d2))
        return out[..., None, None] if keepdim else out

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        """Riemannian gradient ``F^+ grad_eta f`` as an ambient tangent.

        Chart gradient at the origin from the packed Euclidean gradient ``(G_B, g_d)``:
        ``df/dm = d * g_d`` (``blocks.eig_local_grad``), ``df/dM_ij = 2 (A_ij - A_ji)`` with
        ``A = B^T G_B`` (i > j); divided by the metric blocks ``F_mm`` and ``C_ij``, 0 where
        ``C_ij`` is (numerically) zero.
        """
        B, d = self._parts(x, "x")
        GB, gd = self._parts(u, "u", like=x)
        m = blocks.eig_local_grad(d, gd) / blocks.eig_metric(d)
        return pack(_rotation_rgrad(B, d, GB, self._tol(x), 1.0), d * m)

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        """Chart map at ``u``: ``(B Cayley(Skew(M)), d exp(m))`` (``blocks`` retractions)."""
        B, d = self._parts(x, "x")
        m, M = self._chart(x, u, "u")
        d_new = blocks.eig_retract(d, m)
        B_new = _rotate(B, d, d_new, M, self.cayley, self.neumann_max_norm, self.rotation)
        return self._finite_step(x, pack(B_new, d_new))

    def random(
        self,
        *size: Any,
        dtype: torch.dtype | None = None,
        device: Any = None,
        generator: torch.Generator | None = None,
        log_scale: float = 1.0,
    ) -> Tensor:
        """Haar-random ``B`` (QR of a Gaussian, init-only), ``log d ~ N(0, log_scale^2)``.

        ``size`` defaults to ``(n + 1, n)``; leading dimensions make a batch. The draw and the
        checks of ``manifold_spectral.SpectralSPD.random``: ``ValueError`` naming
        ``log_scale`` if it is not a finite number >= 0 or draws an eigenvalue that ``dtype``
        cannot hold.
        """
        size = _size(self, size, (self.n + 1, self.n))
        bs = size[:-2]
        # The core manifold is batched along one dimension: draw math.prod(bs) points (the
        # same normals in the same order as a (*bs)-shaped draw) and restore the shape.
        k = math.prod(bs)
        if bs and k == 0:
            check_log_scale(log_scale)
            empty = torch.empty(*size, dtype=dtype, device=device)
            return geoopt.ManifoldTensor(empty, manifold=self)
        x = self._core(dtype, device, k if bs else None).random(generator, log_scale)
        point = pack(x.B.reshape(*bs, self.n, self.n), x.d.reshape(*bs, self.n))
        return geoopt.ManifoldTensor(point, manifold=self)

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
