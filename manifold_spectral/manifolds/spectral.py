"""``SpectralSPD``: SPD matrices stored as their eigendecomposition ``S = B Diag(d) B^T``.

This module holds the points (construction, conversions, checks, re-orthogonalisation); the
chart, metric, gradients and retraction are ``spectral_chart``'s, the formulas of both in
``blocks``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import validation
from .._compat import moved_names
from ..linalg import (
    NEUMANN_MAX_NORM,
    all_true,
    as_dtype,
    eigh_canonical,
    haar_orthogonal,
    newton_schulz_orthogonalize,
    operand,
    orthogonality_error,
    sym,
    tie_runs,
)
from . import blocks
from .base import (
    SpectralManifold,
    check_batch,
    check_cayley,
    check_count,
    check_positive,
    check_real,
    check_size,
    check_tensor,
    resolve_dtype,
)
from .checks import (
    check_log_scale,
    check_positive_definite,
    eigenvalue_range,
    orthogonality_tol,
    probe_tol,
)
from .points import SpectralPoint
from .spectral_chart import SpectralChartMixin

__all__ = ["SpectralSPD", "orthogonality_tol", "check_positive_definite"]

#: Moved to ``manifold_spectral.validation``; the old names still work, with a warning.
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        ("resolve_device", "check_flag", "symmetric_matrix", "check_exponential"),
        validation.__name__,
    ),
)


class SpectralSPD(SpectralChartMixin, SpectralManifold):
    """Manifold of n x n SPD matrices in spectral coordinates ``S = B Diag(d) B^T``.

    Chart at ``(B, d)`` (paper Sec. 3.1, Claim 3): local coordinates ``eta = (m, M)``, ``m`` in
    R^n and ``M`` strictly lower triangular, mapped to ``d(m) = d * exp(m)`` and
    ``B(M) = B Cayley(Skew(M))``; in exact arithmetic every ``eta`` gives a valid point. In
    floating point a huge ``eta`` overflows: ``exp(m)`` to ``inf`` or ``0``, the Cayley system
    to a singular one. ``retr`` does not check its result (a check costs a host
    synchronisation, and its caller ``RGD`` makes one anyway): ``check_point`` detects it, and
    ``RGD`` and ``Gaussian`` raise ``FloatingPointError`` with their state unchanged. The
    Fisher-Rao metric of
    a Gaussian with precision ``S``, ``<dS, dS>_S = 1/2 tr(S^-1 dS S^-1 dS)``, is diagonal at
    the origin (Claim 4): ``F_mm = 1/2 I`` and ``F_{M_ij} = 4 (d_i - d_j)^2 / (d_i d_j)``.

    Args:
        n: matrix size.
        dtype: of every tensor of the points (default: torch's default dtype).
        device: of every tensor of the points (default: CPU).
        eig_tol: relative eigenvalue gap treated as "equal" (Moore-Penrose rule); default
            ``sqrt(eps(dtype))`` (see ``blocks.default_eig_tol``).
        gap_damping: ``rho >= 0``; if positive, the rotation block's pseudo-inverse is
            replaced by its Tikhonov form (``blocks.rotation_natural_grad``): rotations of
            pairs closer than ``rho`` (relative) are damped smoothly instead of cut at
            ``eig_tol``, so the step is a continuous function of the point and the gradient.
        gap_floor: ``f`` in ``[0, 1]``: with ``gap_damping``, pairs of eigenvalues both below
            ``f`` times the largest are damped as if at ``f`` times it
            (``blocks.inverse_gaps``); ``0``: no floor.
        cayley: default Cayley map of ``retr``: ``"exact"`` (a linear solve; ``B`` stays
            orthogonal to rounding) or ``"neumann"`` (matrix products only).
        neumann_max_norm: bound (< 1) on the spectral norm of ``Skew(M)`` before a Neumann
            Cayley map (``linalg.cayley_neumann``); the orthogonality defect per step is at
            most ``2 rho^6 + rho^12``.
        neumann_squarings: ``k >= 0``: the Neumann map by scaling and squaring,
            ``C(N / 2^k)^(2^k)`` (``linalg.cayley_neumann``): rotations up to ``2^k`` times
            the bound pass unshrunk, at ``k`` more products.
        batch: ``None`` (default) or ``k``: ``k`` independent n x n matrices updated by the
            same (batched) products. Points then hold ``B`` (k, n, n) and ``d`` (k, n),
            tangents ``m`` (k, n) and ``M`` (k, n, n), Euclidean gradients are (k, n, n) and
            ``gop_eigenbasis`` takes ``V`` (k, n, m). Every formula is the unbatched one acting
            on the last dimensions, so a batch equals k separate calls to rounding, not bit
            for bit (a batched product may add in another order than k single ones);
            ``from_matrix`` has no batched form.
    """

    def __init__(
        self,
        n: int,
        dtype: torch.dtype | None = None,
        device: Any = None,
        *,
        eig_tol: float | None = None,
        gap_damping: float = 0.0,
        gap_floor: float = 0.0,
        cayley: str = "exact",
        neumann_max_norm: float = NEUMANN_MAX_NORM,
        neumann_squarings: int = 0,
        batch: int | None = None,
    ) -> None:
        self.n = check_size(n, "n")
        self.batch = check_batch(batch)
        self.dtype = resolve_dtype(dtype)
        self.device = validation.resolve_device(device)
        self.eig_tol = (
            blocks.default_eig_tol(self.dtype)
            if eig_tol is None
            else check_positive(eig_tol, "eig_tol", allow_zero=True)
        )
        self.gap_damping = check_positive(gap_damping, "gap_damping", allow_zero=True)
        self.gap_floor = validation.check_fraction(gap_floor, "gap_floor")
        self.cayley = check_cayley(cayley)
        neumann_max_norm = check_positive(neumann_max_norm, "neumann_max_norm")
        if not neumann_max_norm < 1.0:
            raise ValueError(
                f"neumann_max_norm: expected a float in (0, 1), got {neumann_max_norm!r}"
            )
        self.neumann_max_norm = float(neumann_max_norm)
        self.neumann_squarings = check_count(neumann_squarings, "neumann_squarings")
        self.dim = n + n * (n - 1) // 2

    def __repr__(self) -> str:
        batch = "" if self.batch is None else f", batch={self.batch}"
        return f"SpectralSPD(n={self.n}, dtype={self.dtype}, device={self.device}{batch})"

    @property
    def egrad_shape(self) -> tuple[int, ...]:
        return (*self.batch_shape, self.n, self.n)

    def _tensor(self, t: Tensor) -> Tensor:
        return t.to(dtype=self.dtype, device=self.device)

    # Points ------------------------------------------------------------------------------

    def origin(self) -> SpectralPoint:
        """The identity matrix, ``B = I``, ``d = 1`` (every element of a batch)."""
        bs = self.batch_shape
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device).repeat(*bs, 1, 1)
        return SpectralPoint(eye, torch.ones(*bs, self.n, dtype=self.dtype, device=self.device))

    def random(
        self, generator: torch.Generator | None = None, log_scale: float = 1.0
    ) -> SpectralPoint:
        """Haar-random ``B`` (QR of a Gaussian, init-only) and ``log d ~ N(0, log_scale^2)``.

        ``ValueError`` naming ``log_scale`` if it is not a finite number >= 0, or if a drawn
        eigenvalue is not representable in the manifold's dtype (``inf`` or ``0``)."""
        log_scale = check_log_scale(log_scale)
        bs = self.batch_shape
        Q = haar_orthogonal(self.n, bs, generator)
        d = torch.exp(
            log_scale * torch.randn(*bs, self.n, generator=generator, dtype=torch.float64)
        )
        x = SpectralPoint(self._tensor(Q), self._tensor(d))
        return self._representable(
            x, "log_scale", f"log_scale = {log_scale:g} draws {eigenvalue_range(d)}"
        )

    def from_matrix(self, S: Any, *, sym_tol: float | None = None) -> SpectralPoint:
        """Spectral factors of a dense SPD matrix: the one eigendecomposition, at initialisation.

        Raises ``ValueError`` for a non-square, non-symmetric (relative asymmetry above
        ``sym_tol``, default ``sqrt(eps)``), non-finite or non-positive-definite ``S``, and
        for eigenvalues that the manifold's dtype cannot hold (``1e40 I`` in float32 would be
        ``d = inf``, ``1e-60 I`` ``d = 0``). Unbatched only.
        """
        self._unbatched_only("from_matrix")
        return self._from_matrix(S, "S", sym_tol)

    def _from_matrix(self, S: Any, name: str, sym_tol: float | None = None) -> SpectralPoint:
        """``from_matrix`` whose errors name the argument ``name`` (``S_L`` of a Kronecker
        factor, ...)."""
        S64, src_dtype = validation.symmetric_matrix(S, name, self.n, sym_tol)
        # Init-only; eigenvalues the chart step treats as equal get a basis fixed by S alone.
        tol = max(self.eig_tol, blocks.default_eig_tol(torch.float64))
        d, B = eigh_canonical(sym(S64), tol)
        check_positive_definite(d, src_dtype, name)
        x = SpectralPoint(self._tensor(B), self._tensor(d))
        return self._representable(x, name, eigenvalue_range(d))

    def to_matrix(self, x: SpectralPoint) -> Tensor:
        """``S = B Diag(d) B^T`` (*batch, n, n)."""
        self.validate_layout(x)
        return (x.B * x.d[..., None, :]) @ x.B.mT

    def power(self, x: SpectralPoint, r: float) -> Tensor:
        """``S^r = B Diag(d^r) B^T`` for any real ``r`` (elementwise on ``d``)."""
        self.validate_layout(x)
        check_real(r, "r")
        return (x.B * x.d.pow(r)[..., None, :]) @ x.B.mT

    def apply_power(self, x: SpectralPoint, v: Tensor, r: float) -> Tensor:
        """``S^r v = B (d^r * (B^T v))`` for ``v`` of shape (*batch, n) or (*batch, n, m);
        O(n^2 m)."""
        self.validate_layout(x)
        check_real(r, "r")
        check_tensor(v, "v", dtype=self.dtype, device=self.device, finite=False)
        bs, nb = self.batch_shape, len(self.batch_shape)
        if v.ndim - nb not in (1, 2) or tuple(v.shape[: nb + 1]) != (*bs, self.n):
            raise ValueError(
                f"v: expected shape {(*bs, self.n)} or {(*bs, self.n, 'm')}, got {tuple(v.shape)}"
            )
        # Batched vectors go through as (k, n, 1) columns (matmul has no batched mat-vec).
        column = bool(bs) and v.ndim == nb + 1
        v = v[..., None] if column else v
        dr = x.d.pow(r)
        w = x.B.mT @ v
        w = w * (dr if v.ndim == 1 else dr[..., :, None])
        out = x.B @ w
        return out[..., 0] if column else out

    def logdet(self, x: SpectralPoint) -> Tensor:
        """``log det S = sum(log d)`` (one per batch element)."""
        self.validate_layout(x)
        return torch.log(x.d).sum(-1)

    def dist(self, x: SpectralPoint, y: SpectralPoint) -> Tensor:
        """Fisher-Rao distance ``sqrt(1/2 sum log^2 lambda(S_x^-1 S_y))`` (one per batch
        element; ``blocks.fisher_rao_dist``): the length of the geodesic of the metric whose
        blocks the chart uses, ``1/sqrt(2)`` times the affine-invariant distance. Not a step:
        one singular-value decomposition (``blocks.log_relative_eigs``), after the full point
        checks of ``x`` and ``y`` (of the same order)."""
        self.validate_point(x)
        self.validate_point(y, "y")
        return blocks.fisher_rao_dist(blocks.log_relative_eigs(x.B, x.d, y.B, y.d))

    def check_point(self, x: Any, *, fast: bool = False) -> tuple[bool, str | None]:
        """``(ok, reason)``: shapes, dtype, device, finiteness, ``d > 0``, ``B^T B = I``.

        Full check: ``||B^T B - I||_F <= orthogonality_tol`` (O(n^3)). ``fast=True``: the
        probe ``||B^T (B v) - v|| <= probe_tol ||v||`` for a fixed generic ``v`` (O(n^2)).
        A batch passes when every element does; the reason names the first failing element
        (``"element i: ..."``).
        """
        if self._layout_ok(x) and bool(self._point_ok(x, fast)):
            return True, None
        fields = self._point_fields(x)
        if fields is None:
            return False, f"expected a SpectralPoint, got {type(x).__name__}"
        reason = self._check_point_tensors(fields)
        if reason:
            return False, reason
        fail = self._first_failure((x.d > 0).all(-1))
        if fail:
            return False, f"{fail[0]}d has non-positive entries"
        if fast:
            v = self._probe_vector()
            err = torch.linalg.vector_norm((x.B.mT @ (x.B @ v) - v).float(), dim=(-2, -1))
            tol = probe_tol(self.dtype)
            fail = self._first_failure(err <= tol)
            if fail:
                e = float(err[fail[1]])
                return False, f"{fail[0]}B is not orthogonal (probe error {e:.2e} > {tol:.1e})"
            return True, None
        err = orthogonality_error(x.B)
        tol = orthogonality_tol(self.dtype, self.n)
        fail = self._first_failure(err <= tol)
        if fail:
            e = float(err[fail[1]])
            return False, f"{fail[0]}B is not orthogonal (||B^T B - I||_F = {e:.2e} > {tol:.1e})"
        return True, None

    def _point_fields(self, x: Any) -> dict[str, tuple[Any, tuple[int, ...]]] | None:
        if not isinstance(x, SpectralPoint):
            return None
        return {"B": (x.B, (self.n, self.n)), "d": (x.d, (self.n,))}

    def _layout_ok(self, x: Any) -> bool:
        n, bs = self.n, self.batch_shape
        return (
            isinstance(x, SpectralPoint)
            and self._tensor_ok(x.B, (*bs, n, n))
            and self._tensor_ok(x.d, (*bs, n))
        )

    def _point_ok(self, x: SpectralPoint, fast: bool) -> Tensor:
        """Every condition of ``check_point`` on a point of the right layout, as one 0-d
        boolean: a valid point costs one host synchronisation; the field-by-field checks run
        only to explain a failure (a finite sum proves finite entries)."""
        return torch.isfinite(x.d.sum()) & (x.d > 0).all() & self._basis_ok(x.B, fast)

    def _basis_ok(self, B: Tensor, fast: bool) -> Tensor:
        """``B`` orthogonal (and so finite), as a 0-d boolean: ``fast``, the probe
        ``||B^T B v - v||`` of one fixed unit vector, else ``||B^T B - I||_F``. A NaN or Inf
        entry makes the probe or error NaN or Inf and the comparison false."""
        if fast:
            err = self._probe_error(B)
            return all_true(err <= operand(probe_tol(self.dtype), err))
        return all_true(orthogonality_error(B) <= orthogonality_tol(self.dtype, self.n))

    def _probe_error(self, B: Tensor) -> Tensor:
        """``||B^T B v - v||`` in float32 (batch-shaped) for the fixed unit vector ``v`` of
        ``_probe_vector``: the orthogonality probe of ``check_point(fast=True)``, compared
        with ``probe_tol``; NaN or Inf when ``B`` has a non-finite entry."""
        v = self._probe_vector()
        r = as_dtype(B.mT @ (B @ v) - v, torch.float32)
        return torch.linalg.vector_norm(r, dim=(-2, -1))

    def _probe_vector(self) -> Tensor:
        # A fixed unit column (n, 1) with no special structure (not an eigenvector of a
        # permutation or of a sign flip pattern), so gross non-orthogonality cannot hide
        # from it. Made once per manifold (dtype and device are fixed).
        v = self.__dict__.get("_probe")
        if v is None:
            i = torch.arange(1, self.n + 1, dtype=torch.float64)
            v = torch.cos(i * 2.399963229728653) + 0.5  # golden angle
            v = (v / torch.linalg.vector_norm(v))[:, None]
            v = self._probe = v.to(dtype=self.dtype, device=self.device)
        return v

    def split_ties(self, x: SpectralPoint, G: Tensor, lr: float) -> tuple[SpectralPoint, Tensor]:
        """Init-only: the basis of each cluster of repeated eigenvalues that an RGD step of
        ``lr`` cannot split, turned to the eigenvectors of the gradient's block; ``(x, G)``
        with ``G = B^T E B`` re-expressed in the new basis (the same objects where none needs it).

        At repeated eigenvalues the chart drops the gradient's off-diagonal block (the
        Moore-Penrose rule) and relies on the eigenvalue step ``d exp(-2 lr d diag(G))`` to
        split the cluster so that rotations follow. Where the step leaves a pair tied
        (``|d_i - d_j| <= eig_tol max(d_i, d_j)`` before and after) while ``G_ij != 0``, that
        never happens: from ``S = c I`` with a gradient of constant diagonal (``LogDet`` of a
        correlation matrix) every later step is the same and RGD stays at a scalar matrix. In
        the eigenvectors ``V`` of the cluster's block ``G_C`` the block is diagonal, ``S`` is
        unchanged (``d_C`` becomes the Rayleigh quotients ``diag(V^T D_C V)``, equal to ``d_C``
        for an exact tie) and the eigenvalue step is the Riemannian gradient step
        ``S - 2 lr S E S`` on the cluster to first order. One ``eigh`` per such cluster (a
        decomposition: call it once, on the first step from a point with ties, as
        ``spd.minimize`` does). Unbatched only.
        """
        self._unbatched_only("split_ties")
        self.validate_layout(x)
        G = self.validate_eigen_gradient(G)
        lr = check_positive(lr, "lr")
        tied = blocks.equal_eigenvalues(x.d, self.eig_tol)
        d_new = blocks.eig_retract(x.d, -lr * blocks.eig_natural_grad(x.d, G.diagonal()))
        stuck = tied & blocks.equal_eigenvalues(d_new, self.eig_tol) & (G != 0)
        stuck.fill_diagonal_(False)
        if not bool(stuck.any()):
            return x, G
        # Clusters: runs of consecutive sorted eigenvalues tied to their neighbour; only
        # those holding a stuck pair are turned.
        order = torch.argsort(x.d)
        W = torch.eye(self.n, dtype=self.dtype, device=self.device)
        d = x.d.clone()
        for start, stop in tie_runs(tied[order[:-1], order[1:]]):
            idx = order[start:stop]
            if bool(stuck[idx][:, idx].any()):
                Gc = G[idx][:, idx]  # init-only eigh, in float32 for 16-bit types (no kernel)
                low = Gc.dtype in (torch.float16, torch.bfloat16)
                V = torch.linalg.eigh(Gc.float() if low else Gc)[1].to(self.dtype)  # init-only
                W[idx[:, None], idx[None, :]] = V
                d[idx] = (V * V * x.d[idx][:, None]).sum(0)
        return SpectralPoint(x.B @ W, d), sym(W.mT @ G @ W)

    def reorthogonalize(self, x: SpectralPoint, steps: int = 1) -> SpectralPoint:
        """Newton-Schulz polar steps on ``B`` (no decomposition), to undo Neumann drift."""
        return SpectralPoint(newton_schulz_orthogonalize(x.B, steps), x.d)
