"""One spectral NES update in a handful of tensor operations (the fast path of
``SpectralSearch.update``).

``SpectralSearch.update`` is, in general, the composition ``REINFORCE`` ->
``Gaussian.mean_step`` / ``Gaussian.precision_step`` -> ``RGD.step_eigenbasis`` ->
``SpectralSPD.natural_gradient_eigenbasis`` -> ``SpectralSPD.retr`` -> ``check_point``. Each
layer validates its arguments (types, shapes, a finiteness reduction), which at n = 10-100
costs more than the arithmetic. ``spectral_update`` runs the same floating-point operations
in the same order, so its result is bitwise that of the layered path (``tests/
test_nes_step.py`` checks it over whole runs), and validates only what can go wrong
inside one generation: the new point (finite, ``d > 0``, the orthogonality probe of
``check_point(fast=True)``), in one host synchronisation. The formulas, with ``f = -u``,
``A = B Diag(d^-1/2)`` and ``z_i = Diag(d^1/2) B^T delta_i``:

    mu'  = mu - eta_mu B Diag(d^-1) B^T (B Diag(d) B^T sum_i f_i delta_i)
    K    = sum_i f_i z_i z_i^T + (-sum_i f_i + (r - 1) tr/n) I,  tr = sum_i f_i (|z_i|^2 - n)
    Ht   = Diag(d^1/2) (K + K_c) Diag(d^1/2)           (K_c: the rank-one path term, r = 0)
    G    = -Ht / 2 / (d_i d_j)                          (B^T dL/dS B with gamma = 0)
    m    = 2 d diag(G),  M_ij = -d_i d_j G_ij / (d_i - d_j)  (0 at near-equal d, i > j)
    d'   = d exp(-eta_B m),  B' = B Cayley(Skew(-eta_B M))

No decomposition: the Cayley map is the one LU solve of the layered path.

It applies where the layered path has no extra state: float64 (no periodic
re-orthogonalisation), the exact Cayley map and no gap damping (``applies``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..linalg import cayley_exact_apply, skew
from ..manifolds import SpectralPoint, SpectralSPD
from ..manifolds.blocks import rotation_natural_grad
from ..manifolds.spectral import probe_tol

__all__ = ["applies", "spectral_update"]


def applies(manifold: SpectralSPD) -> bool:
    """Whether ``spectral_update`` is bitwise the layered update for this manifold."""
    return (
        manifold.dtype == torch.float64
        and manifold.cayley == "exact"
        and manifold.gap_damping == 0.0
        and manifold.batch is None
    )


def _eigen_curvature(z: Tensor, f: Tensor, scale_weight: float) -> Tensor:
    """``K`` of ``REINFORCE.eigenbasis`` before the ``Diag(d^1/2)`` scaling (same operations)."""
    n = z.shape[1]
    K = (z * f[:, None]).T @ z
    sq = (z * z).sum(1)
    tr = float((f * (sq - n)).sum())
    shift = -float(f.sum()) + (scale_weight - 1.0) * tr / n
    # K + shift I, on the diagonal only: x + 0.0 == x, so this equals adding shift * eye.
    K.diagonal().add_(shift)
    return K


def spectral_update(
    manifold: SpectralSPD,
    x: SpectralPoint,
    mu: Tensor,
    delta: Tensor,
    u: Tensor,
    eta_mu: float,
    scale_weight: float,
    eta_B: float,
    path_delta: Tensor | None = None,
    path_value: float = 0.0,
) -> tuple[Tensor, SpectralPoint]:
    """``(mu', x')`` of one spectral NES generation (module docstring); ``x`` unchanged.

    ``delta`` (k, n) displacements, ``u`` (k,) utilities, ``path_delta`` (1, n) the rank-one
    direction ``A z_c`` with REINFORCE value ``path_value`` (``-c1 / eta_B``; ``None``: no
    rank-one term). Raises ``FloatingPointError`` (nothing committed) if the new point is not
    finite, has ``d <= 0`` or fails the orthogonality probe.
    """
    B, d = x.B, x.d
    f = -u
    # Gaussian.mean_step(mu, x, REINFORCE.gradient): two apply_power calls (r = 1, then -1).
    g = B @ ((B.mT @ (f @ delta)) * d.pow(1.0))
    mu_new = mu - eta_mu * (B @ ((B.mT @ g) * d.pow(-1.0)))
    sd = d.sqrt()
    Ht = sd[:, None] * _eigen_curvature((delta @ B) * sd, f, scale_weight) * sd[None, :]
    if path_delta is not None:
        value = torch.full((1,), path_value, dtype=d.dtype, device=d.device)
        Kc = _eigen_curvature((path_delta @ B) * sd, value, 0.0)
        Ht = Ht + sd[:, None] * Kc * sd[None, :]
    # precision_egrad_eigenbasis with gamma = 0 (Ht - 0 * Diag(d) is Ht, bit for bit).
    G = -0.5 * Ht / (d[:, None] * d[None, :])
    m = 2.0 * d * G.diagonal()
    M = rotation_natural_grad(d, G, manifold.eig_tol)
    # RGD: retr(x, -v, eta_B); (-eta_B) * m is -(eta_B * (-m)) exactly (sign symmetry).
    d_new = d * torch.exp((-eta_B) * m)
    B_new = cayley_exact_apply(B, skew((-eta_B) * M))
    # check_point(fast=True) of the new point, in one synchronisation: finite (a finite sum
    # proves it; a non-finite one falls back to the elementwise test), d > 0, and the probe
    # ||B^T (B v) - v|| <= probe_tol.
    v = manifold._probe_vector()
    err = torch.linalg.vector_norm((B_new.mT @ (B_new @ v) - v).float())
    total, dmin, probe = torch.stack(
        [d_new.sum() + B_new.sum() + mu_new.sum(), d_new.min(), err.to(d.dtype)]
    ).tolist()
    finite = math.isfinite(total) or all(
        bool(torch.isfinite(t).all()) for t in (d_new, B_new, mu_new)
    )
    if not (finite and dmin > 0 and probe <= probe_tol(d.dtype)):
        raise FloatingPointError(
            "NES.tell: the precision step left the manifold or the mean became non-finite "
            f"(finite {finite}, min d {dmin:.3g}, probe error {probe:.2e}); state left unchanged"
        )
    return mu_new, SpectralPoint(B_new, d_new)
