"""Cholesky-factor RGD for a general ``f(S)`` (Lin et al., 2023): the baseline of paper
Sec. 4.2 / Fig. 3 (left).

The SPD matrix is stored through a lower-triangular factor with positive diagonal,

    S = L L^T,

and a step is natural-gradient descent in the local chart ``M -> L h(M)`` (``M`` lower
triangular, ``h(M) = I + M + M^2 / 2``, the second-order truncation of ``exp`` used by
W. Lin, V. Duruisseaux, M. Leok, F. Nielsen, M. E. Khan, F. Schmidt, "Simplifying
momentum-based positive-definite submanifold optimization with applications to deep
learning", ICML 2023).

Natural gradient, derived for any Euclidean gradient ``E = df/dS`` under the same Fisher-Rao
metric ``1/2 tr(S^-1 dS S^-1 dS)`` as ``SpectralSPD``: at ``M = 0``,
``dS = L (M + M^T) L^T``, so the metric is ``2 sum_i M_ii^2 + sum_{i>j} M_ij^2`` and the chart
gradient is ``2 Phi(G)`` entrywise, with

    G = L^T E L,      Phi(X) = Tril(X) + 1/2 Diag(X)   (``baselines.cholesky.phi``).

Dividing by the metric gives the natural gradient ``2 Phi(G)``, and the step is

    L <- L h(-lr * 2 Phi(G))          (with momentum: v <- momentum v + 2 Phi(G), M = -lr v)

To first order ``S`` moves by ``L (M + M^T) L^T = -2 lr S E S``: the Riemannian gradient step
of the affine-invariant (Fisher-Rao) metric, the same as ``RGD`` on ``SpectralSPD`` with the
same ``lr`` (the two differ by O(lr^2); ``tests/test_solvers_spd.py`` checks the rate).
``h(M)`` is lower triangular with diagonal ``1 + m + m^2 / 2 > 0``, so ``L`` keeps a positive
diagonal and ``S`` stays SPD for every step size and every (indefinite) ``E``. The step uses
matrix products only; problems that can form ``G = L^T E L`` without ``S^-1`` (log-det:
``L^T Q L - I``; metric nearness) pass it to ``step_congruence`` directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..manifolds.points import TensorTree
from ..validation import (
    check_momentum,
    check_positive,
    check_size,
    check_tensor,
    resolve_device,
    resolve_dtype,
    symmetric_matrix,
)
from .cholesky import cholesky_h, phi  # cholesky_h re-exported (it was defined here)

__all__ = ["CholeskyRGD", "CholeskyPoint", "cholesky_h"]


@dataclasses.dataclass(frozen=True, eq=False)
class CholeskyPoint(TensorTree):
    """``S = L L^T`` as its factor: the state of ``spd.minimize``'s ``"cholesky"`` method
    (``result.point``), a valid ``x0`` for every method.

    A type of its own because a bare ``L`` is a matrix that ``x0`` would read as ``S``
    itself: a diagonal ``L`` would silently restart from ``L`` instead of ``L L^T``.
    ``L``: lower triangular (n, n) with a positive diagonal (``CholeskyRGD.check_point``).
    """

    L: Tensor


class CholeskyRGD:
    """Riemannian gradient descent on ``S = L L^T`` in the Cholesky chart (module docstring).

    ``L`` is a plain lower-triangular tensor; ``step`` returns a new one.

    Args:
        n: matrix size.
        lr: step size (> 0), in the Fisher-Rao convention of ``RGD`` (same ``lr``, same
            first-order step).
        momentum: heavy-ball coefficient in ``[0, 1)`` on the chart coordinates.
        dtype, device: of ``L`` (default: torch's default dtype, CPU).
    """

    def __init__(
        self,
        n: int,
        lr: float,
        momentum: float = 0.0,
        *,
        dtype: torch.dtype | None = None,
        device: Any = None,
    ) -> None:
        self.n = check_size(n, "n")
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.lr = check_positive(lr, "lr")
        self.momentum = check_momentum(momentum)
        self.buffer: Tensor | None = None
        self.steps = 0

    def __repr__(self) -> str:
        return f"CholeskyRGD(n={self.n}, lr={self.lr}, dtype={self.dtype}, device={self.device})"

    # Points -------------------------------------------------------------------------------

    def origin(self) -> Tensor:
        """``L = I`` (``S = I``)."""
        return torch.eye(self.n, dtype=self.dtype, device=self.device)

    def from_matrix(self, S: Any) -> Tensor:
        """``L = cholesky(S)`` (initialisation only). ``ValueError`` if ``S`` is not SPD."""
        S64, _ = symmetric_matrix(S, "S", self.n)
        L, info = torch.linalg.cholesky_ex(0.5 * (S64 + S64.T))  # init-only
        if int(info) != 0:
            raise ValueError("S: not positive definite (Cholesky factorisation failed)")
        return L.to(dtype=self.dtype, device=self.device)

    def to_matrix(self, L: Tensor) -> Tensor:
        """``S = L L^T``."""
        return L @ L.T

    def logdet(self, L: Tensor) -> Tensor:
        """``log det S = 2 sum log |L_ii|``."""
        return 2.0 * torch.log(torch.diagonal(L).abs()).sum()

    def check_point(self, L: Any) -> tuple[bool, str | None]:
        """``(ok, reason)``: finite lower-triangular (n, n) ``L`` with a positive diagonal."""
        if not isinstance(L, Tensor):
            return False, f"expected a torch.Tensor, got {type(L).__name__}"
        if tuple(L.shape) != (self.n, self.n):
            return False, f"L has shape {tuple(L.shape)}, expected {(self.n, self.n)}"
        if L.dtype != self.dtype:
            return False, f"L has dtype {L.dtype}, expected {self.dtype}"
        if not bool(torch.isfinite(L).all()):
            return False, "L contains NaN or Inf"
        if bool(torch.triu(L, diagonal=1).ne(0).any()):
            return False, "L is not lower triangular"
        if not bool((torch.diagonal(L) > 0).all()):
            return False, "L has a non-positive diagonal entry"
        return True, None

    def validate_point(self, x: Any, name: str = "x") -> Tensor:
        """``L`` of a ``CholeskyPoint`` ``x`` that ``check_point`` accepts; else ``TypeError``
        (not a ``CholeskyPoint``, another dtype) or ``ValueError`` naming ``name``."""
        if not isinstance(x, CholeskyPoint):
            raise TypeError(f"{name}: expected a CholeskyPoint, got {type(x).__name__}")
        L = x.L
        if isinstance(L, Tensor) and L.dtype != self.dtype:
            raise TypeError(f"{name}: L has dtype {L.dtype}, expected {self.dtype}")
        check_tensor(L, f"{name}.L", device=self.device, finite=False)
        ok, reason = self.check_point(L)
        if not ok:
            raise ValueError(f"{name}: not a Cholesky factor of an SPD matrix ({reason})")
        return L

    # Steps --------------------------------------------------------------------------------

    def natural_gradient(self, G: Tensor) -> Tensor:
        """``2 Phi(G)`` for the congruence gradient ``G = L^T E L`` (module docstring)."""
        return 2.0 * phi(G)

    def step(self, L: Tensor, egrad: Tensor) -> Tensor:
        """One step for the Euclidean gradient ``egrad = df/dS`` (dense, symmetric)."""
        check_tensor(egrad, "egrad", shape=(self.n, self.n), dtype=self.dtype, device=self.device)
        G = L.T @ egrad @ L
        return self.step_congruence(L, 0.5 * (G + G.T))

    def step_congruence(self, L: Tensor, G: Tensor) -> Tensor:
        """One step from ``G = L^T E L`` (symmetric), formed by the caller without ``S^-1``."""
        check_tensor(G, "G", shape=(self.n, self.n), dtype=self.dtype, device=self.device)
        v = self.natural_gradient(G)
        if self.momentum and self.buffer is not None:
            v = self.momentum * self.buffer + v
        L_new = L @ cholesky_h(-self.lr * v)
        if not bool(torch.isfinite(L_new).all()):
            raise FloatingPointError(
                "CholeskyRGD.step: the step produced a non-finite factor (lr too large?); "
                "state left unchanged"
            )
        if self.momentum:
            self.buffer = v
        self.steps += 1
        return L_new

    def reset(self) -> None:
        """Forget the momentum buffer and the step count."""
        self.buffer = None
        self.steps = 0
