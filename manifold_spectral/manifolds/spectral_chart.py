"""The chart, Fisher-Rao metric, gradients and retraction of ``SpectralSPD`` (paper Sec. 3,
Claims 2-4): the methods that act on tangents and Euclidean gradients, next to the point
methods of ``spectral``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import validation
from ..linalg import sym
from . import blocks
from .base import check_cayley, check_positive, check_tensor
from .checks import check_gop_columns, check_tangent_type
from .points import SpectralPoint, SpectralTangent

__all__ = ["SpectralChartMixin"]


class SpectralChartMixin:
    """Chart, metric, gradients and ``retr`` of ``SpectralSPD``; they read the manifold's
    ``n``, ``dtype``, ``device``, ``cayley``, ``eig_tol``, ``gap_damping`` and
    ``neumann_max_norm``. Not a manifold by itself."""

    # Chart, metric, gradients ------------------------------------------------------------

    def rotate(self, x: SpectralPoint, egrad: Tensor) -> Tensor:
        """``G = Sym(B^T E B)``, the Euclidean gradient in the eigenbasis."""
        self.validate_layout(x)
        check_tensor(
            egrad,
            "egrad",
            shape=self.egrad_shape,
            dtype=self.dtype,
            device=self.device,
            finite=False,
        )
        return sym(x.B.mT @ egrad @ x.B)

    def gop_eigenbasis(self, x: SpectralPoint, V: Tensor, damping: float = 0.0) -> Tensor:
        """``Q Q^T / m + damping I`` with ``Q = B^T V``: the GOP of the ``m`` columns of ``V``
        (*batch, n, m), in the eigenbasis (*batch, n, n)."""
        self.validate_layout(x)
        check_gop_columns(V, (*self.batch_shape, self.n), self.dtype, self.device)
        Q = x.B.mT @ V
        Ht = (Q @ Q.mT) / V.shape[-1]
        if damping:
            Ht = Ht + damping * torch.eye(self.n, dtype=Ht.dtype, device=Ht.device)
        return Ht

    def precision_egrad_eigenbasis(self, x: SpectralPoint, Ht: Tensor, gamma: float) -> Tensor:
        """``B^T (dL/dS) B = -1/2 (Ht - gamma Diag(d)) / (d_i d_j)`` with ``Ht = B^T H B``."""
        check_tensor(
            Ht, "Ht", shape=self.egrad_shape, dtype=self.dtype, device=self.device, finite=False
        )
        A = Ht - gamma * torch.diag_embed(x.d)
        return -0.5 * A / (x.d[..., :, None] * x.d[..., None, :])

    def metric(self, x: SpectralPoint) -> SpectralTangent:
        """Diagonal of the metric at the chart origin (Claim 4): ``m: 1/2``, ``M_ij: C_ij``."""
        return SpectralTangent(blocks.eig_metric(x.d), blocks.rotation_metric(x.d))

    def chart(self, x: SpectralPoint) -> Callable[[SpectralTangent], SpectralPoint]:
        """Differentiable chart ``(m, M) -> (B Cayley(Skew(Tril M)), d exp(m))``, exact Cayley."""

        def phi(eta: SpectralTangent) -> SpectralPoint:
            return SpectralPoint(
                blocks.rotation_retract(x.B, torch.tril(eta.M, -1), "exact"),
                blocks.eig_retract(x.d, eta.m),
            )

        return phi

    def local_gradient(self, x: SpectralPoint, egrad: Tensor) -> SpectralTangent:
        """``grad_eta f`` at the origin: ``m_i: d_i G_ii``, ``M_ij: 4 (d_j - d_i) G_ij``."""
        self.validate_layout(x)
        G = self.rotate(x, self.validate_egrad(egrad))
        return SpectralTangent(
            blocks.eig_local_grad(x.d, G.diagonal(dim1=-2, dim2=-1)),
            blocks.rotation_local_grad(x.d, G),
        )

    def natural_gradient(self, x: SpectralPoint, egrad: Tensor) -> SpectralTangent:
        """``F^+ grad_eta f``: ``m = 2 d * diag(G)``, ``M_ij = -d_i d_j G_ij / (d_i - d_j)``.

        ``G = Sym(B^T egrad B)``; entries with ``|d_i - d_j| <= eig_tol * max(d_i, d_j)`` are 0
        (Moore-Penrose inverse of the singular metric). The RGD step is
        ``retr(x, -natural_gradient(x, egrad), lr)`` (DESIGN.md section 2).
        """
        self.validate_layout(x)
        return self.natural_gradient_eigenbasis(x, self.rotate(x, self.validate_egrad(egrad)))

    def natural_gradient_eigenbasis(self, x: SpectralPoint, G: Tensor) -> SpectralTangent:
        """``natural_gradient`` from an already rotated symmetric ``G = B^T egrad B``."""
        self.validate_layout(x)
        self.validate_eigen_gradient(G, finite=False)
        return SpectralTangent(
            blocks.eig_natural_grad(x.d, G.diagonal(dim1=-2, dim2=-1)),
            blocks.rotation_natural_grad(
                x.d, G, self.eig_tol, damping=self.gap_damping, floor=self.gap_floor
            ),
        )

    def retr(
        self,
        x: SpectralPoint,
        tangent: SpectralTangent,
        lr: float = 1.0,
        *,
        cayley: str | None = None,
        exponential: str = "exact",
        jacobi: bool = False,
        second_order: bool = False,
    ) -> SpectralPoint:
        """Chart map at ``lr * tangent``: ``(B Cayley(Skew(lr M)), d exp(lr m))``; only the
        strictly lower triangle of ``M`` is read, as by ``chart``.

        The result is not checked: a step large enough to overflow (``d`` to ``inf`` or ``0``)
        returns a point that ``check_point`` rejects; ``RGD`` and ``Gaussian``, the steps
        built on this map, check it and raise ``FloatingPointError`` (no extra host
        synchronisation here, on every step).

        ``cayley`` overrides the manifold default; ``"neumann"`` rescales ``Skew(lr M)`` to a
        spectral-norm bound ``<= neumann_max_norm``. ``exponential="truncated"`` uses
        ``d (1 + lr m)`` (paper Fig. 5), ``"continued"`` its positive continuation. With exact
        Cayley and exponential this is the exact RGD step in the chart. ``jacobi=True`` turns
        each eigenvector pair by its exact 2 x 2 Jacobi angle instead of the linearised one
        (``blocks.jacobi_angles``; the same to first order, bounded at near-repeated
        eigenvalues). ``second_order=True`` turns ``B`` to the eigenvectors of the first-order
        step ``B (D' + E) B^T`` up to third-order terms (``blocks.second_order_angles``: the
        Jacobi angles with the new eigenvalues' gaps
        plus the coupling of each pair through the other eigenvectors; one more n x n product;
        implies ``jacobi``).
        """
        lr = check_positive(lr, "lr")
        exponential = validation.check_exponential(exponential)
        jacobi = validation.check_flag(jacobi, "jacobi")
        second_order = validation.check_flag(second_order, "second_order")
        method = self.cayley if cayley is None else check_cayley(cayley)
        self.validate_layout(x)
        check_tangent_type(tangent, SpectralTangent)
        bs = self.batch_shape
        for name, t, shape in (
            ("tangent.m", tangent.m, (*bs, self.n)),
            ("tangent.M", tangent.M, (*bs, self.n, self.n)),
        ):
            check_tensor(t, name, shape=shape, dtype=self.dtype, device=self.device)
        d = blocks.eig_retract(x.d, lr * tangent.m, exponential)
        B = blocks.rotation_retract(
            x.B,
            # the chart's coordinates: the strictly lower triangle (as ``chart`` reads it)
            torch.tril(lr * tangent.M, -1),
            method,
            self.neumann_max_norm,
            jacobi,
            second_order=(x.d, d) if second_order else None,
            squarings=self.neumann_squarings,
        )
        return SpectralPoint(B, d)

    def zero_tangent(self, x: SpectralPoint) -> SpectralTangent:
        return SpectralTangent(torch.zeros_like(x.d), torch.zeros_like(x.B))

    def to_vector(self, tangent: SpectralTangent) -> Tensor:
        """``[m, M[tril_indices]]`` of length ``n + n(n-1)/2`` (*batch, dim)."""
        i, j = torch.tril_indices(self.n, self.n, -1, device=tangent.M.device)
        return torch.cat([tangent.m, tangent.M[..., i, j]], dim=-1)

    def from_vector(self, vec: Tensor) -> SpectralTangent:
        bs = self.batch_shape
        check_tensor(vec, "vec", shape=(*bs, self.dim), finite=False)
        i, j = torch.tril_indices(self.n, self.n, -1, device=vec.device)
        M = torch.zeros(*bs, self.n, self.n, dtype=vec.dtype, device=vec.device)
        # Matrix dimensions first, so that index_put scatters into every element.
        M = M.movedim((-2, -1), (0, 1)).index_put((i, j), vec[..., self.n :].movedim(-1, 0))
        return SpectralTangent(vec[..., : self.n], M.movedim((0, 1), (-2, -1)))
