"""Cholesky-factor NES: the covariance through a triangular factor (Lin et al. 2021).

``Sigma = K K^T`` with ``K`` lower triangular, i.e. the precision ``S = (K K^T)^-1`` of the
inverse-free Cholesky scheme (``manifold_spectral.baselines.CholeskyCurvature``, Lin et al.
2024) with the REINFORCE curvature of NES: in whitened coordinates ``K^T H K = -G``,
``G = sum_i u_i (z_i z_i^T - I)``. The local (triangular-group) parametrisation of Lin et al.
(2021), "Tractable structured natural-gradient descent using local parameterizations", moves
``K`` by the second-order map ``h(M) = I + M + M^2 / 2`` of a lower triangular ``M``:

    mu <- mu + eta_mu K sum_i u_i z_i
    K  <- exp(eta_sigma / 2 G_sigma) K h(eta_B Phi(G_B)),   Phi(X) = Tril(X) + 1/2 Diag(X)

with ``G_sigma = tr(G)/n`` and ``G_B = G - G_sigma I`` (the scale applied exactly, as in xNES;
``Phi(X) + Phi(X)^T = X`` makes ``K_new K_new^T = K (I + eta_B G_B) K^T + O(eta^2)``, the xNES
and spectral updates to first order). ``h`` keeps ``K``'s diagonal positive
(``1 + m + m^2/2 > 0``), and nothing is inverted or decomposed per generation (the Cholesky
factorisation of Sun et al. 2009 / Glasmachers et al. 2010 in its inverse-free form).
Defaults: the DX-NES techniques of ``NES`` (so the comparison isolates the parametrisation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..baselines.cholesky import cholesky_h, phi
from .es import NESBase
from .es_search import SearchDistribution, whitened_natural_gradient

__all__ = ["CholeskyNES", "CholeskySearch"]


class CholeskySearch(SearchDistribution):
    """``Sigma = K K^T``, ``K`` lower triangular, moved by ``h(M) = I + M + M^2/2``."""

    def __init__(self, stds: Tensor) -> None:
        self.n = stds.shape[0]
        self.dtype = stds.dtype
        self.device = stds.device
        self.K = torch.diag(stds)

    def transform(self, z: Tensor) -> Tensor:
        return z @ self.K.T

    def whiten(self, delta: Tensor) -> Tensor:
        return torch.linalg.solve_triangular(self.K, delta.T, upper=False).T

    def update(self, mu, z, delta, u, eta_mu, eta_sigma, eta_B, path=None, c1=0.0, u_shape=None):  # type: ignore[override]
        step, g_sigma = whitened_natural_gradient(z, u, eta_B, path, c1, u_shape)
        mu_new = mu + eta_mu * (u @ delta)
        self.K = math.exp(0.5 * eta_sigma * g_sigma) * (self.K @ cholesky_h(phi(step)))
        return mu_new

    def rescale(self, factor: float) -> None:
        self.K = factor * self.K

    def scale(self) -> float:
        return float(torch.exp(torch.log(torch.diagonal(self.K).abs()).mean()))

    def stds(self) -> Tensor:
        return torch.linalg.vector_norm(self.K, dim=1)

    def covariance(self) -> Tensor:
        return self.K @ self.K.T


class CholeskyNES(NESBase):
    """Cholesky-factor NES with the ask/tell API and defaults of ``NES`` (DX-NES techniques on)."""

    name = "Cholesky NES"
    DISTRIBUTION_OPTIONS = ()  # the factor takes none (cayley, jacobi are spectral)

    def _make_distribution(self, stds: Tensor, **options: Any) -> SearchDistribution:
        return CholeskySearch(stds)
