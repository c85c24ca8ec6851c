"""The spectral specialisation of the evolution strategy (paper Sec. 4.3, App. C): the
search precision ``S = B Diag(d) B^T`` on ``SpectralSPD``, learned by the Gaussian layer from
the ``REINFORCE`` curvature of the ranked samples (``SpectralSearch``).

``A = B Diag(d^-1/2)``, so the whitened samples are ``z_i = Diag(d^1/2) B^T delta_i``
(``whiten``, one function for the curvature estimate and the search distribution); the
update is one ``Gaussian.precision_step`` with the ``REINFORCE`` curvature, or its closed
form ``nes_step.SpectralStep`` on CPU float64. The derivation and the mapping of the
learning rates to xNES are in the ``nes`` module docstring.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..gaussian import Curvature, Gaussian
from ..manifolds import SpectralManifold, SpectralPoint, SpectralSPD
from ..validation import check_flag, check_tensor
from . import nes_step
from .es_search import SearchDistribution

__all__ = ["REINFORCE", "CurvatureSum", "SpectralSearch", "whiten"]


def whiten(x: SpectralPoint, delta: Tensor) -> Tensor:
    """``z_i = Diag(d^1/2) B^T delta_i = A^-1 delta_i`` for (k, n) ``delta``, ``A = B Diag(d^-1/2)``
    (the eigen-coordinates of the displacements under the precision ``x = B Diag(d) B^T``)."""
    return (delta @ x.B) * x.d.sqrt()


class REINFORCE(Curvature):
    """REINFORCE / Stein estimate of ``E_q[hess l]`` for ``q = N(mu, S^-1)`` from values only.

    ``H = sum_i f_i (S delta_i delta_i^T S - S)`` and ``g = sum_i f_i S delta_i`` for samples
    ``w_i = mu + delta_i`` and values (or shaped values, e.g. minus rank utilities) ``f_i``;
    with ``sum f_i = 0`` the ``- S`` term is a control variate. ``H`` is indefinite in general
    (the exact exponential of the Gaussian layer handles it).

    ``eigenbasis`` returns ``B^T H B = Diag(d^1/2) K Diag(d^1/2)``, ``K = sum_i f_i (z_i z_i^T
    - I)``, ``z_i = Diag(d^1/2) B^T delta_i``: O(n^2 k) for k samples; no dense ``S``, no
    inverse. ``scale_weight`` r reweights the scale (trace) part:
    ``K' = K - tr(K)/n I + r tr(K)/n I`` (r = 1: the plain estimate; r = eta_sigma / eta_B:
    xNES's separate step-size learning rate, see the module docstring).

    Args:
        deltas: (k, n) displacements ``w_i - mu``.
        values: (k,) values ``f_i`` (lower is better).
        scale_weight: r >= 0.
    """

    def __init__(self, deltas: Tensor, values: Tensor, scale_weight: float = 1.0) -> None:
        check_tensor(deltas, "deltas")
        if deltas.ndim != 2:
            raise ValueError(f"deltas: expected shape (k, n), got {tuple(deltas.shape)}")
        check_tensor(values, "values", shape=(deltas.shape[0],), dtype=deltas.dtype)
        if not (math.isfinite(scale_weight) and scale_weight >= 0):
            raise ValueError(f"scale_weight: expected a finite number >= 0, got {scale_weight!r}")
        self.deltas = deltas
        self.values = values
        self.scale_weight = float(scale_weight)

    def _point(self, manifold: SpectralManifold, x: Any) -> SpectralPoint:
        if not isinstance(x, SpectralPoint):
            raise TypeError(
                "REINFORCE: expected a full-matrix SpectralPoint (SpectralSPD), "
                f"got {type(x).__name__}"
            )
        n = manifold.egrad_shape[0]
        check_tensor(
            self.deltas,
            "deltas",
            shape=(self.deltas.shape[0], n),
            dtype=manifold.dtype,
            device=manifold.device,
        )
        return x

    def whitened(self, manifold: SpectralManifold, x: Any) -> Tensor:
        """``z_i = Diag(d^1/2) B^T delta_i`` as a (k, n) tensor (eigen-coordinates of ``x``)."""
        return whiten(self._point(manifold, x), self.deltas)

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        z = self.whitened(manifold, x)
        f = self.values
        K = (z * f[:, None]).T @ z
        sq = (z * z).sum(1)
        n = z.shape[1]
        # tr(K) = sum f (|z|^2 - n); K - (sum f) I, then the trace part reweighted.
        tr = float((f * (sq - n)).sum())
        shift = -float(f.sum()) + (self.scale_weight - 1.0) * tr / n
        K = K + shift * torch.eye(n, dtype=K.dtype, device=K.device)
        sd = x.d.sqrt()
        return sd[:, None] * K * sd[None, :]

    def gradient(self, manifold: SpectralManifold, x: Any) -> Tensor:
        """``g = S sum_i f_i delta_i`` (the REINFORCE estimate of ``E_q[grad l]``), (n,)."""
        x = self._point(manifold, x)
        return manifold.apply_power(x, self.values @ self.deltas, 1.0)


class CurvatureSum(Curvature):
    """The sum of several curvature estimates (in the eigenbasis)."""

    def __init__(self, parts: list[Curvature]) -> None:
        self.parts = list(parts)

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        out = self.parts[0].eigenbasis(manifold, x)
        for part in self.parts[1:]:
            out = out + part.eigenbasis(manifold, x)
        return out


class SpectralSearch(SearchDistribution):
    """``Sigma = S^-1``, ``S = B Diag(d) B^T`` on ``SpectralSPD``, learned by ``Gaussian``.

    ``A = B Diag(d^-1/2)``; the update is one ``Gaussian.precision_step`` with the
    ``REINFORCE`` curvature (``gamma = 0``, ``beta2 = eta_B``, ``scale_weight =
    eta_sigma / eta_B``) and ``Gaussian.mean_step`` (root 1, ``beta1 = eta_mu``) at the old
    precision. Starts at ``B = I``, ``d = 1 / sigma0^2``.

    ``jacobi`` (default on): the rotation step turns each eigenvector pair by the exact angle
    of its 2 x 2 eigenproblem, ``atan(2 eta c / (d_i - d_j)) / 2`` (``blocks.jacobi_angles``),
    instead of the linearised ``eta c / (d_i - d_j)`` (off-diagonal curvature ``c``). The two
    agree to first order; where eigenvalues are nearly equal (the start ``B = I``, and every
    cluster of equal variances, such as the directions across a ridge) the linearised angle
    grows as ``1 / gap`` and the Cayley map turns the pair by nearly ``pi``, a sign flip that
    leaves ``S`` as it was: the off-diagonal curvature is lost and the eigenvalues cannot
    split, so the shape is learned late while the scale keeps shrinking. The exact angle is at
    most 45 degrees, which mixes the pair so that the next generation sees the curvature on
    its diagonal (xNES's matrix exponential has no chart and needs no such care).
    """

    def __init__(
        self,
        stds: Tensor,
        *,
        cayley: str = "exact",
        jacobi: bool | None = True,
    ) -> None:
        # None is the default, as for the other switches of NES
        jacobi = True if jacobi is None else check_flag(jacobi, "jacobi")
        n = stds.shape[0]
        self.n = n
        self.dtype = stds.dtype
        self.device = stds.device
        self.manifold = SpectralSPD(n, dtype=stds.dtype, device=stds.device, cayley=cayley)
        eye = torch.eye(n, dtype=stds.dtype, device=stds.device)
        self._gaussians: dict[tuple[float, float], Gaussian] = {}
        #: Use ``nes_step.SpectralStep`` (the layered Gaussian/RGD step in closed form, in
        #: numpy on views of the CPU float64 state).
        self.fast = nes_step.applies(self.manifold)
        self.jacobi = jacobi
        self._step = nes_step.SpectralStep(self.manifold, jacobi) if self.fast else None
        self.point = SpectralPoint(eye, 1.0 / (stds * stds))

    @property
    def point(self) -> SpectralPoint:
        """The precision ``S = B Diag(d) B^T``."""
        return self._point

    @point.setter
    def point(self, x: SpectralPoint) -> None:
        self._point = x
        # numpy views of B and d for the fast path (shared memory, made once per point)
        self._np = (x.B.numpy(), x.d.numpy()) if self.fast else None

    def gaussian(self, eta_mu: float, eta_B: float) -> Gaussian:
        """The Gaussian layer for these rates (``gamma = 0``, root 1, exact exponential)."""
        key = (eta_mu, eta_B)
        if key not in self._gaussians:
            self._gaussians[key] = Gaussian(
                self.manifold, beta1=eta_mu, beta2=eta_B, gamma=0.0, root=1.0,
                exponential="exact", jacobi=self.jacobi,
            )  # fmt: skip
        return self._gaussians[key]

    def transform(self, z: Tensor) -> Tensor:
        if self.fast:  # CPU float64: numpy on views costs less than torch on small tensors
            B, d = self._np
            return torch.from_numpy((z.numpy() / np.sqrt(d)) @ B.T)
        return (z * self.point.d.rsqrt()) @ self.point.B.T

    def whiten(self, delta: Tensor) -> Tensor:
        return whiten(self.point, delta)

    def path_coordinates(self, v: Tensor) -> Tensor:
        # B z is S^{1/2} delta with the symmetric root: unchanged when B rotates inside a
        # (near-)repeated eigenvalue, where the chart step may turn B by a large angle.
        return self.point.B @ v

    def update(self, mu, z, delta, u, eta_mu, eta_sigma, eta_B, path=None, c1=0.0, u_shape=None):  # type: ignore[override]
        x = self.point
        if self.fast:  # the same step in closed form, checked once (nes_step)
            z_c = path.numpy() if path is not None and c1 > 0 else None
            B, d = self._np
            mu_new, B_new, d_new = self._step(
                B, d, mu.numpy(), z.numpy(), delta.numpy(), u.numpy(), eta_mu,
                eta_sigma / eta_B, eta_B, z_c, -c1 / eta_B,
                None if u_shape is None else u_shape.numpy(),
            )  # fmt: skip
            self.point = SpectralPoint(torch.from_numpy(B_new), torch.from_numpy(d_new))
            return torch.from_numpy(mu_new)
        samples = REINFORCE(delta, -u, scale_weight=eta_sigma / eta_B)
        gauss = self.gaussian(eta_mu, eta_B)
        mu_new = gauss.mean_step(mu, x, samples.gradient(self.manifold, x))
        curvature: Curvature = samples
        if u_shape is not None:
            # traceless part of u_shape's estimate in place of u's (scale_weight 0: traceless)
            curvature = CurvatureSum(
                [samples, REINFORCE(delta, u, scale_weight=0.0), REINFORCE(delta, -u_shape, 0.0)]
            )
        if path is not None and c1 > 0:
            value = torch.full((1,), -c1 / eta_B, dtype=self.dtype, device=self.device)
            rank_one = REINFORCE(self.transform(path[None, :]), value, scale_weight=0.0)
            curvature = CurvatureSum([curvature, rank_one])
        # x is the checked output of the previous step (RGD checks every result).
        self.point = gauss.precision_step(x, curvature, check_input=False)
        return mu_new

    def rescale(self, factor: float) -> None:
        x = self.point
        self.point = SpectralPoint(x.B, x.d / (factor * factor))

    def scale(self) -> float:
        if self.fast:
            d = self._np[1]
            return math.exp(-0.5 * float(np.log(d).sum()) / d.shape[0])
        return float(torch.exp(-0.5 * torch.log(self.point.d).mean()))

    def stds(self) -> Tensor:
        B, d = self.point.B, self.point.d
        return ((B * B) @ d.reciprocal()).sqrt()

    def covariance(self) -> Tensor:
        return self.manifold.power(self.point, -1.0)

    def condition(self) -> float | None:
        d = self.point.d
        return float(d.max() / d.min())

    def precision_range(self) -> tuple[float, float] | None:
        return float(self.point.d.min()), float(self.point.d.max())
