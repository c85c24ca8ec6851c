"""One spectral NES update in closed form (the fast path of ``SpectralSearch.update``).

In general ``SpectralSearch.update`` composes ``REINFORCE`` -> ``Gaussian.mean_step`` /
``Gaussian.precision_step`` -> ``RGD.step_eigenbasis`` -> ``SpectralSPD.natural_gradient_
eigenbasis`` -> ``SpectralSPD.retr`` -> ``check_point``; each layer validates its arguments
(types, shapes, a finiteness reduction), which at n = 10-100 costs more than the arithmetic.
For the NES curvature the composition simplifies. With ``S = B Diag(d) B^T``,
``A = B Diag(d^-1/2)``, samples ``delta_i = A z_i``, utilities ``u_i`` and ``f_i = -u_i``:

* mean (``beta1 = eta_mu``, root 1): ``mu - eta_mu S^-1 (S sum_i f_i delta_i)
  = mu + eta_mu sum_i u_i delta_i``;
* curvature in the eigenbasis: ``B^T H B = Diag(d^1/2) K Diag(d^1/2)`` with
  ``K = sum_i f_i z_i z_i^T + (-sum_i f_i + (r - 1) tr/n) I``, ``tr = sum_i f_i (|z_i|^2 - n)``
  (``REINFORCE.eigenbasis``), plus the rank-one path term ``c (z_c z_c^T - |z_c|^2/n I)``;
* ``G = B^T (dL/dS) B = -1/2 Diag(d^1/2) K Diag(d^1/2) / (d_i d_j)`` (``gamma = 0``), so
  the natural gradient is ``m_i = 2 d_i G_ii = -K_ii`` and, for ``i > j``,
  ``M_ij = -d_i d_j G_ij / (d_i - d_j) = sqrt(d_i d_j) K_ij / (2 (d_i - d_j))``
  (0 where ``|d_i - d_j| <= eig_tol max(d_i, d_j)``, the Moore-Penrose rule);
* RGD step ``x <- retr(x, -eta_B (m, M))``: ``d' = d exp(eta_B diag(K))``,
  ``B' = B Cayley(Skew(-eta_B M))``, or with ``jacobi`` (spectral NES's default)
  ``B' = B Cayley(Skew(J(-eta_B M)))``, ``J(t) = tan(atan(4 t) / 4)`` elementwise
  (``blocks.jacobi_angles``, ``retr(..., jacobi=True)``).

These are the layered path's values up to rounding (it forms ``Diag(d^1/2) K Diag(d^1/2)``,
divides by ``d_i d_j``, and maps the mean through ``S`` and ``S^-1``); ``tests/
test_nes_step.py`` checks the agreement. The closed form is also the more accurate one
(no ``d_i d_j``, which overflows in float64 once ``d ~ 1e154``). No decomposition: the Cayley
map is the one LU solve of the layered path. The new point is validated once (finite,
``d > 0``, the orthogonality probe of ``check_point(fast=True)``) in one host sync.

It applies where the layered path has no extra state: float64 (no periodic
re-orthogonalisation), the exact Cayley map, no gap damping, unbatched, on the CPU (the
small operations run in numpy on views of the tensors; ``applies``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg.lapack import dgesv as _gesv

from ..manifolds import SpectralSPD
from ..manifolds.checks import probe_tol

__all__ = ["applies", "SpectralStep"]


def applies(manifold: SpectralSPD) -> bool:
    """Whether ``SpectralStep`` computes the layered update of this manifold."""
    return (
        manifold.dtype == torch.float64
        and manifold.cayley == "exact"
        and manifold.gap_damping == 0.0
        and manifold.batch is None
        and manifold.device.type == "cpu"
    )


class SpectralStep:
    """The closed-form step for one manifold, with its constants made once (the probe vector
    and tolerance, the mask of the diagonal and upper triangle)."""

    def __init__(self, manifold: SpectralSPD, jacobi: bool = False) -> None:
        n = manifold.n
        self.jacobi = jacobi
        self.eig_tol = manifold.eig_tol
        self.probe = manifold._probe_vector().numpy()
        self.probe_tol = probe_tol(manifold.dtype)
        self.not_lower = ~np.tri(n, k=-1, dtype=bool)

    def __call__(
        self,
        B: np.ndarray,
        d: np.ndarray,
        mu: np.ndarray,
        z: np.ndarray,
        delta: np.ndarray,
        u: np.ndarray,
        eta_mu: float,
        scale_weight: float,
        eta_B: float,
        z_c: np.ndarray | None = None,
        c: float = 0.0,
        u_shape: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mu', B', d')`` of one spectral NES generation (module docstring); inputs unchanged.

        Numpy float64 arrays: ``B`` (n, n), ``d`` (n,), ``mu`` (n,), ``z`` (k, n) whitened
        samples, ``delta = A z`` (k, n), ``u`` (k,) utilities; ``scale_weight`` r; ``z_c`` (n,)
        the whitened rank-one direction with weight ``c`` (``-c1 / eta_B``; ``None``: none);
        ``u_shape`` (k,): utilities of the traceless part of ``K`` (``None``: ``u``).
        Raises ``FloatingPointError`` if the new point is not finite, has ``d <= 0`` or fails
        the orthogonality probe.
        """
        n = d.shape[0]
        # Overflow and 0/0 are not warnings here: the checks below reject the step.
        with np.errstate(all="ignore"):
            mu_new = mu + eta_mu * (u @ delta)
            K = -((z * u[:, None]).T @ z)  # sum f z z^T, f = -u
            if u_shape is not None:  # traceless part from u_shape, trace from u
                K_shape = -((z * u_shape[:, None]).T @ z)
                K_shape.flat[:: n + 1] += (np.trace(K) - np.trace(K_shape)) / n
                K = K_shape
            shift = float(u.sum()) - (scale_weight - 1.0) * float(u @ ((z * z).sum(1) - n)) / n
            if z_c is not None:
                K += np.outer(c * z_c, z_c)
                shift -= c * float(z_c @ z_c) / n
            K.flat[:: n + 1] += shift
            d_new = d * np.exp(eta_B * K.diagonal())
            # -eta_B M = -eta_B sqrt(d_i d_j) K_ij / (2 (d_i - d_j)) below the diagonal, 0 at
            # (near-)equal eigenvalues and on and above the diagonal (0/0 there is masked).
            diff = d[:, None] - d[None, :]
            mask = np.maximum(d[:, None], d[None, :]) * self.eig_tol >= np.abs(diff)
            mask |= self.not_lower
            sd = np.sqrt(d)
            N = np.outer(sd, sd) * (-0.5 * eta_B) / diff * K
            N[mask] = 0.0
            if self.jacobi:  # blocks.jacobi_angles: tan(atan(4 N) / 4), by half angles
                N = 4.0 * np.clip(N, -1e18, 1e18)
                for _ in range(2):
                    N = N / (1.0 + np.sqrt(N * N + 1.0))
            # B Cayley(N - N^T) = 2 B (I - N + N^T)^-1 - B (linalg.cayley_exact_apply): one LU
            # solve of (I - N + N^T)^T Y^T = B^T (LAPACK gesv, as torch.linalg.solve).
            A = N.T - N
            A.flat[:: n + 1] += 1.0
            _, _, Yt, info = _gesv(A.T, B.T)
            B_new = 2.0 * Yt.T - B
            # check_point(fast=True) of the new point: ||B^T (B v) - v|| <= probe_tol (NaN or
            # Inf in B fail it too), d > 0, and d and mu finite (a finite sum proves it).
            v = self.probe
            probe = float(np.linalg.norm(B_new.T @ (B_new @ v) - v))
            total, dmin = float(d_new.sum() + mu_new.sum()), float(d_new.min())
        finite = math.isfinite(total) or bool(
            np.isfinite(d_new).all() and np.isfinite(mu_new).all()
        )
        if info != 0 or not (finite and dmin > 0 and probe <= self.probe_tol):
            raise FloatingPointError(
                "NES.tell: the precision step left the manifold or the mean became non-finite "
                f"(sum of d and mean {total:.3g}, min d {dmin:.3g}, probe error {probe:.2e}, "
                f"solve info {info}); state left unchanged"
            )
        return mu_new, B_new, d_new
