"""``DiagonalSPD``: diagonal SPD matrices ``S = Diag(d)``, the spectral manifold with ``B = I``.

Paper Sec. 3.2 / App. A.1: with the GOP and the truncated exponential this is RMSprop
(gamma = 1) or AdaGrad (gamma = 0) for root ``p = 2``, and the fractional method of Chen et
al. (2021) for ``p = 4``. It uses the eigenvalue block of ``SpectralSPD`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..linalg import all_finite_positive, operand
from ..linalg_init import check_generator
from ..validation import check_exponential, check_flag, resolve_device
from . import blocks
from .base import (
    SpectralManifold,
    check_cayley,
    check_positive,
    check_real,
    check_size,
    check_tensor,
    resolve_dtype,
)
from .checks import (
    check_gop_columns,
    check_log_scale,
    check_tangent_type,
    eigenvalue_range,
)
from .points import DiagonalPoint, DiagonalTangent

__all__ = ["DiagonalSPD"]


class DiagonalSPD(SpectralManifold):
    """Diagonal SPD matrices ``Diag(d)`` with the chart ``d(m) = d * exp(m)``.

    The Euclidean gradient ``egrad`` is the vector ``diag(df/dS)`` of shape (n,). The metric
    at the origin is ``F_mm = 1/2 I``, the natural gradient ``2 d * egrad`` (Claim 4 with
    ``B = I``).
    """

    def __init__(self, n: int, dtype: torch.dtype | None = None, device: Any = None) -> None:
        self.n = check_size(n, "n")
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.dim = n

    def __repr__(self) -> str:
        return f"DiagonalSPD(n={self.n}, dtype={self.dtype}, device={self.device})"

    @property
    def egrad_shape(self) -> tuple[int, ...]:
        return (self.n,)

    def origin(self) -> DiagonalPoint:
        return DiagonalPoint(torch.ones(self.n, dtype=self.dtype, device=self.device))

    def random(
        self, generator: torch.Generator | None = None, log_scale: float = 1.0
    ) -> DiagonalPoint:
        """``log d ~ N(0, log_scale^2)``; ``ValueError`` naming ``log_scale`` as in
        ``SpectralSPD.random``."""
        log_scale = check_log_scale(log_scale)
        generator = check_generator(generator)
        d = torch.exp(log_scale * torch.randn(self.n, generator=generator, dtype=torch.float64))
        x = DiagonalPoint(d.to(dtype=self.dtype, device=self.device))
        return self._representable(
            x, "log_scale", f"log_scale = {log_scale:g} draws {eigenvalue_range(d)}"
        )

    def from_eigenvalues(self, d: Tensor) -> DiagonalPoint:
        """Point from positive diagonal entries (validated; ``ValueError`` naming ``d`` also
        when an entry is not representable in the manifold's dtype). The point holds a copy:
        a later write into ``d`` cannot turn the validated point invalid."""
        check_tensor(d, "d", shape=(self.n,))
        if not bool((d > 0).all()):
            raise ValueError("d: expected positive entries")
        x = DiagonalPoint(d.to(dtype=self.dtype, device=self.device, copy=True))
        return self._representable(x, "d", eigenvalue_range(d))

    def to_matrix(self, x: DiagonalPoint) -> Tensor:
        self.validate_layout(x)
        return torch.diag(x.d)

    def power(self, x: DiagonalPoint, r: float) -> Tensor:
        self.validate_layout(x)
        check_real(r, "r")
        return torch.diag(x.d.pow(r))

    def apply_power(self, x: DiagonalPoint, v: Tensor, r: float) -> Tensor:
        """``S^r v = d^r * v`` for ``v`` of shape (n,) or (n, k)."""
        self.validate_layout(x)
        check_real(r, "r")
        check_tensor(v, "v", dtype=self.dtype, device=self.device, finite=False)
        if v.ndim not in (1, 2) or v.shape[0] != self.n:
            raise ValueError(
                f"v: expected shape ({self.n},) or ({self.n}, k), got {tuple(v.shape)}"
            )
        return self.apply_power_unchecked(x.d, v, r)

    @staticmethod
    def eigen_floor(d: Tensor, g: Tensor, damping: float, beta2: float) -> Tensor:
        """``max(d, beta2 (g^2 + lambda))``: the least that the truncated map of a curvature
        step at rate ``beta2`` gives ``d`` from the GOP of ``g`` (``d`` itself where the floor
        does not bind: the same bits), for a step whose curvature has not seen ``g``
        (``KroneckerSpectralSPD.eigen_floor`` has the reason)."""
        h = g.square().add_(operand(damping, g))
        return torch.maximum(d, h.mul_(operand(beta2, h)))

    @staticmethod
    def apply_power_unchecked(d: Tensor, v: Tensor, r: float) -> Tensor:
        """``apply_power``'s formula ``d^r * v`` without its checks, for a caller whose ``d``,
        ``v`` (n,) or (n, k) and ``r`` hold by construction (an optimizer's state and
        checked gradient)."""
        dr = d.pow(r)
        return v * (dr if v.ndim == 1 else dr[:, None])

    def logdet(self, x: DiagonalPoint) -> Tensor:
        self.validate_layout(x)
        return torch.log(x.d).sum()

    def check_point(self, x: Any, *, fast: bool = False) -> tuple[bool, str | None]:
        """``(ok, reason)``: shape, dtype, device, finiteness and ``d > 0`` (all O(n))."""
        d = getattr(x, "d", None)
        if self._layout_ok(x) and all_finite_positive(d):
            return True, None  # one reduction for a valid point
        fields = self._point_fields(x)
        if fields is None:
            return False, f"expected a DiagonalPoint, got {type(x).__name__}"
        reason = self._check_point_tensors(fields)
        if reason:
            return False, reason
        if not bool((x.d > 0).all()):
            return False, "d has non-positive entries"
        return True, None

    def _point_fields(self, x: Any) -> dict[str, tuple[Any, tuple[int, ...]]] | None:
        return {"d": (x.d, (self.n,))} if isinstance(x, DiagonalPoint) else None

    def _layout_ok(self, x: Any) -> bool:
        return isinstance(x, DiagonalPoint) and self._tensor_ok(x.d, (self.n,))

    def validate_eigen_gradient(self, G: Any, name: str = "G", *, finite: bool = True) -> Tensor:
        """The (n,) diagonal, or an (n, n) matrix whose diagonal is used; ``finite``: one
        reduction."""
        return self._vector_or_matrix(G, name, finite)

    def _vector_or_matrix(self, E: Any, name: str, finite: bool = False) -> Tensor:
        check_tensor(E, name, dtype=self.dtype, device=self.device, finite=finite)
        if tuple(E.shape) not in ((self.n,), (self.n, self.n)):
            raise ValueError(
                f"{name}: expected shape ({self.n},) or ({self.n}, {self.n}), got {tuple(E.shape)}"
            )
        return E

    def rotate(self, x: DiagonalPoint, E: Tensor) -> Tensor:
        """The eigenbasis is the standard basis: ``diag(E)`` for a matrix, ``E`` for a vector."""
        self._vector_or_matrix(E, "E")
        return torch.diagonal(E) if E.ndim == 2 else E

    def gop_eigenbasis(self, x: DiagonalPoint, V: Tensor, damping: float = 0.0) -> Tensor:
        """``diag(V V^T) / k + damping``: only the diagonal of the GOP is needed (O(n k))."""
        self.validate_layout(x)
        check_gop_columns(V, (self.n,), self.dtype, self.device)
        return self.gop_eigenbasis_unchecked(V, damping)

    @staticmethod
    def gop_eigenbasis_unchecked(V: Tensor, damping: float = 0.0) -> Tensor:
        """``gop_eigenbasis``'s formula ``diag(V V^T) / k + damping`` without its checks, for a
        caller whose columns ``V`` (n, k) hold by construction (an optimizer's checked
        gradient). One column: ``v * v + damping`` (a sum of one term and a division by 1
        round nothing: the same bits, two tensor calls fewer)."""
        # the numbers as cached 0-d tensors (the same bits: linalg.operand)
        if V.shape[1] == 1:
            h = (V * V).reshape(-1)
        else:
            h = (V * V).sum(dim=1).div_(operand(float(V.shape[1]), V))
        return h.add_(operand(damping, h))

    def precision_egrad_eigenbasis(self, x: DiagonalPoint, Ht: Tensor, gamma: float) -> Tensor:
        """``diag(dL/dS) = -1/2 (Ht - gamma d) / d^2`` with ``Ht = diag(H)``."""
        check_tensor(Ht, "Ht", shape=(self.n,), dtype=self.dtype, device=self.device, finite=False)
        return -0.5 * (Ht - gamma * x.d) / (x.d * x.d)

    def closed_form_step(
        self,
        x: DiagonalPoint,
        Ht: Any,
        beta2: float,
        gamma: float,
        *,
        exponential: str = "exact",
        cayley: str | None = None,
        jacobi: bool = False,
        updated_gaps: bool = False,
        basis_scale: float = 1.0,
    ) -> DiagonalPoint:
        """The RGD step ``retr(x, -F^+ grad L, beta2)`` of the precision for the curvature
        diagonal ``Ht`` (``gop_eigenbasis``, ``rotate``) in closed form: the natural gradient
        ``2 d * diag(dL/dS) = -(Ht - gamma d) / d`` gives

            d <- d exp(m)  (``"truncated"``: d (1 + m) = (1 - gamma beta2) d + beta2 Ht),
            m = beta2 (Ht / d - gamma)  (``blocks.gop_eig_step``),

        RMSprop (``gamma = 1``) and AdaGrad (``gamma = 0``) for the GOP (paper App. A.1, Eq.
        12), without the layered path's intermediate gradient and tangent. ``cayley``,
        ``jacobi``, ``updated_gaps`` and ``basis_scale`` are ignored (no rotation). Not checked
        (``RGD.finish_step`` checks)."""
        check_tensor(Ht, "Ht", shape=(self.n,), dtype=self.dtype, device=self.device, finite=False)
        beta2, exponential = check_positive(beta2, "beta2"), check_exponential(exponential)
        return self.closed_form_step_unchecked(x, Ht, beta2, float(gamma), exponential)

    @staticmethod
    def closed_form_step_unchecked(
        x: DiagonalPoint,
        Ht: Tensor,
        beta2: float,
        gamma: float,
        exponential: str,
        *,
        nonnegative: bool = False,
    ) -> DiagonalPoint:
        """``closed_form_step``'s formula without its checks, for a caller whose arguments
        hold by construction (an optimizer's state, its GOP diagonal and validated options);
        ``nonnegative``: ``Ht >= 0`` (a GOP), so the truncated map needs no positivity check
        when ``gamma beta2 < 1`` (``blocks.gop_eig_step``). The result is not checked."""
        d = blocks.gop_eig_step(x.d, Ht, beta2, gamma, exponential, nonnegative=nonnegative)
        return DiagonalPoint(d)

    def metric(self, x: DiagonalPoint) -> DiagonalTangent:
        return DiagonalTangent(blocks.eig_metric(x.d))

    def chart(self, x: DiagonalPoint) -> Callable[[DiagonalTangent], DiagonalPoint]:
        return lambda eta: DiagonalPoint(blocks.eig_retract(x.d, eta.m))

    def local_gradient(self, x: DiagonalPoint, egrad: Tensor) -> DiagonalTangent:
        self.validate_layout(x)
        return DiagonalTangent(blocks.eig_local_grad(x.d, self.validate_egrad(egrad)))

    def natural_gradient(self, x: DiagonalPoint, egrad: Tensor) -> DiagonalTangent:
        """``F^+ grad = 2 d * egrad`` (egrad = diag(df/dS))."""
        self.validate_layout(x)
        return self.natural_gradient_eigenbasis(x, self.validate_egrad(egrad))

    def natural_gradient_eigenbasis(self, x: DiagonalPoint, G: Tensor) -> DiagonalTangent:
        """Same as ``natural_gradient`` (the eigenbasis is the standard basis); ``G`` may
        be the (n,) diagonal or an (n, n) matrix whose diagonal is used."""
        self.validate_layout(x)
        self.validate_eigen_gradient(G, finite=False)
        g = torch.diagonal(G) if G.ndim == 2 else G
        return DiagonalTangent(blocks.eig_natural_grad(x.d, g))

    def retr(
        self,
        x: DiagonalPoint,
        tangent: DiagonalTangent,
        lr: float = 1.0,
        *,
        exponential: str = "exact",
        cayley: str | None = None,
        jacobi: bool = False,
        second_order: bool = False,
    ) -> DiagonalPoint:
        """``d exp(lr m)`` (``exponential="truncated"``: ``d (1 + lr m)``); ``cayley``,
        ``jacobi`` and ``second_order`` are accepted (and checked) and ignored (no rotation
        factor)."""
        lr = check_positive(lr, "lr")
        exponential = check_exponential(exponential)
        check_flag(jacobi, "jacobi")
        check_flag(second_order, "second_order")
        if cayley is not None:
            check_cayley(cayley)
        self.validate_layout(x)
        check_tangent_type(tangent, DiagonalTangent)
        check_tensor(tangent.m, "tangent.m", shape=(self.n,), dtype=self.dtype, device=self.device)
        return DiagonalPoint(blocks.eig_retract(x.d, lr * tangent.m, exponential))

    def zero_tangent(self, x: DiagonalPoint) -> DiagonalTangent:
        return DiagonalTangent(torch.zeros_like(x.d))

    def to_vector(self, tangent: DiagonalTangent) -> Tensor:
        return tangent.m

    def from_vector(self, vec: Tensor) -> DiagonalTangent:
        check_tensor(vec, "vec", shape=(self.n,), finite=False)
        return DiagonalTangent(vec)
