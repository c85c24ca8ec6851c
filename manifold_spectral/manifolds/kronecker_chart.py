"""Chart, retraction and free coordinates of ``KroneckerSpectralSPD`` (paper Claim 6).

Chart at ``x``: ``alpha(n) = alpha exp(n)``; ``d_l(m_l) = d_l * exp(m_l)`` with
``sum(m_l) = 0``; ``B_l(M_l) = B_l Cayley(Skew(M_l))``. ``KroneckerChartMixin`` holds these
methods of ``KroneckerSpectralSPD`` (``chart``, ``retr`` and the tangent <-> vector maps); it
is not a manifold by itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..validation import check_exponential, check_flag
from . import blocks
from .base import check_cayley, check_positive, check_tensor
from .checks import check_tangent_type
from .kronecker_metric import _center
from .kronecker_points import KroneckerSpectralPoint, KroneckerSpectralTangent
from .points import SpectralPoint, SpectralTangent

__all__ = ["KroneckerChartMixin"]


class KroneckerChartMixin:
    """The chart and retraction methods of ``KroneckerSpectralSPD`` (see the module
    docstring); they read the manifold's factor manifolds ``left``/``right``, ``cayley``,
    ``dim`` and ``normalize``."""

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

    # Retraction --------------------------------------------------------------------------

    def retr(
        self,
        x: KroneckerSpectralPoint,
        tangent: KroneckerSpectralTangent,
        lr: float = 1.0,
        *,
        cayley: str | None = None,
        exponential: str = "exact",
        jacobi: bool = False,
        second_order: bool = False,
    ) -> KroneckerSpectralPoint:
        """Chart map at ``lr * tangent`` (the factors' ``m`` are projected to sum zero).

        ``exponential="exact"``: ``alpha e^{lr n}``, ``d_l e^{lr m_l}``, then rounding of
        ``det S_l`` is moved into ``alpha`` (``normalize``; ``S`` unchanged).
        ``exponential="truncated"`` (paper Fig. 6 right, the practical scheme; ``"continued"``:
        its positive continuation, ``blocks.eig_retract``):
        ``n_l = d_l (1 + lr (m_l + n))``, ``d_l <- n_l / geomean(n_l)``,
        ``alpha <- alpha sqrt(geomean(n_L) geomean(n_R))``; for the GOP this is
        ``n_l = (1 - gamma beta2) d_l + beta2 / (alpha kappa_l) (diag(W_l) + lambda_l)``.
        Rotations: ``B_l Cayley(Skew(lr M_l))`` (the strictly lower triangle of ``M_l``, as
        ``chart`` reads it), Neumann arguments clipped to
        ``neumann_max_norm``; ``jacobi=True``: exact 2 x 2 Jacobi angles
        (``blocks.jacobi_angles``); ``second_order=True``: each factor turned to the
        eigenvectors of its first-order step up to third-order terms
        (``blocks.second_order_angles``, with the factor's eigenvalues before and after).
        """
        self._unpadded_only("retr")
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
            if exponential == "exact":
                d = blocks.eig_retract(p.d, lr * m)
            else:
                d = blocks.eig_retract(p.d, lr * (m + tangent.n[..., None]), exponential)
            B = blocks.rotation_retract(
                p.B,
                torch.tril(lr * t.M, -1),  # the chart's coordinates, as ``chart`` reads them
                method,
                man.neumann_max_norm,
                jacobi,
                second_order=(p.d, d) if second_order else None,
                squarings=man.neumann_squarings,
            )
            new.append(SpectralPoint(B, d))
        if exponential == "exact":
            return self.normalize(x.alpha * torch.exp(lr * tangent.n), *new)
        # Both n_l carry the alpha step: alpha takes sqrt(geomean) of each.
        return self.normalize(x.alpha, *new, shared=True)

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
