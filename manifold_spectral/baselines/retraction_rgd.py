"""Retraction-based RGD on dense SPD matrices with geoopt: the baseline of paper Sec. 4.2 /
Fig. 3 (left) ("RGD with retraction", Absil et al. 2009; Boumal et al. 2014).

Nothing is re-implemented: ``S`` is a ``geoopt.ManifoldParameter`` on
``geoopt.SymmetricPositiveDefinite()`` (affine-invariant metric) and the step is
``geoopt.optim.RiemannianSGD``. This class only feeds it a Euclidean gradient and maps the
step size.

What one geoopt step costs (geoopt 0.5.1, no momentum): ``egrad2rgrad`` forms the Riemannian
gradient ``u = S Sym(E) S`` (two products) and ``retr`` the second-order retraction
``Sym(S - lr u + lr^2/2 u S^-1 u)`` with ``S^-1 = torch.matrix_power(S, -1)`` (an LU inverse)
and two more products. No ``eigh`` is called on this path; geoopt's ``expmap``, ``transp``
and ``projx`` do call ``eigh``, and ``RiemannianSGD`` with ``momentum > 0`` uses
``retr_transp`` (a parallel transport through ``eigh`` and ``matrix_exp``), so a momentum
run is much more expensive per step.

Learning-rate mapping: geoopt's metric is ``tr(S^-1 dS S^-1 dS)``, twice the Fisher-Rao metric
``1/2 tr(S^-1 dS S^-1 dS)`` of ``SpectralSPD`` and ``CholeskyRGD``; its Riemannian gradient is
``S E S`` where ours is ``2 S E S``. ``RetractionRGD(lr=lr)`` therefore runs
``RiemannianSGD(lr=2 lr)``, so every method's step is ``S - 2 lr S E S + O(lr^2)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._compat import import_geoopt
from ..validation import check_momentum, check_positive, check_tensor, symmetric_matrix

__all__ = ["RetractionRGD", "GEOOPT_LR_FACTOR"]

#: ``geoopt lr = GEOOPT_LR_FACTOR * lr``: geoopt's SPD metric is twice the Fisher-Rao metric.
GEOOPT_LR_FACTOR = 2.0


class RetractionRGD:
    """geoopt's ``RiemannianSGD`` on ``SymmetricPositiveDefinite`` for one dense SPD matrix.

    Args:
        S0: starting SPD matrix (n, n); its dtype and device are kept (a float64 copy of a
            non-floating input).
        lr: step size in the Fisher-Rao convention (geoopt runs at ``2 lr``; module docstring).
        momentum: geoopt's momentum (``> 0`` switches geoopt to ``retr_transp``).

    ``S`` (the ``ManifoldParameter``) is the current iterate; ``step(egrad)`` advances it.
    """

    def __init__(self, S0: Any, lr: float, momentum: float = 0.0) -> None:
        if not isinstance(S0, Tensor):
            S0 = torch.as_tensor(S0)
        if S0.ndim != 2 or S0.shape[0] != S0.shape[1] or S0.shape[0] < 1:
            raise ValueError(f"S0: expected a square matrix, got shape {tuple(S0.shape)}")
        S64, _ = symmetric_matrix(S0, "S0", S0.shape[0])
        if int(torch.linalg.cholesky_ex(S64)[1]) != 0:  # init-only
            raise ValueError("S0: not positive definite")
        dtype = S0.dtype if S0.dtype.is_floating_point else torch.float64
        self.lr = check_positive(lr, "lr")
        momentum = check_momentum(momentum)
        geoopt = import_geoopt()  # imported here: solvers.spd loads this module for every user
        self.manifold = geoopt.SymmetricPositiveDefinite()
        start = (0.5 * (S64 + S64.T)).to(dtype=dtype, device=S0.device)
        self.S = geoopt.ManifoldParameter(start, manifold=self.manifold)
        self.optimizer = geoopt.optim.RiemannianSGD(
            [self.S], lr=GEOOPT_LR_FACTOR * self.lr, momentum=momentum
        )
        self.steps = 0

    @property
    def n(self) -> int:
        return self.S.shape[0]

    def matrix(self) -> Tensor:
        """The current iterate as a plain tensor (a detached copy)."""
        return self.S.detach().clone()

    def step(self, egrad: Tensor) -> Tensor:
        """One ``RiemannianSGD`` step for ``egrad = df/dS``.

        Returns the new iterate as a detached view of ``S`` (later steps update it in place;
        ``matrix()`` gives a copy).
        """
        check_tensor(egrad, "egrad", shape=tuple(self.S.shape), dtype=self.S.dtype)
        previous = self.S.detach().clone()
        self.S.grad = egrad.to(self.S.device).clone()
        self.optimizer.step()
        self.S.grad = None
        if not bool(torch.isfinite(self.S).all()):
            with torch.no_grad():
                self.S.copy_(previous)
            raise FloatingPointError(
                "RetractionRGD.step: geoopt produced a non-finite S (lr too large?); "
                "iterate left unchanged"
            )
        self.steps += 1
        return self.S.detach()
