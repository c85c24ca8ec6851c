"""xNES: exponential natural evolution strategies (Glasmachers et al., 2010).

The covariance is ``Sigma = sigma^2 B B^T`` with ``det B = 1``; for whitened samples ``z_i``
and utilities ``u_i``, with ``G = sum_i u_i (z_i z_i^T - I)``, ``G_sigma = tr(G) / n`` and
``G_B = G - G_sigma I``:

    mu    <- mu + eta_mu sigma B sum_i u_i z_i
    sigma <- sigma exp(eta_sigma / 2 G_sigma)
    B     <- B expm(eta_B / 2 G_B)                 (one matrix exponential per generation)

Defaults (Glasmachers et al. 2010): ``eta_mu = 1``, ``eta_sigma = eta_B =
0.6 (3 + ln n) / (n sqrt(n))``, population ``4 + floor(3 ln n)``, rank utilities, no mirrored
sampling. ``XNES(..., mirrored=True, distance_weights=True, adaptive_rates=True)`` is DX-NES
(Fukushima et al. 2011, with the DX-NES-IC constants): the same driver and techniques as
``manifold_spectral.solvers.nes.NES``, so the two differ only in the parametrisation of the
covariance. To first order in the learning rates the spectral update equals this one (see
the ``nes`` module docstring for the mapping).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .es import NESBase
from .es_search import SearchDistribution, whitened_natural_gradient

__all__ = ["XNES", "XNESSearch", "whitened_natural_gradient"]


class XNESSearch(SearchDistribution):
    """``Sigma = sigma^2 B B^T`` (``det B = 1``) updated by a matrix exponential."""

    def __init__(self, stds: Tensor) -> None:
        self.n = stds.shape[0]
        self.dtype = stds.dtype
        self.device = stds.device
        # A = diag(stds) = sigma B with sigma the geometric mean, det B = 1.
        log_s = torch.log(stds)
        self.sigma = float(torch.exp(log_s.mean()))
        self.B = torch.diag(stds / self.sigma)

    @classmethod
    def from_factor(cls, A: Tensor) -> XNESSearch:
        """A distribution with ``Sigma = A A^T`` (``sigma = |det A|^(1/n)``; tests only)."""
        self = cls(torch.ones(A.shape[0], dtype=A.dtype, device=A.device))
        sign, logabs = torch.linalg.slogdet(A)
        self.sigma = float(torch.exp(logabs / A.shape[0]))
        self.B = A / self.sigma
        return self

    @property
    def factor(self) -> Tensor:
        """``A = sigma B``."""
        return self.sigma * self.B

    def transform(self, z: Tensor) -> Tensor:
        return self.sigma * (z @ self.B.T)

    def whiten(self, delta: Tensor) -> Tensor:
        return torch.linalg.solve(self.factor, delta.T).T

    def update(self, mu, z, delta, u, eta_mu, eta_sigma, eta_B, path=None, c1=0.0, u_shape=None):  # type: ignore[override]
        step, g_sigma = whitened_natural_gradient(z, u, eta_B, path, c1, u_shape)
        mu_new = mu + eta_mu * (u @ delta)
        self.sigma = self.sigma * math.exp(0.5 * eta_sigma * g_sigma)
        self.B = self.B @ torch.linalg.matrix_exp(0.5 * step)  # baseline (xNES), not ours
        return mu_new

    def rescale(self, factor: float) -> None:
        self.sigma = self.sigma * factor

    def scale(self) -> float:
        return self.sigma

    def stds(self) -> Tensor:
        return self.sigma * torch.linalg.vector_norm(self.B, dim=1)

    def covariance(self) -> Tensor:
        A = self.factor
        return A @ A.T


class XNES(NESBase):
    """xNES (Glasmachers et al. 2010) with the ask/tell API of ``solvers.nes.NES``.

    Same arguments as ``NES``; defaults: no mirrored sampling, plain rank utilities, the fixed
    xNES rates ``eta_sigma = eta_B = 0.6 (3 + ln n)/(n sqrt n)``. Turn the three switches on
    for DX-NES.
    """

    DEFAULTS = {
        "mirrored": False,
        "distance_weights": False,
        "adaptive_rates": False,
        "rank_one": False,
    }
    name = "xNES"
    DISTRIBUTION_OPTIONS = ()  # the factor takes none (cayley, jacobi are spectral)

    def _make_distribution(self, stds: Tensor, **options: Any) -> SearchDistribution:
        return XNESSearch(stds)
