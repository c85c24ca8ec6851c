"""The contract every spectral manifold fulfils.

``RGD``, the Gaussian layer and the solvers are written against ``SpectralManifold``
only; they never switch on concrete classes. A manifold describes points ``x`` (immutable
tensor containers), local charts at ``x`` whose origin is ``x``, the Fisher-Rao metric at the
chart origin (diagonal or block-diagonal, in closed form) and the chart map itself as the
retraction. The argument checks it re-exports (``check_tensor``, ``check_positive``, ...)
live in ``manifold_spectral.validation``.
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..linalg import all_finite, check_cayley
from ..validation import (  # re-exported: the manifolds' public argument checks
    NonFiniteError,
    check_batch,
    check_count,
    check_positive,
    check_real,
    check_size,
    check_tensor,
    resolve_dtype,
)
from .checks import check_tangent_like

__all__ = [
    "SpectralManifold",
    "NonFiniteError",
    "check_tensor",
    "check_real",
    "check_positive",
    "check_cayley",
    "check_size",
    "check_count",
    "check_batch",
    "resolve_dtype",
]


class SpectralManifold(abc.ABC):
    """Base protocol of the spectral manifolds (geoopt-style names where the concept matches).

    Subclasses define: ``origin``, ``random``, ``to_matrix``, ``power``, ``apply_power``,
    ``logdet``, ``check_point``, ``metric``, ``chart``, ``local_gradient``,
    ``natural_gradient``, ``retr``, ``zero_tangent``, ``to_vector``/``from_vector`` and
    ``egrad_shape``.

    Batches: a manifold built with ``batch=k`` describes ``k`` independent points of the
    same shape at once; every tensor of a point, tangent or gradient then carries a leading
    dimension of size ``k`` (``batch_shape``), and every formula acts element by element.
    ``batch=None`` (the default) is the unbatched manifold.
    """

    def __getstate__(self) -> dict[str, Any]:
        # The check cache (validate_layout) is a weak reference, which cannot be pickled and
        # means nothing in another process: a pickled manifold starts without it.
        state = dict(self.__dict__)
        state.pop("_layout_passed", None)
        return state

    dtype: torch.dtype
    device: torch.device

    #: Batch size ``k`` of a batched manifold, ``None`` for an unbatched one.
    batch: int | None = None

    #: Number of local coordinates (the chart dimension).
    dim: int

    @property
    @abc.abstractmethod
    def egrad_shape(self) -> tuple[int, ...]:
        """Shape of the Euclidean gradient ``df/dS`` accepted by ``natural_gradient``
        (``batch_shape`` included)."""

    @abc.abstractmethod
    def origin(self) -> Any:
        """The point representing the identity matrix."""

    @abc.abstractmethod
    def random(self, generator: torch.Generator | None = None) -> Any:
        """A random point (for tests and initialisation)."""

    @abc.abstractmethod
    def to_matrix(self, x: Any) -> Tensor:
        """The dense SPD matrix ``S`` represented by ``x``."""

    @abc.abstractmethod
    def power(self, x: Any, r: float) -> Tensor:
        """The dense matrix ``S^r`` computed elementwise on the eigenvalues."""

    @abc.abstractmethod
    def apply_power(self, x: Any, v: Tensor, r: float) -> Tensor:
        """``S^r v`` without forming ``S^r``."""

    @abc.abstractmethod
    def logdet(self, x: Any) -> Tensor:
        """``log det S``."""

    @abc.abstractmethod
    def check_point(self, x: Any, *, fast: bool = False) -> tuple[bool, str | None]:
        """``(ok, reason)``: whether ``x`` is a valid point of this manifold.

        ``fast=True`` replaces O(n^3) checks (orthogonality of ``B``) by O(n^2) probes with a
        loose tolerance: what the update paths use to reject garbage cheaply.
        """

    @abc.abstractmethod
    def metric(self, x: Any) -> Any:
        """Diagonal of the Fisher-Rao metric at the chart origin, as a tangent."""

    @abc.abstractmethod
    def chart(self, x: Any) -> Callable[[Any], Any]:
        """The differentiable chart map ``eta -> point`` centred at ``x``."""

    @abc.abstractmethod
    def local_gradient(self, x: Any, egrad: Tensor) -> Any:
        """Euclidean gradient of ``f(chart(x)(eta))`` at ``eta = 0`` (``J^T egrad``)."""

    @abc.abstractmethod
    def natural_gradient(self, x: Any, egrad: Tensor) -> Any:
        """``F^+ grad_eta f`` at the chart origin (Moore-Penrose inverse of the metric)."""

    @abc.abstractmethod
    def natural_gradient_eigenbasis(self, x: Any, G: Any) -> Any:
        """``natural_gradient`` from the gradient rotated into the eigenbasis."""

    @abc.abstractmethod
    def rotate(self, x: Any, E: Tensor) -> Any:
        """A symmetric ``E`` in the eigenbasis of ``x`` (``Sym(B^T E B)`` or its analogue)."""

    @abc.abstractmethod
    def gop_eigenbasis(self, x: Any, V: Tensor, damping: float = 0.0) -> Any:
        """``V V^T / m + damping I`` for the ``m`` columns of ``V`` (n, m), in the eigenbasis of
        ``x``; with a batch, ``V`` is (k, n, m) and each element gets the GOP of its columns."""

    @abc.abstractmethod
    def precision_egrad_eigenbasis(self, x: Any, Ht: Any, gamma: float) -> Any:
        """Gradient of the Gaussian objective w.r.t. the precision, in the eigenbasis.

        ``dL/dS = -1/2 S^-1 (H - gamma S) S^-1`` (paper Sec. 2, ``dL/dS^-1 = (H - gamma S)/2``),
        from the curvature ``Ht`` already in the eigenbasis (``rotate`` / ``gop_eigenbasis``).
        """

    def closed_form_step(
        self,
        x: Any,
        Ht: Any,
        beta2: float,
        gamma: float,
        *,
        exponential: str = "exact",
        cayley: str | None = None,
        jacobi: bool = False,
        updated_gaps: bool = False,
        basis_scale: float = 1.0,
    ) -> Any | None:
        """The precision's RGD step ``retr(x, -F^+ grad, beta2)`` for the gradient
        ``precision_egrad_eigenbasis(x, Ht, gamma)``, in closed form where this manifold has
        one for the curvature ``Ht`` (``Gaussian.precision_step`` then takes it), else
        ``None`` (the default): the caller composes the three steps. Options as in ``retr``;
        ``updated_gaps``: the rotation's gaps after the eigenvalue step (a closed form's own
        variant, ``manifolds.kronecker_gop``), and ``basis_scale``: the rotation's step
        ``basis_scale * beta2``; the result is unchecked (``RGD.finish_step`` checks it)."""
        return None

    @abc.abstractmethod
    def retr(self, x: Any, tangent: Any, lr: float = 1.0, **options: Any) -> Any:
        """The chart map at ``lr * tangent``: the retraction of the chart-based RGD."""

    @abc.abstractmethod
    def zero_tangent(self, x: Any) -> Any:
        """The zero tangent at ``x``."""

    @abc.abstractmethod
    def to_vector(self, tangent: Any) -> Tensor:
        """Flatten the free chart coordinates of a tangent into a vector of length ``dim``."""

    @abc.abstractmethod
    def from_vector(self, vec: Tensor) -> Any:
        """Inverse of ``to_vector``."""

    # Shared, concrete methods -----------------------------------------------------------

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading shape of every tensor of a point: ``()`` unbatched, ``(k,)`` with a batch."""
        return () if self.batch is None else (self.batch,)

    def _unbatched_only(self, what: str) -> None:
        """Raise ``NotImplementedError`` for a method that has no batched form."""
        if self.batch is not None:
            raise NotImplementedError(
                f"{type(self).__name__}.{what} is not available with batch={self.batch}; use "
                "the unbatched manifold on each element (point.unbind() / Point.stack(points))"
            )

    def _first_failure(self, ok: Tensor) -> tuple[str, tuple[int, ...]] | None:
        """``None`` when every entry of the batch-shaped boolean ``ok`` holds; otherwise the
        reason prefix and index of the first that does not: ``("element i: ", (i,))`` with a
        batch, ``("", ())`` without (one host sync, as an unbatched check)."""
        if ok.ndim == 0:
            return None if bool(ok) else ("", ())
        if bool(ok.all()):
            return None
        i = int((~ok).reshape(-1).nonzero()[0, 0])
        return f"element {i}: ", (i,)

    def reorthogonalize(self, x: Any, steps: int = 1) -> Any:
        """Undo orthogonality drift of the rotation factors (identity where there are none)."""
        return x

    def metric_matrix(self, x: Any) -> Tensor:
        """The metric at the chart origin, dense (*batch, dim, dim), in ``to_vector``
        coordinates."""
        return torch.diag_embed(self.to_vector(self.metric(x)))

    def covector_to_vector(self, covector: Any) -> Tensor:
        """Components of a chart covector (e.g. ``local_gradient``) in ``to_vector`` coordinates."""
        return self.to_vector(covector)

    def inner(self, x: Any, u: Any, v: Any | None = None) -> Tensor:
        """Fisher-Rao inner product ``<u, v>_F`` of two chart tangents at the origin of ``x``
        (one per batch element: shape ``batch_shape``). ``x`` is checked as a point, ``u`` and
        ``v`` as tangents of the metric's type and shapes (``ValueError``/``TypeError`` naming
        them: a tangent of another batch shape would broadcast into one wrong sum); the point's
        check is the fast one (``check_point(fast=True)``), so ``inner`` stays O(n^2)."""
        self.validate_point(x, fast=True)
        w = self.metric(x)
        check_tangent_like(u, w, "u")
        if v is None:
            v = u
        else:
            check_tangent_like(v, w, "v")
        triples = zip(w.leaves(), u.leaves(), v.leaves(), strict=True)
        return sum((a * b * c).reshape(*self.batch_shape, -1).sum(-1) for a, b, c in triples)

    def validate_point(self, x: Any, name: str = "x", *, fast: bool = False) -> None:
        """Raise ``ValueError``/``TypeError`` when ``check_point`` fails."""
        ok, reason = self.check_point(x, fast=fast)
        if not ok:
            exc = TypeError if reason and "dtype" in reason else ValueError
            raise exc(f"{name}: not a point of {self!r}: {reason}")

    def validate_layout(self, x: Any, name: str = "x") -> None:
        """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``x`` is a point container
        of this manifold whose tensors have its dtype, shapes and device.

        Attribute reads only (no reduction, no host sync): the guard of the paths that take a
        point the caller has already checked (``natural_gradient``, ``apply_power``,
        ``gop_eigenbasis``), so that a foreign point fails with a named error instead of
        torch's dtype or shape message. The last point that passed is remembered (a weak
        reference: points are frozen, and a tensor's dtype and device cannot change), so the
        several calls of one update on the same point cost one check.
        """
        last = self.__dict__.get("_layout_passed")
        if last is not None and last() is x:
            return
        if self._layout_ok(x):
            self._layout_passed = weakref.ref(x)
            return
        fields = self._point_fields(x)
        if fields is None:
            raise TypeError(f"{name}: not a point of {self!r}: got a {type(x).__name__}")
        reason = self._check_point_tensors(fields, finite=False)
        if reason:
            exc = TypeError if "dtype" in reason or "not a tensor" in reason else ValueError
            raise exc(f"{name}: not a point of {self!r}: {reason}")

    def _point_fields(self, x: Any) -> dict[str, tuple[Any, tuple[int, ...]]] | None:
        """``{field name: (tensor, shape without the batch)}`` of a point, for the layout
        checks; ``None`` when ``x`` is not this manifold's point container."""
        raise NotImplementedError(f"{type(self).__name__}._point_fields")

    def _layout_ok(self, x: Any) -> bool:
        """Fast path of ``validate_layout`` (about 2 us): ``True`` when the layout is right;
        ``False`` sends ``validate_layout`` to the field-by-field check that explains."""
        return False

    def _tensor_ok(self, t: Any, shape: tuple[int, ...]) -> bool:
        """``t`` is a tensor of this manifold's dtype and device with shape ``shape``."""
        return (
            isinstance(t, Tensor)
            and t.dtype == self.dtype
            and t.shape == shape
            and t.device == self.device
        )

    def _representable(self, x: Any, name: str, what: str) -> Any:
        """``x`` if it is a point of this manifold (``check_point(fast=True)``), else a
        ``ValueError`` naming ``name``: for the constructors (``from_matrix``, ``random``,
        ...) that compute in float64 and round to the manifold's dtype, where a value outside
        its range becomes ``inf`` or ``0``, or subnormal, whose reciprocal (``S^-1``, the
        preconditioner's powers) overflows. ``what`` describes the offending values."""
        ok, reason = self.check_point(x, fast=True)
        if ok:
            tiny = torch.finfo(self.dtype).tiny
            for field, (t, _) in (self._point_fields(x) or {}).items():
                if field.split(".")[-1] in ("d", "alpha") and bool((t < tiny).any()):
                    ok, reason = False, f"{field} below the smallest normal number {tiny:.3g}"
                    break
        if not ok:
            raise ValueError(f"{name}: not representable as a point of {self!r}: {what} ({reason})")
        return x

    def validate_egrad(self, egrad: Any, name: str = "egrad") -> Tensor:
        """Check shape, dtype, device and finiteness of a Euclidean gradient."""
        return check_tensor(
            egrad, name, shape=self.egrad_shape, dtype=self.dtype, device=self.device
        )

    def validate_eigen_gradient(self, G: Any, name: str = "G", *, finite: bool = True) -> Any:
        """Check a gradient already in the eigenbasis (the input of
        ``natural_gradient_eigenbasis``): here a tensor shaped like ``egrad``; ``finite``
        adds one reduction. Manifolds with another representation override it."""
        return check_tensor(
            G, name, shape=self.egrad_shape, dtype=self.dtype, device=self.device, finite=finite
        )

    def _check_point_tensors(
        self, fields: dict[str, tuple[Tensor, tuple[int, ...]]], *, finite: bool = True
    ) -> str | None:
        """Type, dtype, shape (``batch_shape + shape``), device and (``finite``) finiteness of
        each field; the reason of a non-finite batched field names the first bad element."""
        bs = self.batch_shape
        for fname, (t, shape) in fields.items():
            shape = bs + tuple(shape)
            if not isinstance(t, Tensor):
                return f"{fname} is not a tensor"
            if t.dtype != self.dtype:
                return f"{fname} has dtype {t.dtype}, expected {self.dtype}"
            if tuple(t.shape) != shape:
                return f"{fname} has shape {tuple(t.shape)}, expected {shape}"
            if t.device != self.device:
                return f"{fname} is on {t.device}, expected {self.device}"
            if finite and not all_finite(t):
                fail = self._first_failure(torch.isfinite(t).reshape(*bs, -1).all(-1))
                return f"{fail[0]}{fname} contains NaN or Inf"
        return None
