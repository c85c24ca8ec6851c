"""Inverse-free Cholesky-factor curvature learning (Lin et al., 2024; SINGD/INGD style).

The baseline of paper Sec. 4.1 / Fig. 2 and 7: the precision is stored through a lower
triangular factor ``K`` of its inverse,

    S = (K K^T)^-1,      K lower triangular,

and the curvature estimate ``H`` (for the GOP of k gradients, ``H = (1/k) sum_i g_i g_i^T``)
updates ``K`` with matrix products only:

    A = Phi(K^T H K - gamma I),      Phi(X) = Tril(X) + 1/2 Diag(X)
    K <- K (I - beta2 A)

(W. Lin, F. Dangel, R. Eschenhagen, J. Bae, R. E. Turner, A. Makhzani, "Can we remove the
square-root in adaptive gradient methods? A second-order perspective", ICML 2024; and the
structured inverse-free natural gradient, SINGD, of Lin et al., ICML 2024.)

Why it matches the default scheme to first order: ``A + A^T = X`` for symmetric
``X = K^T H K - gamma I``, so ``K_new K_new^T = K K^T - beta2 K X K^T + O(beta2^2)``, and with
``K K^T = S^-1`` this is ``S^-1 - beta2 (S^-1 H S^-1 - gamma S^-1)``; inverting,
``S_new = (1 - gamma beta2) S + beta2 H + O(beta2^2)``. ``K`` stays lower triangular (a product
of lower triangular matrices) and nothing on the update path is inverted or decomposed. For
the GOP, ``K^T H K = Q Q^T / k`` with ``Q = K^T [g_1 ... g_k]``: O(n^2 k) plus one n x n product.

``S`` stays SPD as long as ``K`` stays nonsingular, i.e. every diagonal factor
``1 - beta2/2 (q_i^2 - gamma)`` of ``I - beta2 A`` is non-zero (a negative factor only flips
the sign of a column of ``K``, which ``K K^T`` does not see, but it signals a step far outside
the first-order regime: ``beta2 q_i^2 > 2 + gamma beta2``). ``CholeskyCurvature.step``
raises ``FloatingPointError`` when the new ``K`` is singular or not finite.
Decompositions appear only at initialisation (``CholeskyCurvature.from_matrix``) and in
evaluation (``CholeskyCurvature.to_matrix``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..validation import check_positive, check_size, check_tensor, resolve_device, resolve_dtype

__all__ = ["CholeskyCurvature", "phi", "cholesky_h"]


def phi(X: Tensor) -> Tensor:
    """``Phi(X) = Tril(X) + 1/2 Diag(X)``: strictly lower part plus half the diagonal.

    For symmetric ``X``, ``Phi(X) + Phi(X)^T = X``.
    """
    return torch.tril(X, diagonal=-1) + 0.5 * torch.diag_embed(torch.diagonal(X, 0, -2, -1))


def cholesky_h(M: Tensor) -> Tensor:
    """``h(M) = I + M + M^2 / 2`` (Lin et al., 2023); lower triangular for a lower triangular M."""
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    return eye + M + 0.5 * (M @ M)


class CholeskyCurvature:
    """Precision ``S = (K K^T)^-1`` learned through its lower triangular factor ``K``.

    ``K <- K (I - beta2 Phi(K^T H K - gamma I))`` for the GOP ``H`` of a gradient batch
    (Lin et al., 2024; see the module docstring for the first-order equivalence with the
    default scheme ``S <- (1 - gamma beta2) S + beta2 H``).

    Args:
        n: matrix size.
        dtype, device: of ``K`` (default: torch's default dtype, CPU).
    """

    def __init__(self, n: int, dtype: torch.dtype | None = None, device: Any = None) -> None:
        self.n = check_size(n, "n")
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)

    def __repr__(self) -> str:
        return f"CholeskyCurvature(n={self.n}, dtype={self.dtype}, device={self.device})"

    def _check_factor(self, K: Tensor) -> Tensor:
        return check_tensor(K, "K", shape=(self.n, self.n), dtype=self.dtype, device=self.device)

    def from_matrix(self, S: Any) -> Tensor:
        """Lower triangular ``K`` with ``K K^T = S^-1`` (initialisation only; decompositions).

        With the exchange matrix ``P`` (index reversal) and the Cholesky factor
        ``P S P = L L^T``, ``K = P L^-T P`` is lower triangular with a positive diagonal and
        ``K K^T = P (L L^T)^-1 P = S^-1``; this avoids forming ``S^-1`` explicitly.
        Raises ``ValueError`` for a non-square, non-finite or non-positive-definite ``S``.
        """
        if not isinstance(S, Tensor):
            S = torch.as_tensor(S)
        check_tensor(S, "S", shape=(self.n, self.n))
        S64 = S.detach().to(dtype=torch.float64, device=self.device)
        S64 = 0.5 * (S64 + S64.T)
        flipped = torch.flip(S64, dims=(0, 1))  # P S P
        L, info = torch.linalg.cholesky_ex(flipped)  # init-only
        if int(info) != 0:
            raise ValueError("S: not positive definite (Cholesky factorisation failed)")
        eye = torch.eye(self.n, dtype=torch.float64, device=self.device)
        Linv_T = torch.linalg.solve_triangular(L, eye, upper=False).T  # init-only, upper
        K = torch.flip(Linv_T, dims=(0, 1))  # P L^-T P, lower triangular
        return K.to(self.dtype)

    def step(self, K: Tensor, grads: Tensor, beta2: float, gamma: float = 1.0) -> Tensor:
        """One update ``K <- K (I - beta2 Phi(K^T H K - gamma I))`` for the GOP of ``grads``.

        ``grads``: one gradient (n,) or a batch (k, n); ``H = (1/k) sum_i g_i g_i^T`` is never
        formed (``K^T H K = Q Q^T / k``, ``Q = K^T G^T``). Returns the new factor; ``K`` is not
        modified.
        """
        self._check_factor(K)
        beta2 = check_positive(beta2, "beta2")
        gamma = check_positive(gamma, "gamma", allow_zero=True)
        check_tensor(grads, "grads", dtype=self.dtype, device=self.device)
        if grads.ndim == 1:
            grads = grads[None, :]
        if grads.ndim != 2 or grads.shape[1] != self.n:
            raise ValueError(
                f"grads: expected shape ({self.n},) or (k, {self.n}), got {tuple(grads.shape)}"
            )
        Q = K.T @ grads.T  # (n, k)
        X = (Q @ Q.T) / grads.shape[0]
        X = X - gamma * torch.eye(self.n, dtype=self.dtype, device=self.device)
        A = phi(X)
        K_new = K - beta2 * (K @ A)
        if not bool(torch.isfinite(K_new).all()) or bool(torch.diagonal(K_new).eq(0).any()):
            raise FloatingPointError(
                "CholeskyCurvature.step: the step produced a singular or non-finite K "
                "(beta2 too large for this gradient?)"
            )
        return K_new

    def to_matrix(self, K: Tensor) -> Tensor:
        """``S = (K K^T)^-1 = K^-T K^-1`` via one triangular solve (for evaluation only)."""
        self._check_factor(K)
        eye = torch.eye(self.n, dtype=K.dtype, device=K.device)
        Kinv = torch.linalg.solve_triangular(K, eye, upper=False)
        S = Kinv.T @ Kinv
        return 0.5 * (S + S.T)

    def inverse_matrix(self, K: Tensor) -> Tensor:
        """``S^-1 = K K^T`` (the covariance; no solve)."""
        self._check_factor(K)
        return K @ K.T

    def check_point(self, K: Any) -> tuple[bool, str | None]:
        """``(ok, reason)``: a finite lower triangular (n, n) ``K`` with a non-zero diagonal."""
        if not isinstance(K, Tensor):
            return False, f"expected a torch.Tensor, got {type(K).__name__}"
        if tuple(K.shape) != (self.n, self.n):
            return False, f"K has shape {tuple(K.shape)}, expected {(self.n, self.n)}"
        if K.dtype != self.dtype:
            return False, f"K has dtype {K.dtype}, expected {self.dtype}"
        if not bool(torch.isfinite(K).all()):
            return False, "K contains NaN or Inf"
        if bool(torch.triu(K, diagonal=1).ne(0).any()):
            return False, "K is not lower triangular"
        if bool(torch.diagonal(K).eq(0).any()):
            return False, "K is singular (zero on the diagonal)"
        return True, None
