"""Point and gradient checks of ``KroneckerSpectralSPD`` (``check_point`` and the layout
tests that ``SpectralManifold.validate_point`` builds on, ``validate_eigen_gradient``).

``check_point``'s fast path compares every bound of a valid point in one stacked comparison
(one host synchronisation); a point that fails is re-examined field by field for the reason.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..linalg import as_dtype
from .base import check_tensor
from .checks import det_tol, probe_tol
from .kronecker_points import KroneckerEigenGradient, KroneckerSpectralPoint

__all__ = ["KroneckerChecksMixin"]


class KroneckerChecksMixin:
    """``check_point``, its bounds and layout tests, and ``validate_eigen_gradient`` for a
    manifold with ``left``/``right`` factor manifolds, ``a``, ``b``, ``batch_shape``."""

    def check_point(self, x: Any, *, fast: bool = False) -> tuple[bool, str | None]:
        """``(ok, reason)``: ``alpha > 0`` a finite scalar, valid factors, ``det S_l = 1``.

        A batch passes when every element does; the reason names the first failing element
        (``"element i: ..."``, after ``"left: "``/``"right: "`` for a factor).
        """
        if self._layout_ok(x):  # one host synchronisation for a valid point
            # Every bound in one comparison: |log alpha| finite is 0 < alpha < Inf (NaN fails);
            # |log det S_l| <= tol also proves every d_l positive and finite (a log of 0, a
            # negative, Inf or NaN makes the sum infinite or NaN); the orthogonality probe
            # proves B_l finite. The values stacked in ``wide`` (exact: a float32 probe
            # error in float64), the bounds rounded as each comparison's own operand would
            # be (``_point_bounds``): the verdicts of separate comparisons, with a third
            # fewer tensor calls.
            wide = torch.float64 if self.dtype == torch.float64 else torch.float32
            factors = ((self.left, x.left), (self.right, x.right))
            vals = [torch.log(as_dtype(x.alpha, wide))]
            vals += [torch.log(as_dtype(p.d, wide)).sum(-1) for _, p in factors]
            if fast:
                vals += [man._probe_error(p.B) for man, p in factors]
            ok = (torch.stack(vals, -1).abs() <= self._point_bounds(wide, fast)).all()
            if not fast:
                ok = (
                    ok
                    & self.left._basis_ok(x.left.B, False)
                    & self.right._basis_ok(x.right.B, False)
                )
            if bool(ok):
                return True, None
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

    def _point_bounds(self, wide: torch.dtype, fast: bool) -> Tensor:
        """The bounds of ``check_point``'s stacked values ``|log alpha|``, ``|log det S_L|``,
        ``|log det S_R|`` (and, ``fast``, the two probe errors), in ``wide``: the largest
        finite ``wide`` number, the ``det_tol`` of each side rounded to ``wide``, and
        ``probe_tol`` rounded to float32 (the probe error's dtype). Made once per manifold."""
        cache = self.__dict__.setdefault("_bounds", {})
        t = cache.get((wide, fast))
        if t is None:
            bounds = [torch.finfo(wide).max]
            bounds += [det_tol(self.dtype, man.n) for man in (self.left, self.right)]
            if fast:
                probe = torch.tensor(probe_tol(self.dtype), dtype=torch.float32).item()
                bounds += [probe, probe]
            t = cache[wide, fast] = torch.tensor(bounds, dtype=wide, device=self.device)
        return t

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
