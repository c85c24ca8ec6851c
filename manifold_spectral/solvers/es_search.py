"""The search distribution of the evolution strategies (``NESBase``): the contract a
covariance representation fulfils (``SearchDistribution``), and the xNES natural gradient in
whitened coordinates that the factor-based representations (xNES, Cholesky NES) share.

The driver samples ``z_i ~ N(0, I)`` and the distribution maps them to displacements
``delta_i = A z_i`` (``Sigma = A A^T``); after ranking, it hands ``(z, delta, u)`` back to
``update``, which moves the covariance and returns the new mean.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

__all__ = ["SearchDistribution", "whitened_natural_gradient"]


class SearchDistribution(abc.ABC):
    """Covariance representation updated by the NES driver: ``Sigma = A A^T`` for a factor ``A``.

    Subclasses: ``nes_search.SpectralSearch`` (ours), ``xnes.XNESSearch`` (the xNES matrix
    exponential) and ``cholesky_nes.CholeskySearch`` (the Cholesky factor). The driver draws
    ``z``, asks for ``delta = A z`` and hands back ``(z, delta, u)`` with utilities ``u``.
    """

    n: int
    dtype: torch.dtype
    device: torch.device

    @abc.abstractmethod
    def transform(self, z: Tensor) -> Tensor:
        """``delta_i = A z_i`` for (k, n) ``z``."""

    @abc.abstractmethod
    def whiten(self, delta: Tensor) -> Tensor:
        """``z_i = A^-1 delta_i`` for (k, n) ``delta`` (for points not drawn by ``ask``)."""

    def path_coordinates(self, v: Tensor) -> Tensor:
        """Coordinates of a whitened vector for the evolution path (default: ``v`` itself)."""
        return v

    @abc.abstractmethod
    def update(
        self,
        mu: Tensor,
        z: Tensor,
        delta: Tensor,
        u: Tensor,
        eta_mu: float,
        eta_sigma: float,
        eta_B: float,
        path: Tensor | None = None,
        c1: float = 0.0,
        u_shape: Tensor | None = None,
    ) -> Tensor:
        """Update the covariance in place; return the new mean.

        ``path`` (n,): a whitened direction ``z_c`` that gets the traceless rank-one update
        ``c1 (z_c z_c^T - |z_c|^2/n I)`` on top of the sample estimate (the evolution-path
        term of CMA-ES; ``None`` or ``c1 = 0``: none). ``u_shape`` (k,): utilities of the
        shape (traceless) part of the covariance step in place of ``u``, which keeps the
        mean and the scale (``None``: ``u`` for all).
        """

    def rescale(self, factor: float) -> None:
        """``Sigma <- factor^2 Sigma`` (every standard deviation times ``factor > 0``; used by
        ``step_size="csa"``)."""
        raise NotImplementedError(f"{type(self).__name__}.rescale")

    @abc.abstractmethod
    def scale(self) -> float:
        """``det(Sigma)^(1/(2n))``: the geometric-mean standard deviation."""

    @abc.abstractmethod
    def stds(self) -> Tensor:
        """``sqrt(diag(Sigma))``."""

    @abc.abstractmethod
    def covariance(self) -> Tensor:
        """Dense ``Sigma`` (for inspection and tests)."""

    def condition(self) -> float | None:
        """Condition number of ``Sigma`` when it is free to read (else ``None``)."""
        return None

    def precision_range(self) -> tuple[float, float] | None:
        """Smallest and largest eigenvalue of ``S = Sigma^-1`` when free to read (else ``None``)."""
        return None


def whitened_natural_gradient(
    z: Tensor,
    u: Tensor,
    eta_B: float,
    path: Tensor | None = None,
    c1: float = 0.0,
    u_shape: Tensor | None = None,
) -> tuple[Tensor, float]:
    """The xNES natural gradient in whitened coordinates, shared by the xNES and Cholesky-NES
    searches: ``G = sum_i u_i (z_i z_i^T - I)``, ``g_sigma = tr(G) / n`` and the shape step
    ``eta_B (G - g_sigma I)``, plus the DX-NES rank-one term ``c1 (p p^T - |p|^2 / n I)`` of
    the evolution path ``p`` when given; with ``u_shape`` the shape step is that of
    ``G(u_shape)`` (``g_sigma`` stays that of ``u``). Returns ``(step, g_sigma)``."""
    n = z.shape[-1]
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    G = (z * u[:, None]).T @ z - float(u.sum()) * eye
    g_sigma = float(torch.trace(G)) / n
    if u_shape is not None:
        G = (z * u_shape[:, None]).T @ z - float(u_shape.sum()) * eye
    step = eta_B * (G - float(torch.trace(G)) / n * eye)
    if path is not None and c1 > 0:
        step = step + c1 * (torch.outer(path, path) - float(path @ path) / n * eye)
    return step, g_sigma
