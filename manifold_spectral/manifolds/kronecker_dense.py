"""Dense paths of ``KroneckerSpectralSPD``: points from dense factors or a dense ``S`` and back
(``(ab, ab)`` matrices: research sizes, initialisation and tests; unbatched only).

``from_kronecker`` and ``from_matrix`` run one ``eigh`` per factor (and ``from_matrix`` one
SVD of the rearranged ``S``, Van Loan & Pitsianis 1993): initialisation only, never on a
per-step path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..linalg import nearest_kronecker_factors, sym
from ..validation import symmetric_matrix
from .base import check_positive, check_real
from .checks import check_positive_definite, det_tol
from .kronecker_points import KroneckerSpectralPoint
from .points import SpectralPoint

__all__ = ["KroneckerDenseMixin"]


class KroneckerDenseMixin:
    """``from_factors``, ``from_kronecker``, ``from_matrix``, ``to_matrix`` and ``power`` of
    ``KroneckerSpectralSPD``; they read the manifold's ``a``, ``b``, ``dtype``, factor
    manifolds ``left``/``right`` and its ``normalize`` / ``_representable`` /
    ``_unbatched_only`` helpers. Not a manifold by itself."""

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
        self.validate_layout(x)
        return x.alpha * torch.kron(self.left.to_matrix(x.left), self.right.to_matrix(x.right))

    def power(self, x: KroneckerSpectralPoint, r: float) -> Tensor:
        """Dense ``S^r = alpha^r (S_L^r kron S_R^r)``. Unbatched."""
        self._unbatched_only("power")
        self.validate_layout(x)
        check_real(r, "r")
        return x.alpha.pow(r) * torch.kron(self.left.power(x.left, r), self.right.power(x.right, r))
