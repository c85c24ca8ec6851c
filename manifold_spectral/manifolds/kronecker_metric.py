"""Fisher-Rao metric, gradients and curvature of ``KroneckerSpectralSPD`` (paper Claim 6).

At the origin of the chart the metric is block diagonal: ``F_nn = ab/2``; on the sum-zero
``m_l`` the block is ``(kappa_l / 2) I`` (``sum_zero_metric`` in free coordinates); the
rotation blocks are ``kappa_l C_ij``; ``kappa_L = b`` and ``kappa_R = a`` (the size of the
*other* factor). The eigenvalue and rotation formulas are the ones of ``SpectralSPD``
(``blocks.py``), scaled by ``kappa_l`` and applied to ``alpha``-weighted factor gradients.
``KroneckerMetricMixin`` holds these methods of ``KroneckerSpectralSPD`` (the
Euclidean-gradient reduction, the natural gradient and the GOP curvature in the eigenbasis);
it is not a manifold by itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..linalg import sym
from . import blocks
from .base import check_positive, check_tensor
from .checks import check_gop_columns
from .kronecker_points import (
    KroneckerDenseCurvature,
    KroneckerEigenGradient,
    KroneckerGOP,
    KroneckerGOPSides,
    KroneckerSpectralPoint,
    KroneckerSpectralTangent,
)
from .points import SpectralTangent

__all__ = [
    "sum_zero_metric",
    "sum_zero_metric_inverse",
    "kronecker_log_relative_eigs",
    "KroneckerMetricMixin",
]


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


def kronecker_log_relative_eigs(
    x: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
    y: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
) -> Tensor:
    """``log lambda(S_x^-1 S_y)`` of ``S = alpha (S_L kron S_R)`` as an (..., a, b) grid, from
    ``(alpha, B_L, d_L, B_R, d_R)`` of each point: ``S_x^-1 S_y = (alpha_y / alpha_x)
    (S_Lx^-1 S_Ly) kron (S_Rx^-1 S_Ry)``, so its eigenvalues are the products of the factors'
    (``blocks.log_relative_eigs``): ``log(alpha_y / alpha_x) + l_i + r_j``. The Kronecker
    points are a totally geodesic set of the full Fisher-Rao geometry (the geodesic's power
    of a Kronecker product is the product of the powers), so ``blocks.fisher_rao_dist`` of
    this grid is also the distance within the manifold."""
    left = blocks.log_relative_eigs(x[1], x[2], y[1], y[2])
    right = blocks.log_relative_eigs(x[3], x[4], y[3], y[4])
    scale = torch.log(y[0] / x[0])
    return scale[..., None, None] + left[..., :, None] + right[..., None, :]


def _center(v: Tensor) -> Tensor:
    """``v - mean(v)`` over the last dimension."""
    return v - v.mean(-1, keepdim=True)


class KroneckerMetricMixin:
    """The metric and gradient methods of ``KroneckerSpectralSPD`` (see the module docstring);
    they read the manifold's ``a``, ``b``, factor manifolds ``left``/``right`` and
    ``kappa_L``/``kappa_R``."""

    # Metric and gradients ----------------------------------------------------------------

    def metric(self, x: KroneckerSpectralPoint) -> KroneckerSpectralTangent:
        """Block entries at the origin (Claim 6): ``n: ab/2``; ``m_l: kappa_l/2`` (on sum-zero
        vectors); ``M_l: kappa_l C_ij``."""
        self._unpadded_only("metric")
        kL, kR = self.kappa_L, self.kappa_R
        return KroneckerSpectralTangent(
            self._per_element(0.5 * self.a * self.b),
            SpectralTangent(blocks.eig_metric(x.left.d, kL), blocks.rotation_metric(x.left.d, kL)),
            SpectralTangent(
                blocks.eig_metric(x.right.d, kR), blocks.rotation_metric(x.right.d, kR)
            ),
        )

    def dist(self, x: KroneckerSpectralPoint, y: KroneckerSpectralPoint) -> Tensor:
        """Fisher-Rao distance ``sqrt(1/2 sum_ij (log(alpha_y/alpha_x) + l_i + r_j)^2)`` with
        ``l``, ``r`` the log eigenvalues of ``S_Lx^-1 S_Ly``, ``S_Rx^-1 S_Ry``
        (``kronecker_log_relative_eigs``; one per batch element). Not a step: one
        singular-value decomposition per factor, after the full point checks of ``x``, ``y``."""
        self._unpadded_only("dist")
        self.validate_point(x)
        self.validate_point(y, "y")
        parts = [(p.alpha, p.left.B, p.left.d, p.right.B, p.right.d) for p in (x, y)]
        return blocks.fisher_rao_dist(kronecker_log_relative_eigs(*parts), dims=2)

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
        self._unpadded_only("natural_gradient_eigenbasis")
        self.validate_layout(x)
        self.validate_eigen_gradient(g, "g", finite=False)
        parts = []
        for p, G, kappa, fac in (
            (x.left, g.G_L, self.kappa_L, self.left),
            (x.right, g.G_R, self.kappa_R, self.right),
        ):
            aG = x.alpha[..., None, None] * G
            m = _center(blocks.eig_natural_grad(p.d, aG.diagonal(dim1=-2, dim2=-1), kappa))
            M = blocks.rotation_natural_grad(
                p.d, aG, fac.eig_tol, kappa, fac.gap_damping, fac.gap_floor
            )
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
        return self.gop_from_rotated(B_L.mT @ G @ B_R, damping)

    def gop_from_rotated(self, Z: Tensor, damping: float = 0.0) -> KroneckerGOP:
        """The GOP of gradients already rotated into the eigenbasis, ``Z_i = B_L^T G_i B_R``:
        ``Z`` (m, a, b), or (a, b) for one gradient; batched (k, m, a, b) or (k, a, b). For a
        caller that has the rotated gradients anyway (the eigenvalue-corrected optimizer
        step): ``gop_eigenbasis`` without its two products."""
        if Z.shape[-2:] != (self.a, self.b) or Z.ndim - len(self.batch_shape) not in (2, 3):
            raise ValueError(
                f"Z: expected shape {(*self.batch_shape, 'm', self.a, self.b)} or "
                f"{(*self.batch_shape, self.a, self.b)}, got {tuple(Z.shape)}"
            )
        lam = self._damping_scalar(damping)
        if Z.ndim - len(self.batch_shape) == 2:  # one gradient: the GOP's m axis is 1
            Z = Z.unsqueeze(-3)
        return KroneckerGOP(Z, lam)

    def gop_sides(self, W_L: Tensor, W_R: Tensor, damping: float = 0.0) -> KroneckerGOPSides:
        """The GOP of gradients taken at one point ``x`` given by its one-sided means
        ``W_L = mean_i Z_i D_R^-1 Z_i^T``, ``W_R = mean_i Z_i^T D_L^-1 Z_i`` (the sums of
        ``gop_side_sums`` at ``x`` divided by their count); only a precision step at ``x``
        reads it right. Shapes (a, a), (b, b); batched (k, a, a), (k, b, b)."""
        Ht = KroneckerGOPSides(W_L, W_R, self._damping_scalar(damping))
        self.check_gop_sides(Ht)
        return Ht

    def _damping_scalar(self, damping: float) -> Tensor:
        """The 0-d damping of a GOP, made once per value (an optimizer passes the same one
        every step): four dispatches fewer per update. Nothing writes a GOP's tensors in
        place."""
        damping = check_positive(damping, "damping", allow_zero=True)
        lam = self.__dict__.get("_damping_tensor")
        if lam is None or lam[0] != damping:
            lam = self._damping_tensor = (damping, self._scalar(damping))
        return lam[1]

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
        A ``KroneckerGOPSides`` gives ``W_L``, ``W_R`` (without the damping term) and
        ``T = sum_i diag(W_L)_i / d_L,i``. A dense ``KroneckerDenseCurvature`` (research
        sizes) is unbatched only.
        """
        self._unpadded_only("precision_egrad_eigenbasis")
        alpha, dL, dR = x.alpha, x.left.d, x.right.d
        if isinstance(Ht, KroneckerDenseCurvature):
            self._unbatched_only("precision_egrad_eigenbasis (dense curvature)")
            Sinv = self.power(x, -1.0)
            E = -0.5 * Sinv @ (Ht.H - gamma * self.to_matrix(x)) @ Sinv
            return self.eigen_gradient(x, sym(E))
        if isinstance(Ht, KroneckerGOPSides):
            # T = mean_i sum(Z_i^2 / (d_L d_R^T)) = sum_i diag(W_L)_i / d_L,i
            W_L, W_R = self.check_gop_sides(Ht)
            T = (W_L.diagonal(dim1=-2, dim2=-1) / dL).sum(-1)
            lam = Ht.damping
        elif not isinstance(Ht, KroneckerGOP):
            raise TypeError(
                "Ht: expected KroneckerGOP, KroneckerGOPSides or KroneckerDenseCurvature, got "
                f"{type(Ht).__name__}"
            )
        else:
            # The one-sided sums of the closed-form step (``gop_side_sums``: one formula),
            # as means over the m gradients; T from the diagonal as for ``KroneckerGOPSides``.
            lam, m = Ht.damping, Ht.Z.shape[-3]
            W_L, W_R = (W / m for W in self.gop_side_sums(x, Ht.Z))
            T = (W_L.diagonal(dim1=-2, dim2=-1) / dL).sum(-1)
        trL, trR = (1.0 / dL).sum(-1), (1.0 / dR).sum(-1)
        W_L = W_L + (lam * trR)[..., None, None] * torch.eye(
            self.a, dtype=W_L.dtype, device=W_L.device
        )
        W_R = W_R + (lam * trL)[..., None, None] * torch.eye(
            self.b, dtype=W_R.dtype, device=W_R.device
        )
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
