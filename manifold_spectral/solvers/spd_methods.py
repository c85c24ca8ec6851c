"""The methods of ``spd.minimize``: one runner per parametrisation of ``S`` (paper Sec. 4.2).

All three take the Riemannian gradient step of the same Fisher-Rao (affine-invariant) metric
``1/2 tr(S^-1 dS S^-1 dS)``, so with the same ``lr`` each steps ``S - 2 lr S E S + O(lr^2)``
(paper Fig. 3):

* ``"spectral"``: ``S = B Diag(d) B^T`` on ``SpectralSPD``, ``RGD(M, lr).step`` (ours; no
  eigendecomposition, Cholesky or inverse of ``S`` after initialisation);
* ``"retraction"``: dense ``S`` with geoopt's ``SymmetricPositiveDefinite`` and
  ``RiemannianSGD`` at ``2 lr`` (``baselines.RetractionRGD``; geoopt's metric is twice ours);
* ``"cholesky"``: ``S = L L^T``, ``L <- L h(-2 lr Phi(L^T E L))`` (``baselines.CholeskyRGD``,
  Lin et al. 2023).

Fast path: on a problem with ``congruence_grad`` (``factored``) the spectral method passes
its factors ``(B, d)`` and hands ``G = B^T E B`` to ``RGD.step_eigenbasis``; the Cholesky
method passes ``(L, 1)``. Neither forms ``S``, ``S^-1`` or a decomposition. Other problems go
through the dense ``egrad(S)`` and ``RGD.step``.

Each runner exposes ``step(batch)``, ``matrix()``, ``logdet()``, ``factors()``, ``point()``,
``snapshot()``/``restore(state)`` and ``finish()``, the calls of ``minimize``'s loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..baselines.cholesky_rgd import CholeskyPoint, CholeskyRGD
from ..baselines.retraction_rgd import RetractionRGD
from ..linalg import sym
from ..manifolds import SpectralPoint, SpectralSPD
from ..rgd import RGD
from .spd_problems import SPDProblem

__all__ = ["METHODS", "METHOD_CLASSES"]

#: The methods of ``minimize``.
METHODS = ("spectral", "retraction", "cholesky")


class _Spectral:
    """``S = B Diag(d) B^T``; ``RGD(SpectralSPD).step`` (``step_eigenbasis`` on the fast path)."""

    def __init__(
        self, problem: SPDProblem, lr: float, momentum: float, cayley: str, x0: Any, rotation: str
    ):
        self.problem = problem
        self.M = SpectralSPD(problem.n, dtype=problem.dtype, device=problem.device)
        if x0 is None:
            self.x = self.M.origin()
        elif isinstance(x0, SpectralPoint):
            self.M.validate_point(x0, "x0")
            self.x = x0
        else:
            self.x = self.M.from_matrix(x0)  # the one eigendecomposition, at initialisation
        self.opt = RGD(
            self.M,
            lr,
            momentum,
            cayley=cayley,
            jacobi=rotation != "linear",
            second_order=rotation == "second-order",
        )

    def step(self, batch: Any) -> None:
        p, x = self.problem, self.x
        if p.factored:
            # x is the start (validated in __init__) or RGD's last output (checked by RGD).
            G = p.congruence_grad(x.B, x.d, batch, orthogonal=True)
            self.x = self.opt.step_eigenbasis(x, G, check_input=False)
        else:
            self.x = self.opt.step(x, p.egrad(self.M.to_matrix(x), batch))

    def matrix(self) -> Tensor:
        return self.M.to_matrix(self.x)

    def logdet(self) -> Tensor:
        return self.M.logdet(self.x)

    def factors(self) -> tuple[Tensor, Tensor]:
        return self.x.B, self.x.d

    def point(self) -> Any:
        return self.x

    def snapshot(self) -> Any:
        return self.x  # immutable

    def restore(self, state: Any) -> None:
        self.x = state

    def finish(self) -> bool:
        """Make the final iterate a point that ``SpectralSPD.check_point`` accepts; whether
        it changed.

        Neumann steps leave ``||B^T B - I||`` up to ``reorthogonalize_every`` steps' defect
        (1e-7 and more in float64) above the full check's ``orthogonality_tol``; RGD only
        needs its O(n^2) probe, but ``result.point`` is a point handed to other calls (a
        warm start validates ``x0`` fully). Newton-Schulz polar steps (two products each, no
        decomposition) converge quadratically from there; runs whose ``B`` already passes
        (exact Cayley) are returned bit for bit.
        """
        if self.M.check_point(self.x)[0]:
            return False
        x = self.x
        for _ in range(3):
            x = self.M.reorthogonalize(x)
            if self.M.check_point(x)[0]:
                self.x = x
                return True
        return False  # not repairable by polar steps: returned as the run left it


class _Cholesky:
    """``S = L L^T``; ``CholeskyRGD.step`` (or ``step_congruence`` on the fast path)."""

    def __init__(
        self, problem: SPDProblem, lr: float, momentum: float, cayley: str, x0: Any, rotation: str
    ):
        self.problem = problem
        self.opt = CholeskyRGD(problem.n, lr, momentum, dtype=problem.dtype, device=problem.device)
        if x0 is None:
            self.L = self.opt.origin()
        elif isinstance(x0, CholeskyPoint):  # a warm start: resume at exactly this L
            self.L = self.opt.validate_point(x0, "x0")
        else:
            self.L = self.opt.from_matrix(x0)
        self.ones = torch.ones(problem.n, dtype=problem.dtype, device=problem.device)

    def step(self, batch: Any) -> None:
        p = self.problem
        if p.factored:
            self.L = self.opt.step_congruence(self.L, p.congruence_grad(self.L, self.ones, batch))
        else:
            self.L = self.opt.step(self.L, p.egrad(self.opt.to_matrix(self.L), batch))

    def matrix(self) -> Tensor:
        return self.opt.to_matrix(self.L)

    def logdet(self) -> Tensor:
        return self.opt.logdet(self.L)

    def factors(self) -> tuple[Tensor, Tensor]:
        return _eig_factors(self.matrix())

    def point(self) -> Any:
        return CholeskyPoint(self.L)  # typed: x0=L would be read as the matrix S = L

    def snapshot(self) -> Any:
        return self.L  # replaced, never updated in place

    def restore(self, state: Any) -> None:
        self.L = state

    def finish(self) -> bool:
        return False


class _Retraction:
    """Dense ``S``; geoopt's ``RiemannianSGD`` on ``SymmetricPositiveDefinite`` at ``2 lr``."""

    def __init__(
        self, problem: SPDProblem, lr: float, momentum: float, cayley: str, x0: Any, rotation: str
    ):
        self.problem = problem
        if x0 is None:
            x0 = torch.eye(problem.n, dtype=problem.dtype, device=problem.device)
        self.opt = RetractionRGD(x0, lr, momentum)

    def step(self, batch: Any) -> None:
        S = self.opt.S.detach()
        self.opt.step(self.problem.egrad(S, batch))

    def matrix(self) -> Tensor:
        return self.opt.matrix()

    def logdet(self) -> Tensor | None:
        return None  # the problem computes it densely (monitoring only)

    def factors(self) -> tuple[Tensor, Tensor]:
        return _eig_factors(self.matrix())

    def point(self) -> Any:
        return self.matrix()

    def snapshot(self) -> Any:
        return self.matrix()  # a copy: geoopt updates S in place

    def restore(self, state: Any) -> None:
        with torch.no_grad():
            self.opt.S.copy_(state)

    def finish(self) -> bool:
        return False


#: The runner of each method (the interface is in the module docstring).
METHOD_CLASSES = {"spectral": _Spectral, "retraction": _Retraction, "cholesky": _Cholesky}


def _eig_factors(S: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, d)`` of a dense baseline result: one ``eigh`` after the run (reporting only)."""
    d, B = torch.linalg.eigh(sym(S))  # post-processing of a baseline, not on the update path
    return B, d
