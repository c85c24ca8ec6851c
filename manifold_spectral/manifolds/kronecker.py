"""``KroneckerSpectralSPD``: ``S = alpha (S_L kron S_R)`` with spectral, unit-determinant factors.

For a weight matrix ``W`` (a x b) and row-major ``vec`` (torch's ``flatten``),
``S vec(X) = alpha vec(S_L X S_R)``. Each factor is a spectral point
``S_l = B_l Diag(d_l) B_l^T`` with ``det S_l = 1`` (``sum(log d_l) = 0``); together with
``alpha > 0`` this makes the factorisation unique (paper Claim 5).

The chart, the Fisher-Rao metric and the retraction are those of paper Claim 6; they live
in ``kronecker_chart`` (chart, ``retr``, free coordinates) and ``kronecker_metric`` (metric
blocks, gradients, curvature in the eigenbasis), the GOP step in closed form in
``kronecker_gop``, the dense conversions from and to matrices in ``kronecker_dense``, the
tensor trees in ``kronecker_points``, the point checks in ``kronecker_checks``. This module
holds the manifold class that combines them (points, the eigenbasis maps), and every public
name of them.

With ``batch=k`` the manifold holds ``k`` such matrices of the same shape (e.g. ``k``
same-shaped layers) and updates them with one set of batched products: every tensor below
gains a leading dimension of size ``k`` and every formula acts per element; with
``sizes`` too, ``k`` matrices of different shapes padded to one (``kronecker_padding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..linalg import NEUMANN_MAX_NORM, as_dtype, matmul, operand
from ..validation import resolve_device
from .base import (
    SpectralManifold,
    check_batch,
    check_real,
    check_size,
    check_tensor,
)
from .checks import check_log_scale, value_range
from .kronecker_chart import KroneckerChartMixin
from .kronecker_checks import KroneckerChecksMixin
from .kronecker_dense import KroneckerDenseMixin
from .kronecker_gop import KroneckerGOPStepMixin
from .kronecker_metric import KroneckerMetricMixin, sum_zero_metric, sum_zero_metric_inverse
from .kronecker_padding import KroneckerPadding, check_sizes
from .kronecker_points import (
    KroneckerDenseCurvature,
    KroneckerEigenGradient,
    KroneckerGOP,
    KroneckerGOPSides,
    KroneckerSpectralPoint,
    KroneckerSpectralTangent,
)
from .points import SpectralPoint
from .spectral import SpectralSPD

__all__ = [
    "KroneckerSpectralSPD",
    "KroneckerSpectralPoint",
    "KroneckerSpectralTangent",
    "KroneckerEigenGradient",
    "KroneckerGOP",
    "KroneckerGOPSides",
    "KroneckerDenseCurvature",
    "sum_zero_metric",
    "sum_zero_metric_inverse",
]


class KroneckerSpectralSPD(
    KroneckerChecksMixin,
    KroneckerMetricMixin,
    KroneckerChartMixin,
    KroneckerGOPStepMixin,
    KroneckerDenseMixin,
    SpectralManifold,
):
    """Kronecker-structured SPD matrices ``alpha (S_L kron S_R)`` in spectral coordinates.

    Args:
        a: size of the left factor (rows of the weight matrix).
        b: size of the right factor (columns).
        dtype: of every tensor of the points (default: torch's default dtype).
        device: of every tensor of the points (default: CPU).
        eig_tol: Moore-Penrose rule of the factors (see ``SpectralSPD``).
        gap_damping: Tikhonov form of that rule (see ``SpectralSPD``).
        gap_floor: the floor of its scale (see ``SpectralSPD``).
        cayley: default Cayley map of ``retr``, ``"exact"`` or ``"neumann"``.
        neumann_max_norm: spectral-norm bound (< 1) on each factor's Neumann Cayley argument.
        neumann_squarings: each factor's Neumann map by scaling and squaring (see
            ``SpectralSPD``).
        batch: ``None`` (default) or ``k``: ``k`` same-shaped matrices updated by one set of
            batched products (``k`` layers of the same shape). Points: ``alpha`` (k,),
            ``B_L`` (k, a, a), ``d_L`` (k, a), ``B_R`` (k, b, b), ``d_R`` (k, b); GOP inputs:
            ``gop_eigenbasis(x, V)`` with ``V`` (k, ab, m) (``m`` gradient columns per
            element) gives ``Z`` (k, m, a, b); ``apply_power_matrix`` takes (k, a, b). The
            dense (ab, ab) paths (``to_matrix``, ``power``, ``metric_matrix``,
            ``from_matrix``, ``from_kronecker``, ``from_factors``, dense ``egrad``/curvature)
            raise ``NotImplementedError`` when batched.
        sizes: with ``batch=k``, the true shapes ``(a_i, b_i)`` (at most ``(a, b)``) of
            ``k`` matrices padded with identity factors (``kronecker_padding``): the GOP step
            ``closed_form_step``, point checks, ``normalize``, ``origin`` and the
            eigenbasis maps act on each true block as the unpadded manifold would; the
            other paths raise ``NotImplementedError``.

    The Euclidean gradient ``egrad`` is a dense (ab, ab) matrix (row-major pairs), meant for
    research sizes; curvature learning from gradient matrices goes through
    ``gop_eigenbasis`` and never forms an (ab, ab) matrix.

    Cost of one GOP update from one gradient matrix (flops, products of a x a, a x b, b x b):
    ``Z = B_L^T G B_R`` 2ab(a + b); ``W_L, W_R`` 2ab(a + b); natural gradient O(a^2 + b^2);
    Neumann Cayley maps 6a^3 + 6b^3 (three products each, and one more per squarings ``k``);
    ``B_l <- B_l C_l`` 2a^3 + 2b^3; preconditioning ``alpha^r S_L^r G S_R^r`` 4ab(a + b). For
    a = b = n: (32 + 4k) n^3, i.e. 16 + 2k n x n matrix products, of which a
    precondition-only step needs 4. ``S^-1`` is never
    formed; the exact Cayley map replaces the four Neumann products (three for the map, one
    for ``B_l C_l``) by one LU solve.
    """

    def __init__(
        self,
        a: int,
        b: int,
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
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        a, b = check_size(a, "a"), check_size(b, "b")
        self.batch = check_batch(batch)
        opts = dict(
            eig_tol=eig_tol,
            gap_damping=gap_damping,
            gap_floor=gap_floor,
            cayley=cayley,
            neumann_max_norm=neumann_max_norm,
            neumann_squarings=neumann_squarings,
            batch=self.batch,
        )
        self.left = SpectralSPD(a, dtype, device, **opts)
        self.right = SpectralSPD(b, dtype, device, **opts)
        self.a, self.b = a, b
        self.dtype = self.left.dtype
        self.device = resolve_device(device)
        self.cayley = self.left.cayley
        self.neumann_max_norm = self.left.neumann_max_norm
        self.neumann_squarings = self.left.neumann_squarings
        self.eig_tol = self.left.eig_tol
        #: ``kappa_L = b``, ``kappa_R = a``: the size of the other factor (Claim 6); per
        #: element (a (k,) tensor) in a padded batch.
        self.kappa_L: float | Tensor = float(b)
        self.kappa_R: float | Tensor = float(a)
        #: ``None``, or the true sizes of a padded batch (``kronecker_padding``).
        self.padding: KroneckerPadding | None = None
        if sizes is not None:
            pairs = check_sizes(sizes, a, b, self.batch)
            if any(s != (a, b) for s in pairs):
                self.padding = KroneckerPadding(pairs, a, b, self.dtype, self.device)
                self.kappa_L, self.kappa_R = self.padding.size_R, self.padding.size_L
        self.dim = 1 + (a - 1) + a * (a - 1) // 2 + (b - 1) + b * (b - 1) // 2

    def __repr__(self) -> str:
        batch = "" if self.batch is None else f", batch={self.batch}"
        return (
            f"KroneckerSpectralSPD(a={self.a}, b={self.b}, dtype={self.dtype}, "
            f"device={self.device}{batch})"
        )

    @property
    def egrad_shape(self) -> tuple[int, ...]:
        ab = self.a * self.b
        return (*self.batch_shape, ab, ab)

    def _scalar(self, v: float | Tensor) -> Tensor:
        return torch.as_tensor(v, dtype=self.dtype, device=self.device).reshape(())

    def _per_element(self, v: float | Tensor) -> Tensor:
        """``v`` (a float, or a tensor of ``batch_shape``) as a tensor of ``batch_shape``."""
        t = torch.as_tensor(v, dtype=self.dtype, device=self.device)
        return t.reshape(()) if self.batch is None else t.expand(self.batch_shape).clone()

    def _unpadded_only(self, what: str) -> None:
        """Raise ``NotImplementedError`` for a method without a padded form (``sizes``)."""
        if self.padding is not None:
            raise NotImplementedError(
                f"KroneckerSpectralSPD.{what} is not available on a padded batch (sizes=...); "
                "use a manifold of each element's own shape"
            )

    def _sample_axis(self, t: Tensor) -> Tensor:
        """A per-element tensor (*batch, ...) made to broadcast against per-gradient tensors
        (*batch, m, ...): batched, a unit axis after the batch axis; unbatched, the gradient
        axis leads and broadcasting needs nothing."""
        return t if self.batch is None else t.unsqueeze(1)

    # Points ------------------------------------------------------------------------------

    @staticmethod
    def normalize(
        alpha: Tensor,
        left: SpectralPoint,
        right: SpectralPoint,
        *,
        shared: bool = False,
        padding: KroneckerPadding | None = None,
    ) -> KroneckerSpectralPoint:
        """Move ``det S_l`` into ``alpha`` so that ``det S_L = det S_R = 1``; ``S`` is unchanged.

        ``d_l <- d_l / exp(c_l)``, ``alpha <- alpha exp(c_L + c_R)`` with ``c_l = mean(log d_l)``
        (per batch element: ``alpha`` (*batch,), ``d_l`` (*batch, size)).
        ``shared``: both factors carry the same scalar step, which ``alpha`` takes once:
        ``alpha <- alpha exp((c_L + c_R) / 2)`` (the truncated chart step, Fig. 6 right).
        ``padding``: the means run over each element's true entries and the padding is
        reset to 1 (``kronecker_padding``).
        In 16-bit types this is computed in float32 and rounded once per entry: a rounded
        common factor ``exp(-c_l)`` would shift ``log det`` by up to ``size * eps / 2``.
        """
        dt = alpha.dtype
        wide = torch.float32 if torch.finfo(dt).bits <= 16 else dt
        dL, dR = as_dtype(left.d, wide), as_dtype(right.d, wide)
        if padding is None:
            cL, cR = torch.log(dL).mean(-1), torch.log(dR).mean(-1)
        else:
            cL, cR = padding.mean_log(dL, "L"), padding.mean_log(dR, "R")
        c = (cL + cR).mul_(operand(0.5, cL)) if shared else cL + cR
        dL, dR = dL * torch.exp(-cL)[..., None], dR * torch.exp(-cR)[..., None]
        if padding is not None:
            dL, dR = padding.reset(dL, "L"), padding.reset(dR, "R")
        return KroneckerSpectralPoint(
            as_dtype(as_dtype(alpha, wide) * torch.exp(c), dt),
            SpectralPoint(left.B, as_dtype(dL, dt)),
            SpectralPoint(right.B, as_dtype(dR, dt)),
        )

    def origin(self) -> KroneckerSpectralPoint:
        return KroneckerSpectralPoint(
            self._per_element(1.0), self.left.origin(), self.right.origin()
        )

    def random(
        self, generator: torch.Generator | None = None, log_scale: float = 1.0
    ) -> KroneckerSpectralPoint:
        """Haar-random rotations, log-normal eigenvalues normalised to det 1, log-normal alpha.

        ``ValueError`` naming ``log_scale`` as in ``SpectralSPD.random``."""
        self._unpadded_only("random")
        log_scale = check_log_scale(log_scale)
        left = self.left.random(generator, log_scale)
        right = self.right.random(generator, log_scale)
        alpha = torch.exp(
            log_scale * torch.randn(self.batch_shape, generator=generator, dtype=torch.float64)
        )
        x = self.normalize(self._per_element(alpha), left, right)
        return self._representable(
            x, "log_scale", f"log_scale = {log_scale:g} draws alpha in {value_range(alpha)}"
        )

    def apply_power_matrix(self, x: KroneckerSpectralPoint, G: Tensor, r: float) -> Tensor:
        """``alpha^r S_L^r G S_R^r`` from the factors only; ``G`` of shape (..., a, b)
        unbatched, (k, a, b) with ``batch=k`` (one matrix per element).

        ``= alpha^r B_L ((d_L^r d_R^r^T) * (B_L^T G B_R)) B_R^T``: four products, 8 a b (a+b)/2
        flops per matrix; ``S^r vec(G) = vec(alpha^r S_L^r G S_R^r)`` (row-major ``vec``).
        """
        self.validate_layout(x)
        check_real(r, "r")
        check_tensor(G, "G", dtype=self.dtype, device=self.device, finite=False)
        want = (*self.batch_shape, self.a, self.b)
        if G.ndim < 2 or tuple(G.shape[-2:]) != want[-2:] or (self.batch and G.shape != want):
            shape = want if self.batch else ("...", self.a, self.b)
            raise ValueError(f"G: expected shape {shape}, got {tuple(G.shape)}")
        return self.apply_power_eigenbasis(x, self.to_eigenbasis(x, G), r)

    def apply_power_eigenbasis(self, x: KroneckerSpectralPoint, Z: Tensor, r: float) -> Tensor:
        """``apply_power_matrix`` of ``G`` from ``Z = B_L^T G B_R`` (``to_eigenbasis``):
        ``B_L (alpha^r (d_L^r d_R^r^T) * Z) B_R^T``, two products."""
        L, Rt = x.left, x.right
        scale = x.alpha.pow(r)[..., None, None] * (
            L.d.pow(r)[..., :, None] * Rt.d.pow(r)[..., None, :]
        )
        return self.from_eigenbasis(x, scale * Z)

    @staticmethod
    def to_eigenbasis(x: KroneckerSpectralPoint, G: Tensor) -> Tensor:
        """``B_L^T G B_R``: a matrix (..., a, b) in the Kronecker eigenbasis of ``x``, where
        ``S = alpha (B_L kron B_R) Diag(d_L kron d_R) (B_L kron B_R)^T`` is diagonal."""
        return matmul(matmul(x.left.B.mT, G), x.right.B)

    @staticmethod
    def from_eigenbasis(x: KroneckerSpectralPoint, Z: Tensor) -> Tensor:
        """``B_L Z B_R^T``, the inverse of ``to_eigenbasis`` (orthogonal factors)."""
        return matmul(matmul(x.left.B, Z), x.right.B.mT)

    def apply_power(self, x: KroneckerSpectralPoint, v: Tensor, r: float) -> Tensor:
        """``S^r v`` for ``v`` of shape (a, b) (a matrix), (ab,) or (ab, k) (row-major vecs);
        batched: (k, a, b) or (k, ab)."""
        self.validate_layout(x)
        check_tensor(v, "v", dtype=self.dtype, device=self.device, finite=False)
        a, b = self.a, self.b
        if self.batch is not None:
            k = self.batch
            if tuple(v.shape) == (k, a, b):
                return self.apply_power_matrix(x, v, r)
            if tuple(v.shape) == (k, a * b):
                return self.apply_power_matrix(x, v.reshape(k, a, b), r).reshape(k, a * b)
            raise ValueError(
                f"v: expected shape ({k}, {a}, {b}) or ({k}, {a * b}), got {tuple(v.shape)}"
            )
        if tuple(v.shape) == (a, b):
            return self.apply_power_matrix(x, v, r)
        if v.ndim == 1 and v.shape[0] == a * b:
            return self.apply_power_matrix(x, v.reshape(a, b), r).reshape(-1)
        if v.ndim == 2 and v.shape[0] == a * b:
            G = v.T.reshape(-1, a, b)
            return self.apply_power_matrix(x, G, r).reshape(-1, a * b).T
        raise ValueError(
            f"v: expected shape ({a}, {b}), ({a * b},) or ({a * b}, k), got {tuple(v.shape)}"
        )

    def logdet(self, x: KroneckerSpectralPoint) -> Tensor:
        """``ab log alpha + b log det S_L + a log det S_R`` (the last two vanish on points)."""
        self._unpadded_only("logdet")
        self.validate_layout(x)
        return (
            self.a * self.b * torch.log(x.alpha)
            + self.b * torch.log(x.left.d).sum(-1)
            + self.a * torch.log(x.right.d).sum(-1)
        )

    def reorthogonalize(self, x: KroneckerSpectralPoint, steps: int = 1) -> KroneckerSpectralPoint:
        return KroneckerSpectralPoint(
            x.alpha,
            self.left.reorthogonalize(x.left, steps),
            self.right.reorthogonalize(x.right, steps),
        )
