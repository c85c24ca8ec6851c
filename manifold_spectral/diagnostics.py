"""Public numerical checks of a chart's closed forms (pymanopt's ``check_gradient`` in spirit).

They compute, from definitions and autograd, what a manifold states in closed form, so a
researcher can verify a chart of their own (or ours on their sizes and dtypes):

* ``autograd_fisher``: ``F_ab = 1/2 tr(S^-1 J_a S^-1 J_b)`` with ``J = dS(eta)/d eta`` at 0,
  the Fisher-Rao metric of a Gaussian with precision ``S`` pulled back through the chart;
* ``autograd_local_gradient``: ``grad_eta f(S(eta))`` at 0 for a linear ``f = <E, S>``;
* ``check_metric`` / ``check_natural_gradient``: the largest relative mismatch of the
  closed forms against these references (``pinv(F) grad`` for the natural gradient).

These are diagnostics for small problems (they form dense ``dim x dim`` matrices and use
dense solves); nothing on an update path calls them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .manifolds.base import SpectralManifold

__all__ = [
    "autograd_fisher",
    "autograd_local_gradient",
    "check_metric",
    "check_natural_gradient",
]


def _chart_matrix(manifold: SpectralManifold, x: Any):
    phi = manifold.chart(x)
    return lambda v: manifold.to_matrix(phi(manifold.from_vector(v)))


def autograd_fisher(manifold: SpectralManifold, x: Any) -> Tensor:
    """Dense Fisher matrix ``J^T (1/2 S^-1 kron S^-1) J`` of the chart at ``x`` (dim x dim)."""
    manifold.validate_point(x, "x")  # a foreign point: a named error, not torch's
    zero = torch.zeros(manifold.dim, dtype=manifold.dtype, device=manifold.device)
    J = torch.autograd.functional.jacobian(_chart_matrix(manifold, x), zero)
    J = J.permute(2, 0, 1)  # (dim, n, n)
    S = manifold.to_matrix(x)
    P = torch.linalg.solve(S, J)  # S^-1 J_a, batched over a
    return 0.5 * torch.einsum("aij,bji->ab", P, P)


def autograd_local_gradient(manifold: SpectralManifold, x: Any, egrad: Tensor) -> Tensor:
    """``grad_eta <egrad, S(eta)>`` at ``eta = 0`` as a vector of length ``dim``."""
    manifold.validate_point(x, "x")
    zero = torch.zeros(
        manifold.dim, dtype=manifold.dtype, device=manifold.device, requires_grad=True
    )
    S = _chart_matrix(manifold, x)(zero)
    if not isinstance(egrad, Tensor) or egrad.shape not in (S.shape, S.shape[-1:]):
        got = tuple(egrad.shape) if isinstance(egrad, Tensor) else type(egrad).__name__
        raise ValueError(f"egrad: expected shape {tuple(S.shape)} (or its diagonal), got {got}")
    E = torch.diag(egrad) if egrad.ndim == 1 and S.ndim == 2 else egrad
    (g,) = torch.autograd.grad((E * S).sum(), zero)
    return g


def check_metric(manifold: SpectralManifold, x: Any) -> float:
    """Largest ``|F_autograd - Diag(metric)|`` relative to the largest Fisher entry."""
    F = autograd_fisher(manifold, x)
    closed = manifold.metric_matrix(x)
    return float((F - closed).abs().max() / F.abs().max())


def check_natural_gradient(
    manifold: SpectralManifold, x: Any, egrad: Tensor, rtol: float = 1e-13
) -> float:
    """Largest relative mismatch of ``natural_gradient`` against ``pinv(F) grad_eta f``.

    ``rtol`` is the pseudo-inverse cut-off relative to the largest eigenvalue of ``F``. The
    reference is a dense pseudo-inverse: its rotation entries of ``F`` scale like the square
    of a relative eigenvalue gap, so at close but distinct eigenvalues (relative gaps below
    about ``1e-4`` in float64) it loses accuracy like ``eps / gap^2``, and below
    ``sqrt(rtol)`` it drops entries the closed form keeps (the manifold's own cut-off is
    ``eig_tol``): a large mismatch there measures the reference, not the closed form.
    """
    F = autograd_fisher(manifold, x)
    ref = torch.linalg.pinv(F, hermitian=True, rtol=rtol) @ autograd_local_gradient(
        manifold, x, egrad
    )
    ours = manifold.to_vector(manifold.natural_gradient(x, egrad))
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
