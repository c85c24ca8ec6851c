"""``KroneckerSpectralSPD``: ``S = alpha (S_L kron S_R)`` with spectral, unit-determinant factors.

For a weight matrix ``W`` (a x b) and row-major ``vec`` (torch's ``flatten``),
``S vec(X) = alpha vec(S_L X S_R)``. Each factor is a spectral point
``S_l = B_l Diag(d_l) B_l^T`` with ``det S_l = 1`` (``sum(log d_l) = 0``); together with
``alpha > 0`` this makes the factorisation unique (paper Claim 5).

Chart at ``x`` (Claim 6): ``alpha(n) = alpha exp(n)``; ``d_l(m_l) = d_l * exp(m_l)`` with
``sum(m_l) = 0``; ``B_l(M_l) = B_l Cayley(Skew(M_l))``. The Fisher-Rao metric at the origin is
block diagonal: ``F_nn = ab/2``; on the sum-zero ``m_l`` the block is ``(kappa_l / 2) I``; the
rotation blocks are ``kappa_l C_ij``; ``kappa_L = b`` and ``kappa_R = a`` (the size of the
*other* factor). The eigenvalue and rotation formulas are the ones of ``SpectralSPD``
(``blocks.py``), scaled by ``kappa_l`` and applied to ``alpha``-weighted factor gradients.

With ``batch=k`` the manifold holds ``k`` such matrices of the same shape (e.g. ``k``
same-shaped layers) and updates them with one set of batched products: every tensor below
gains a leading dimension of size ``k`` and every formula acts per element.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..linalg import NEUMANN_MAX_NORM, nearest_kronecker_factors, sym
from ..validation import check_flag, resolve_device, symmetric_matrix
from . import blocks
from .base import (
    SpectralManifold,
    check_batch,
    check_cayley,
    check_positive,
    check_real,
    check_size,
    check_tensor,
)
from .points import SpectralPoint, SpectralTangent, TensorTree
from .spectral import (
    SpectralSPD,
    check_exponential,
    check_gop_columns,
    check_log_scale,
    check_positive_definite,
    check_tangent_type,
)

__all__ = [
    "KroneckerSpectralSPD",
    "KroneckerSpectralPoint",
    "KroneckerSpectralTangent",
    "KroneckerEigenGradient",
    "KroneckerGOP",
    "KroneckerDenseCurvature",
    "sum_zero_metric",
    "sum_zero_metric_inverse",
]


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerSpectralPoint(TensorTree):
    """``S = alpha (S_L kron S_R)``: ``alpha`` a 0-d tensor, ``left``/``right`` spectral points.

    Batched (``KroneckerSpectralSPD(..., batch=k)``): ``alpha`` (k,), ``left.B`` (k, a, a),
    ``left.d`` (k, a), ``right.B`` (k, b, b), ``right.d`` (k, b).
    """

    alpha: Tensor
    left: SpectralPoint
    right: SpectralPoint


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerSpectralTangent(TensorTree):
    """Chart coordinates: ``n`` (0-d, for ``alpha``) and one spectral tangent per factor.

    The factors' ``m`` are sum-zero vectors (the determinant constraint). Batched: ``n`` (k,),
    ``left.m`` (k, a), ``left.M`` (k, a, a), ``right.m`` (k, b), ``right.M`` (k, b, b).
    """

    n: Tensor
    left: SpectralTangent
    right: SpectralTangent


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerEigenGradient(TensorTree):
    """A Euclidean gradient ``E = df/dS`` reduced to what the chart sees.

    ``t = alpha tr((S_L kron S_R) E)`` and ``G_l = Sym(B_l^T E_l B_l)`` with the partial
    contractions ``E_L[i,l] = sum_jk S_R[j,k] E[(i,j),(l,k)]``,
    ``E_R[j,k] = sum_il S_L[i,l] E[(i,j),(l,k)]`` (DESIGN.md section 3). Shapes: ``t``
    (*batch,), ``G_L`` (*batch, a, a), ``G_R`` (*batch, b, b).
    """

    t: Tensor
    G_L: Tensor
    G_R: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerGOP(TensorTree):
    """A GOP curvature in the eigenbasis: ``Z_i = B_L^T Mat(g_i) B_R`` and a 0-d damping.

    ``Z`` is (m, a, b) for ``m`` gradients, (k, m, a, b) on a manifold with ``batch=k``.
    """

    Z: Tensor
    damping: Tensor


@dataclasses.dataclass(frozen=True, eq=False)
class KroneckerDenseCurvature(TensorTree):
    """A dense (ab, ab) curvature ``H`` (research sizes); reduced when the gradient is formed."""

    H: Tensor


def sum_zero_metric(size: int, kappa: float, dtype=None, device=None) -> Tensor:
    """Eigenvalue block in free coordinates ``m_1..m_{s-1}`` (``m_s = -sum``):
    ``(kappa / 2)(I + 1 1^T)``, of size ``s - 1`` (Claim 6)."""
    k = size - 1
    eye = torch.eye(k, dtype=dtype, device=device)
    return 0.5 * kappa * (eye + torch.ones(k, k, dtype=dtype, device=device))


def sum_zero_metric_inverse(size: int, kappa: float, dtype=None, device=None) -> Tensor:
    """Inverse of :func:`sum_zero_metric`: ``(2 / kappa)(I - 1 1^T / s)``.

    In the full (sum-zero) representation this is ``(2 / kappa) center(.)``, the form used by
    ``natural_gradient``.
    """
    k = size - 1
    eye = torch.eye(k, dtype=dtype, device=device)
    return (2.0 / kappa) * (eye - torch.ones(k, k, dtype=dtype, device=device) / size)


def _range(v: Tensor) -> str:
    return f"[{float(v.min()):.3e}, {float(v.max()):.3e}]"


def _center(v: Tensor) -> Tensor:
    """``v - mean(v)`` over the last dimension."""
    return v - v.mean(-1, keepdim=True)


def det_tol(dtype: torch.dtype, size: int) -> float:
    """Accepted ``|log det S_l| = |sum(log d_l)|``.

    ``max(1e-10, 100 s eps)`` for 32/64-bit types. In 16-bit types ``s eps``: ``normalize``
    rounds each ``d_l`` once, and many (nearly) equal eigenvalues round the same way, so
    ``|log det|`` can reach ``s eps / 2`` (it does not accumulate: every step re-centres).
    """
    eps = float(torch.finfo(dtype).eps)
    if torch.finfo(dtype).bits <= 16:
        return size * eps
    return max(1e-10, 100.0 * size * eps)


class KroneckerSpectralSPD(SpectralManifold):
    """Kronecker-structured SPD matrices ``alpha (S_L kron S_R)`` in spectral coordinates.

    Args:
        a: size of the left factor (rows of the weight matrix).
        b: size of the right factor (columns).
        dtype: of every tensor of the points (default: torch's default dtype).
        device: of every tensor of the points (default: CPU).
        eig_tol: Moore-Penrose rule of the factors (see ``SpectralSPD``).
        gap_damping: Tikhonov form of that rule (see ``SpectralSPD``).
        cayley: default Cayley map of ``retr``, ``"exact"`` or ``"neumann"``.
        neumann_max_norm: spectral-norm bound (< 1) on each factor's Neumann Cayley argument.
        batch: ``None`` (default) or ``k``: ``k`` same-shaped matrices updated by one set of
            batched products (``k`` layers of the same shape). Points: ``alpha`` (k,),
            ``B_L`` (k, a, a), ``d_L`` (k, a), ``B_R`` (k, b, b), ``d_R`` (k, b); GOP inputs:
            ``gop_eigenbasis(x, V)`` with ``V`` (k, ab, m) (``m`` gradient columns per
            element) gives ``Z`` (k, m, a, b); ``apply_power_matrix`` takes (k, a, b). The
            dense (ab, ab) paths (``to_matrix``, ``power``, ``metric_matrix``,
            ``from_matrix``, ``from_kronecker``, ``from_factors``, dense ``egrad``/curvature)
            raise ``NotImplementedError`` when batched.

    The Euclidean gradient ``egrad`` is a dense (ab, ab) matrix (row-major pairs), meant for
    research sizes; curvature learning from gradient matrices goes through
    ``gop_eigenbasis`` and never forms an (ab, ab) matrix.

    Cost of one GOP update from one gradient matrix (flops, products of a x a, a x b, b x b):
    ``Z = B_L^T G B_R`` 2ab(a + b); ``W_L, W_R`` 2ab(a + b); natural gradient O(a^2 + b^2);
    Neumann Cayley maps 8a^3 + 8b^3 (four products each); ``B_l <- B_l C_l`` 2a^3 + 2b^3;
    preconditioning ``alpha^r S_L^r G S_R^r`` 4ab(a + b). For a = b = n: 36 n^3, i.e. 18
    n x n matrix products, of which a precondition-only step needs 4. ``S^-1`` is never
    formed; the exact Cayley map replaces the four Neumann products by one LU solve.
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
        cayley: str = "exact",
        neumann_max_norm: float = NEUMANN_MAX_NORM,
        batch: int | None = None,
    ) -> None:
        a, b = check_size(a, "a"), check_size(b, "b")
        self.batch = check_batch(batch)
        opts = dict(
            eig_tol=eig_tol,
            gap_damping=gap_damping,
            cayley=cayley,
            neumann_max_norm=neumann_max_norm,
            batch=self.batch,
        )
        self.left = SpectralSPD(a, dtype, device, **opts)
        self.right = SpectralSPD(b, dtype, device, **opts)
        self.a, self.b = a, b
        self.dtype = self.left.dtype
        self.device = resolve_device(device)
        self.cayley = self.left.cayley
        self.neumann_max_norm = self.left.neumann_max_norm
        self.eig_tol = self.left.eig_tol
        #: ``kappa_L = b``, ``kappa_R = a``: the size of the other factor (Claim 6).
        self.kappa_L, self.kappa_R = float(b), float(a)
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

    def _sample_axis(self, t: Tensor) -> Tensor:
        """A per-element tensor (*batch, ...) made to broadcast against per-gradient tensors
        (*batch, m, ...): batched, a unit axis after the batch axis; unbatched, the gradient
        axis leads and broadcasting needs nothing."""
        return t if self.batch is None else t.unsqueeze(1)

    # Points ------------------------------------------------------------------------------

    @staticmethod
    def normalize(
        alpha: Tensor, left: SpectralPoint, right: SpectralPoint
    ) -> KroneckerSpectralPoint:
        """Move ``det S_l`` into ``alpha`` so that ``det S_L = det S_R = 1``; ``S`` is unchanged.

        ``d_l <- d_l / exp(c_l)``, ``alpha <- alpha exp(c_L + c_R)`` with ``c_l = mean(log d_l)``
        (per batch element: ``alpha`` (*batch,), ``d_l`` (*batch, size)).
        In 16-bit types this is computed in float32 and rounded once per entry: a rounded
        common factor ``exp(-c_l)`` would shift ``log det`` by up to ``size * eps / 2``.
        """
        dt = alpha.dtype
        wide = torch.float32 if torch.finfo(dt).bits <= 16 else dt
        dL, dR = left.d.to(wide), right.d.to(wide)
        cL, cR = torch.log(dL).mean(-1), torch.log(dR).mean(-1)
        return KroneckerSpectralPoint(
            (alpha.to(wide) * torch.exp(cL + cR)).to(dt),
            SpectralPoint(left.B, (dL * torch.exp(-cL)[..., None]).to(dt)),
            SpectralPoint(right.B, (dR * torch.exp(-cR)[..., None]).to(dt)),
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
        log_scale = check_log_scale(log_scale)
        left = self.left.random(generator, log_scale)
        right = self.right.random(generator, log_scale)
        alpha = torch.exp(
            log_scale * torch.randn(self.batch_shape, generator=generator, dtype=torch.float64)
        )
        x = self.normalize(self._per_element(alpha), left, right)
        return self._representable(
            x, "log_scale", f"log_scale = {log_scale:g} draws alpha in {_range(alpha)}"
        )

    def from_factors(
        self, alpha: float | Tensor, left: SpectralPoint, right: SpectralPoint
    ) -> KroneckerSpectralPoint:
        """A validated point; raises ``ValueError`` if a factor's determinant is not 1.

        Unbatched only (stack unbatched points with ``KroneckerSpectralPoint.stack``).
        """
        self._unbatched_only("from_factors")
        alpha = check_positive(alpha, "alpha")
        for name, man, p in (("left", self.left, left), ("right", self.right, right)):
            man.validate_point(p, name)
            logdet = float(torch.log(p.d).sum())
            tol = det_tol(self.dtype, man.n)
            if abs(logdet) > tol:
                raise ValueError(
                    f"{name}: expected det = 1 (sum(log d) = 0), got log det = {logdet:.3e}; "
                    "use from_kronecker to normalise arbitrary factors"
                )
        x = KroneckerSpectralPoint(self._scalar(alpha), left, right)
        return self._representable(x, "alpha", f"alpha = {alpha:.3e}")

    def from_kronecker(self, S_L: Any, S_R: Any) -> KroneckerSpectralPoint:
        """The point ``S_L kron S_R`` from two dense SPD factors (one eigh each, init-only)."""
        self._unbatched_only("from_kronecker")
        x = self.normalize(
            self._scalar(1.0),
            self.left._from_matrix(S_L, "S_L"),
            self.right._from_matrix(S_R, "S_R"),
        )
        return self._representable(x, "S_L, S_R", "their Kronecker product")

    def from_matrix(self, S: Any, *, sym_tol: float | None = None) -> KroneckerSpectralPoint:
        """Nearest Kronecker product of a dense SPD ``S`` (ab, ab) (Van Loan & Pitsianis, 1993).

        Rearranges ``S[(i,j),(l,k)]`` into ``R[(i,l),(j,k)]`` and takes the leading singular
        pair (init-only SVD); for SPD ``S`` both factors are SPD up to a common sign.
        ``S`` itself must be positive definite (one init-only ``eigvalsh``, the rule and message
        of ``SpectralSPD.from_matrix``): the nearest Kronecker product of an indefinite ``S``
        can be positive definite, and would hide the error. ``ValueError`` also when the
        result is not representable in the manifold's dtype.
        """
        self._unbatched_only("from_matrix")
        S64, src_dtype = symmetric_matrix(S, "S", self.a * self.b, sym_tol)
        check_positive_definite(torch.linalg.eigvalsh(sym(S64)), src_dtype, "S")  # init-only
        A, Bm, s1 = nearest_kronecker_factors(S64, self.a, self.b, full_matrices=True)
        x = self.normalize(
            self._scalar(1.0), self.left.from_matrix(sym(A)), self.right.from_matrix(sym(Bm))
        )
        return self._representable(x, "S", f"Kronecker scale {float(s1):.3e}")

    def to_matrix(self, x: KroneckerSpectralPoint) -> Tensor:
        """Dense ``alpha (S_L kron S_R)`` (ab, ab); for tests and small problems. Unbatched."""
        self._unbatched_only("to_matrix")
        return x.alpha * torch.kron(self.left.to_matrix(x.left), self.right.to_matrix(x.right))

    def power(self, x: KroneckerSpectralPoint, r: float) -> Tensor:
        """Dense ``S^r = alpha^r (S_L^r kron S_R^r)``. Unbatched."""
        self._unbatched_only("power")
        self.validate_layout(x)
        check_real(r, "r")
        return x.alpha.pow(r) * torch.kron(self.left.power(x.left, r), self.right.power(x.right, r))

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
        L, Rt = x.left, x.right
        scale = x.alpha.pow(r)[..., None, None] * (
            L.d.pow(r)[..., :, None] * Rt.d.pow(r)[..., None, :]
        )
        return self.from_eigenbasis(x, scale * self.to_eigenbasis(x, G))

    @staticmethod
    def to_eigenbasis(x: KroneckerSpectralPoint, G: Tensor) -> Tensor:
        """``B_L^T G B_R``: a matrix (..., a, b) in the Kronecker eigenbasis of ``x``, where
        ``S = alpha (B_L kron B_R) Diag(d_L kron d_R) (B_L kron B_R)^T`` is diagonal."""
        return x.left.B.mT @ G @ x.right.B

    @staticmethod
    def from_eigenbasis(x: KroneckerSpectralPoint, Z: Tensor) -> Tensor:
        """``B_L Z B_R^T``, the inverse of ``to_eigenbasis`` (orthogonal factors)."""
        return x.left.B @ Z @ x.right.B.mT

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
        return (
            self.a * self.b * torch.log(x.alpha)
            + self.b * torch.log(x.left.d).sum(-1)
            + self.a * torch.log(x.right.d).sum(-1)
        )

    def check_point(self, x: Any, *, fast: bool = False) -> tuple[bool, str | None]:
        """``(ok, reason)``: ``alpha > 0`` a finite scalar, valid factors, ``det S_l = 1``.

        A batch passes when every element does; the reason names the first failing element
        (``"element i: ..."``, after ``"left: "``/``"right: "`` for a factor).
        """
        if not isinstance(x, KroneckerSpectralPoint):
            return False, f"expected a KroneckerSpectralPoint, got {type(x).__name__}"
        reason = self._check_point_tensors({"alpha": (x.alpha, ())})
        if reason:
            return False, reason
        fail = self._first_failure(x.alpha > 0)
        if fail:
            return False, f"{fail[0]}alpha is not positive"
        for name, man, p in (("left", self.left, x.left), ("right", self.right, x.right)):
            ok, why = man.check_point(p, fast=fast)
            if not ok:
                return False, f"{name}: {why}"
            logdet = torch.log(p.d.float() if p.d.dtype != torch.float64 else p.d).sum(-1)
            tol = det_tol(self.dtype, man.n)
            fail = self._first_failure(logdet.abs() <= tol)
            if fail:
                v = float(logdet[fail[1]])
                return False, f"{name}: {fail[0]}det != 1 (log det = {v:.2e} > {tol:.1e})"
        return True, None

    def _point_fields(self, x: Any) -> dict[str, tuple[Any, tuple[int, ...]]] | None:
        if not isinstance(x, KroneckerSpectralPoint):
            return None
        a, b = self.a, self.b
        fields: dict[str, tuple[Any, tuple[int, ...]]] = {"alpha": (x.alpha, ())}
        for name, p, s in (("left", x.left, a), ("right", x.right, b)):
            fields[f"{name}.B"] = (getattr(p, "B", None), (s, s))
            fields[f"{name}.d"] = (getattr(p, "d", None), (s,))
        return fields

    def _layout_ok(self, x: Any) -> bool:
        return (
            isinstance(x, KroneckerSpectralPoint)
            and self._tensor_ok(x.alpha, self.batch_shape)
            and self.left._layout_ok(x.left)
            and self.right._layout_ok(x.right)
        )

    def validate_eigen_gradient(
        self, G: Any, name: str = "G", *, finite: bool = True
    ) -> KroneckerEigenGradient:
        """A ``KroneckerEigenGradient`` with ``t`` (*batch,), ``G_L`` (*batch, a, a) and
        ``G_R`` (*batch, b, b) in the manifold's dtype and device (``finite``: and finite,
        one reduction per tensor)."""
        if not isinstance(G, KroneckerEigenGradient):
            raise TypeError(f"{name}: expected a KroneckerEigenGradient, got {type(G).__name__}")
        bs, a, b = self.batch_shape, self.a, self.b
        opts = dict(dtype=self.dtype, device=self.device, finite=finite)
        check_tensor(G.t, f"{name}.t", shape=bs, **opts)
        check_tensor(G.G_L, f"{name}.G_L", shape=(*bs, a, a), **opts)
        check_tensor(G.G_R, f"{name}.G_R", shape=(*bs, b, b), **opts)
        return G

    def reorthogonalize(self, x: KroneckerSpectralPoint, steps: int = 1) -> KroneckerSpectralPoint:
        return KroneckerSpectralPoint(
            x.alpha,
            self.left.reorthogonalize(x.left, steps),
            self.right.reorthogonalize(x.right, steps),
        )

    # Metric and gradients ----------------------------------------------------------------

    def metric(self, x: KroneckerSpectralPoint) -> KroneckerSpectralTangent:
        """Block entries at the origin (Claim 6): ``n: ab/2``; ``m_l: kappa_l/2`` (on sum-zero
        vectors); ``M_l: kappa_l C_ij``."""
        kL, kR = self.kappa_L, self.kappa_R
        return KroneckerSpectralTangent(
            self._per_element(0.5 * self.a * self.b),
            SpectralTangent(blocks.eig_metric(x.left.d, kL), blocks.rotation_metric(x.left.d, kL)),
            SpectralTangent(
                blocks.eig_metric(x.right.d, kR), blocks.rotation_metric(x.right.d, kR)
            ),
        )

    def metric_matrix(self, x: KroneckerSpectralPoint) -> Tensor:
        """Dense metric in ``to_vector`` (free) coordinates: block diagonal with the sum-zero
        blocks ``(kappa_l / 2)(I + 1 1^T)``. Unbatched."""
        self._unbatched_only("metric_matrix")
        w = self.metric(x)
        dt, dev = self.dtype, self.device
        iL = torch.tril_indices(self.a, self.a, -1, device=dev)
        iR = torch.tril_indices(self.b, self.b, -1, device=dev)
        return torch.block_diag(
            w.n.reshape(1, 1),
            sum_zero_metric(self.a, self.kappa_L, dt, dev),
            torch.diag(w.left.M[iL[0], iL[1]]),
            sum_zero_metric(self.b, self.kappa_R, dt, dev),
            torch.diag(w.right.M[iR[0], iR[1]]),
        )

    def chart(
        self, x: KroneckerSpectralPoint
    ) -> Callable[[KroneckerSpectralTangent], KroneckerSpectralPoint]:
        """Differentiable chart ``eta -> (alpha e^n, (B_l Cayley(Skew M_l), d_l e^{m_l}))``.

        ``m_l`` is used as given (``from_vector`` makes it sum-zero); exact Cayley.
        """
        phiL, phiR = self.left.chart(x.left), self.right.chart(x.right)
        return lambda eta: KroneckerSpectralPoint(
            x.alpha * torch.exp(eta.n), phiL(eta.left), phiR(eta.right)
        )

    def eigen_gradient(self, x: KroneckerSpectralPoint, egrad: Tensor) -> KroneckerEigenGradient:
        """Reduce a dense ``E = df/dS`` (ab, ab) to ``(t, G_L, G_R)`` (DESIGN.md section 3).
        Unbatched."""
        self._unbatched_only("eigen_gradient (dense egrad)")
        a, b = self.a, self.b
        E4 = egrad.reshape(a, b, a, b)
        S_L, S_R = self.left.to_matrix(x.left), self.right.to_matrix(x.right)
        E_L = torch.einsum("ijlk,jk->il", E4, S_R)
        E_R = torch.einsum("ijlk,il->jk", E4, S_L)
        t = x.alpha * (S_L * E_L).sum()
        return KroneckerEigenGradient(
            t, self.left.rotate(x.left, E_L), self.right.rotate(x.right, E_R)
        )

    def local_gradient(self, x: KroneckerSpectralPoint, egrad: Tensor) -> KroneckerSpectralTangent:
        """Chart covector at the origin: ``n: t``; ``m_l,i: alpha d_i G_l,ii`` (unconstrained
        representation); ``M_l,ij: 4 alpha (d_j - d_i) G_l,ij``."""
        self._unbatched_only("local_gradient (dense egrad)")
        self.validate_layout(x)
        g = self.eigen_gradient(x, self.validate_egrad(egrad))
        return KroneckerSpectralTangent(
            g.t,
            SpectralTangent(
                blocks.eig_local_grad(x.left.d, x.alpha * torch.diagonal(g.G_L)),
                blocks.rotation_local_grad(x.left.d, x.alpha * g.G_L),
            ),
            SpectralTangent(
                blocks.eig_local_grad(x.right.d, x.alpha * torch.diagonal(g.G_R)),
                blocks.rotation_local_grad(x.right.d, x.alpha * g.G_R),
            ),
        )

    def natural_gradient(
        self, x: KroneckerSpectralPoint, egrad: Tensor
    ) -> KroneckerSpectralTangent:
        """``F^+ grad_eta f`` for a dense ``egrad = df/dS`` (research sizes). Unbatched."""
        self._unbatched_only("natural_gradient (dense egrad)")
        self.validate_layout(x)
        return self.natural_gradient_eigenbasis(
            x, self.eigen_gradient(x, self.validate_egrad(egrad))
        )

    def natural_gradient_eigenbasis(
        self, x: KroneckerSpectralPoint, g: KroneckerEigenGradient
    ) -> KroneckerSpectralTangent:
        """Claim 6 closed form: ``n = 2 t / (ab)``;
        ``m_l = (2/kappa_l) center(alpha d_l diag G_l)``;
        ``M_l,ij = -alpha d_i d_j G_l,ij / (kappa_l (d_i - d_j))`` (0 where ``d_i ~ d_j``).
        Per batch element when batched."""
        self.validate_layout(x)
        self.validate_eigen_gradient(g, "g", finite=False)
        parts = []
        for p, G, kappa, fac in (
            (x.left, g.G_L, self.kappa_L, self.left),
            (x.right, g.G_R, self.kappa_R, self.right),
        ):
            aG = x.alpha[..., None, None] * G
            m = _center(blocks.eig_natural_grad(p.d, aG.diagonal(dim1=-2, dim2=-1), kappa))
            M = blocks.rotation_natural_grad(p.d, aG, fac.eig_tol, kappa, fac.gap_damping)
            parts.append(SpectralTangent(m, M))
        return KroneckerSpectralTangent(2.0 * g.t / (self.a * self.b), *parts)

    # Curvature in the eigenbasis (Gaussian layer) ----------------------------------------

    def rotate(self, x: KroneckerSpectralPoint, E: Tensor) -> KroneckerDenseCurvature:
        """A dense curvature is kept as is; it is reduced in ``precision_egrad_eigenbasis``."""
        check_tensor(
            E, "E", shape=self.egrad_shape, dtype=self.dtype, device=self.device, finite=False
        )
        return KroneckerDenseCurvature(E)

    def gop_eigenbasis(
        self, x: KroneckerSpectralPoint, V: Tensor, damping: float = 0.0
    ) -> KroneckerGOP:
        """``Z_i = B_L^T Mat(v_i) B_R`` for the ``m`` columns ``v_i`` of ``V``.

        ``V``: (ab, m) -> ``Z`` (m, a, b); batched, ``V`` (k, ab, m) -> ``Z`` (k, m, a, b)
        (row-major ``Mat``: ``Mat(v)[i, j] = v[i b + j]``).
        """
        self.validate_layout(x)
        check_gop_columns(V, (*self.batch_shape, self.a * self.b), self.dtype, self.device)
        G = V.mT.reshape(*self.batch_shape, -1, self.a, self.b)
        B_L, B_R = self._sample_axis(x.left.B), self._sample_axis(x.right.B)
        return KroneckerGOP(B_L.mT @ G @ B_R, self._scalar(damping))

    def precision_egrad_eigenbasis(
        self, x: KroneckerSpectralPoint, Ht: Any, gamma: float
    ) -> KroneckerEigenGradient:
        """``dL/dS = -1/2 S^-1 (H - gamma S) S^-1`` reduced to ``(t, G_L, G_R)``.

        For the GOP ``H = mean_i vec(G_i) vec(G_i)^T + lambda I`` (Fig. 1 bottom box), with
        ``W_L = mean_i Z_i D_R^-1 Z_i^T + lambda tr(S_R^-1) I``,
        ``W_R = mean_i Z_i^T D_L^-1 Z_i + lambda tr(S_L^-1) I`` and
        ``T = tr(S^-1 H) alpha = mean_i sum(Z_i^2 / (d_L d_R^T)) + lambda tr(S_L^-1) tr(S_R^-1)``
        (means over the ``m`` gradients; per element when batched, ``Z`` (k, m, a, b)):

            G_L = -W_L / (2 alpha^2 d_L d_L^T) + gamma b / (2 alpha) Diag(1 / d_L)
            G_R = -W_R / (2 alpha^2 d_R d_R^T) + gamma a / (2 alpha) Diag(1 / d_R)
            t   = -T / (2 alpha) + gamma a b / 2

        Cost per gradient: ``Z`` 2ab(a+b) flops, the two ``W`` 2ab(a+b); nothing (ab, ab).
        A dense ``KroneckerDenseCurvature`` (research sizes) is unbatched only.
        """
        alpha, dL, dR = x.alpha, x.left.d, x.right.d
        if isinstance(Ht, KroneckerDenseCurvature):
            self._unbatched_only("precision_egrad_eigenbasis (dense curvature)")
            Sinv = self.power(x, -1.0)
            E = -0.5 * Sinv @ (Ht.H - gamma * self.to_matrix(x)) @ Sinv
            return self.eigen_gradient(x, sym(E))
        if not isinstance(Ht, KroneckerGOP):
            raise TypeError(
                f"Ht: expected KroneckerGOP or KroneckerDenseCurvature, got {type(Ht).__name__}"
            )
        Z, lam = Ht.Z, Ht.damping
        want = (*self.batch_shape, "m", self.a, self.b)
        if Z.ndim != len(want) or tuple(Z.shape[-2:]) != want[-2:] or Z.shape[:-3] != want[:-3]:
            raise ValueError(f"Ht.Z: expected shape {want}, got {tuple(Z.shape)}")
        m = Z.shape[-3]  # gradients per element
        sdL, sdR = self._sample_axis(dL), self._sample_axis(dR)  # broadcast over the m axis
        W_L = torch.einsum("...kij,...klj->...il", Z / sdR[..., None, :], Z) / m
        W_R = torch.einsum("...kij,...kil->...jl", Z / sdL[..., :, None], Z) / m
        T = (Z * Z / (sdL[..., :, None] * sdR[..., None, :])).sum((-3, -2, -1)) / m
        trL, trR = (1.0 / dL).sum(-1), (1.0 / dR).sum(-1)
        W_L = W_L + (lam * trR)[..., None, None] * torch.eye(self.a, dtype=Z.dtype, device=Z.device)
        W_R = W_R + (lam * trL)[..., None, None] * torch.eye(self.b, dtype=Z.dtype, device=Z.device)
        T = T + lam * trL * trR
        a2 = alpha[..., None, None] ** 2
        G_L = -W_L / (2 * a2 * dL[..., :, None] * dL[..., None, :]) + torch.diag_embed(
            gamma * self.b / (2 * alpha[..., None]) / dL
        )
        G_R = -W_R / (2 * a2 * dR[..., :, None] * dR[..., None, :]) + torch.diag_embed(
            gamma * self.a / (2 * alpha[..., None]) / dR
        )
        t = -T / (2 * alpha) + 0.5 * gamma * self.a * self.b
        return KroneckerEigenGradient(t, G_L, G_R)

    # Retraction --------------------------------------------------------------------------

    def retr(
        self,
        x: KroneckerSpectralPoint,
        tangent: KroneckerSpectralTangent,
        lr: float = 1.0,
        *,
        cayley: str | None = None,
        exponential: bool | str = True,
        jacobi: bool = False,
        second_order: bool = False,
    ) -> KroneckerSpectralPoint:
        """Chart map at ``lr * tangent`` (the factors' ``m`` are projected to sum zero).

        ``exponential=True``: ``alpha e^{lr n}``, ``d_l e^{lr m_l}``, then rounding of
        ``det S_l`` is moved into ``alpha`` (``normalize``; ``S`` unchanged).
        ``exponential=False`` (paper Fig. 6 right, the practical scheme):
        ``n_l = d_l (1 + lr (m_l + n))``, ``d_l <- n_l / geomean(n_l)``,
        ``alpha <- alpha sqrt(geomean(n_L) geomean(n_R))``; for the GOP this is
        ``n_l = (1 - gamma beta2) d_l + beta2 / (alpha kappa_l) (diag(W_l) + lambda_l)``.
        Rotations: ``B_l Cayley(Skew(lr M_l))``, Neumann arguments clipped to
        ``neumann_max_norm``; ``jacobi=True``: exact 2 x 2 Jacobi angles
        (``blocks.jacobi_angles``); ``second_order=True``: each factor turned to the
        eigenvectors of its first-order step up to third-order terms
        (``blocks.second_order_angles``, with the factor's eigenvalues before and after).
        """
        lr = check_positive(lr, "lr")
        exponential = check_exponential(exponential)
        jacobi = check_flag(jacobi, "jacobi")
        second_order = check_flag(second_order, "second_order")
        method = self.cayley if cayley is None else check_cayley(cayley)
        self.validate_layout(x)
        check_tangent_type(tangent, KroneckerSpectralTangent)
        check_tangent_type(tangent.left, SpectralTangent, "tangent.left")
        check_tangent_type(tangent.right, SpectralTangent, "tangent.right")
        bs, dt, dev = self.batch_shape, self.dtype, self.device
        check_tensor(tangent.n, "tangent.n", shape=bs, dtype=dt, device=dev)
        new = []
        for name, man, p, t in (
            ("left", self.left, x.left, tangent.left),
            ("right", self.right, x.right, tangent.right),
        ):
            s = man.n
            check_tensor(t.m, f"tangent.{name}.m", shape=(*bs, s), dtype=dt, device=dev)
            check_tensor(t.M, f"tangent.{name}.M", shape=(*bs, s, s), dtype=dt, device=dev)
            m = _center(t.m)
            if exponential is True:
                d = blocks.eig_retract(p.d, lr * m)
            else:
                d = blocks.eig_retract(p.d, lr * (m + tangent.n[..., None]), exponential)
            B = blocks.rotation_retract(
                p.B,
                lr * t.M,
                method,
                man.neumann_max_norm,
                jacobi,
                second_order=(p.d, d) if second_order else None,
            )
            new.append(SpectralPoint(B, d))
        alpha = x.alpha * torch.exp(lr * tangent.n) if exponential is True else x.alpha
        if exponential is not True:
            # n_l carries the alpha step; normalize() moves sqrt(geomean) of each into alpha.
            cL, cR = torch.log(new[0].d).mean(-1), torch.log(new[1].d).mean(-1)
            alpha = alpha * torch.exp(-(cL + cR) / 2)
        return self.normalize(alpha, *new)

    # Vectors -----------------------------------------------------------------------------

    def zero_tangent(self, x: KroneckerSpectralPoint) -> KroneckerSpectralTangent:
        return KroneckerSpectralTangent(
            torch.zeros_like(x.alpha),
            self.left.zero_tangent(x.left),
            self.right.zero_tangent(x.right),
        )

    def to_vector(self, tangent: KroneckerSpectralTangent) -> Tensor:
        """``[n, m_L[:a-1], M_L[tril], m_R[:b-1], M_R[tril]]``: free coordinates, length ``dim``
        (*batch, dim)."""
        parts = [tangent.n[..., None]]
        for man, t in ((self.left, tangent.left), (self.right, tangent.right)):
            v = man.to_vector(t)
            parts += [v[..., : man.n - 1], v[..., man.n :]]
        return torch.cat(parts, dim=-1)

    def covector_to_vector(self, covector: KroneckerSpectralTangent) -> Tensor:
        """Free-coordinate components of a covector: ``m`` part ``g_i - g_last``."""
        parts = [covector.n[..., None]]
        for man, t in ((self.left, covector.left), (self.right, covector.right)):
            v = man.to_vector(t)
            parts += [v[..., : man.n - 1] - v[..., man.n - 1 : man.n], v[..., man.n :]]
        return torch.cat(parts, dim=-1)

    def from_vector(self, vec: Tensor) -> KroneckerSpectralTangent:
        check_tensor(vec, "vec", shape=(*self.batch_shape, self.dim), finite=False)
        out, i = [], 1
        for man in (self.left, self.right):
            s = man.n
            free = vec[..., i : i + s - 1]
            rot = vec[..., i + s - 1 : i + s - 1 + s * (s - 1) // 2]
            i += s - 1 + s * (s - 1) // 2
            m = torch.cat([free, -free.sum(-1, keepdim=True)], dim=-1)
            out.append(man.from_vector(torch.cat([m, rot], dim=-1)))
        return KroneckerSpectralTangent(vec[..., 0], *out)
