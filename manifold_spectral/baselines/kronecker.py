"""Kronecker-structured baselines of paper Sec. 4.1 / Fig. 2 (right) and Fig. 8.

Both learn a precision ``S = S_L kron S_R`` (``S_L``: a x a, ``S_R``: b x b; row-major
``vec``, ``S vec(X) = vec(S_L X S_R)``) from gradient matrices ``G = Mat(g)`` (a x b).

* ``nearest_kronecker``: the nearest Kronecker product in Frobenius norm (Van Loan &
  Pitsianis, 1993), from the leading singular pair of a rearranged matrix.
* ``KroneckerProjection``: the impractical projection baseline
  ``S_L kron S_R <- Proj((1 - gamma beta2)(S_L kron S_R) + beta2 g g^T)``. It forms the
  (ab, ab) matrix and an SVD at every step: a reference for what the best Kronecker-structured
  moving average can do, not a method.
* ``KroneckerCholeskyCurvature``: the inverse-free Kronecker Cholesky-factor scheme of
  Lin et al. (2023, 2024; INGD / SINGD without momentum),
  ``S = (K K^T)^-1 kron (C C^T)^-1``, updated by matrix products only (see its docstring for
  the derivation and the one correction to the INGD constants it needs to be the Fisher
  natural-gradient step to first order).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..linalg import nearest_kronecker_factors
from ..validation import (
    check_flag,
    check_positive,
    check_size,
    check_tensor,
    resolve_device,
    resolve_dtype,
)
from .cholesky import CholeskyCurvature, phi

__all__ = [
    "nearest_kronecker",
    "KroneckerProjection",
    "KroneckerCholeskyCurvature",
    "KroneckerCholeskyFactors",
]


def _check_sizes(a: Any, b: Any) -> tuple[int, int]:
    return check_size(a, "a"), check_size(b, "b")


def _gradient_matrices(grads: Tensor, a: int, b: int) -> Tensor:
    """Gradients as a (k, a, b) stack: accepts (a, b), (ab,) or (k, ab) (row-major vecs)."""
    if grads.ndim == 2 and tuple(grads.shape) == (a, b):
        return grads[None]
    if grads.ndim == 1 and grads.shape[0] == a * b:
        return grads.reshape(1, a, b)
    if grads.ndim == 2 and grads.shape[1] == a * b:
        return grads.reshape(-1, a, b)
    raise ValueError(
        f"grads: expected shape ({a}, {b}), ({a * b},) or (k, {a * b}), got {tuple(grads.shape)}"
    )


def nearest_kronecker(S: Tensor, a: int, b: int) -> tuple[Tensor, Tensor]:
    """``(A, B)`` minimising ``||S - A kron B||_F`` (Van Loan & Pitsianis, 1993).

    The leading singular pair of a rearranged ``S`` (``linalg.nearest_kronecker_factors``):
    ``A = sqrt(s_1) Mat(u_1)``, ``B = sqrt(s_1) Mat(v_1)`` (equal Frobenius norms). The
    residual ``S - A kron B`` is Frobenius-orthogonal to ``A kron B``, to ``A kron X`` and to
    ``X kron B`` for every ``X``.

    The pair ``(-A, -B)`` is an equally good solution; the sign is fixed so that
    ``tr A >= 0``. For symmetric ``S`` (to ``100 eps ||S||_F``) both factors are then
    symmetric (their rounding asymmetry is removed), and for SPD ``S`` they are SPD
    (Van Loan & Pitsianis, 1993).

    Args:
        S: an (ab, ab) matrix (any floating dtype; the SVD runs in it).
        a, b: the factor sizes.
    """
    a, b = _check_sizes(a, b)
    check_tensor(S, "S", shape=(a * b, a * b))
    A, B, _ = nearest_kronecker_factors(S, a, b)
    tol = 100.0 * torch.finfo(S.dtype).eps * torch.linalg.matrix_norm(S)
    if torch.linalg.matrix_norm(S - S.mT) <= tol:
        A, B = 0.5 * (A + A.T), 0.5 * (B + B.T)
    return A, B


class KroneckerProjection:
    """The projection baseline: ``S_L kron S_R <- Proj((1 - gamma beta2) S_L kron S_R + beta2 H)``.

    ``Proj`` is ``nearest_kronecker`` and ``H = (1/k) sum_i g_i g_i^T`` the GOP. The state is
    the pair of dense factors ``(S_L, S_R)``. Each step forms the (ab, ab) matrix and takes an
    SVD of an a^2 x b^2 matrix, O(a^2 b^2 min(a, b)^2) flops and O(a^2 b^2) memory: the
    impractical reference of paper Sec. 4.1 (Fig. 2, 8), which minimises the Frobenius
    distance to the full-matrix moving-average step at every iteration.
    """

    def __init__(self, a: int, b: int, dtype: torch.dtype | None = None, device: Any = None):
        self.a, self.b = _check_sizes(a, b)
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)

    def __repr__(self) -> str:
        return f"KroneckerProjection(a={self.a}, b={self.b}, dtype={self.dtype})"

    def from_kronecker(self, S_L: Tensor, S_R: Tensor) -> tuple[Tensor, Tensor]:
        """The state ``(S_L, S_R)`` (copied to the scheme's dtype and device)."""
        check_tensor(S_L, "S_L", shape=(self.a, self.a))
        check_tensor(S_R, "S_R", shape=(self.b, self.b))
        to = dict(dtype=self.dtype, device=self.device)
        return S_L.to(**to).clone(), S_R.to(**to).clone()

    def from_matrix(self, S: Tensor) -> tuple[Tensor, Tensor]:
        """The state of ``nearest_kronecker(S)`` (float64 SVD, initialisation only)."""
        A, B = nearest_kronecker(S.to(dtype=torch.float64, device=self.device), self.a, self.b)
        return self.from_kronecker(A, B)

    def step(
        self, state: tuple[Tensor, Tensor], grads: Tensor, beta2: float, gamma: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """One projected step; ``grads``: (a, b), (ab,) or (k, ab). Returns the new factors."""
        beta2 = check_positive(beta2, "beta2")
        gamma = check_positive(gamma, "gamma", allow_zero=True)
        check_tensor(grads, "grads", dtype=self.dtype, device=self.device)
        g = _gradient_matrices(grads, self.a, self.b).reshape(-1, self.a * self.b)
        S_L, S_R = state
        full = (1.0 - gamma * beta2) * torch.kron(S_L, S_R) + (beta2 / g.shape[0]) * (g.T @ g)
        A, B = nearest_kronecker(full, self.a, self.b)
        if not (bool(torch.isfinite(A).all()) and bool(torch.isfinite(B).all())):
            raise FloatingPointError("KroneckerProjection.step: non-finite factors")
        return A, B

    def to_matrix(self, state: tuple[Tensor, Tensor]) -> Tensor:
        """Dense ``S_L kron S_R`` (ab, ab)."""
        return torch.kron(*state)


@dataclasses.dataclass(frozen=True)
class KroneckerCholeskyFactors:
    """``S = (K K^T)^-1 kron (C C^T)^-1``: ``K`` (a x a) and ``C`` (b x b) lower triangular."""

    K: Tensor
    C: Tensor


class KroneckerCholeskyCurvature:
    r"""Inverse-free Kronecker Cholesky-factor curvature learning (Lin et al. 2023, 2024).

    The precision is ``S = (K K^T)^-1 kron (C C^T)^-1`` with ``K`` (a x a) and ``C`` (b x b)
    lower triangular (the covariance ``S^-1 = (K K^T) kron (C C^T)`` is a matrix-normal one).
    For the GOP ``H = (1/k) sum_i g_i g_i^T`` of gradient matrices ``G_i = Mat(g_i)``, with
    ``Y_i = K^T G_i C`` (a x b), one step is

        H_K = mean_i Y_i Y_i^T  (a x a),       H_C = mean_i Y_i^T Y_i  (b x b)
        c   = (gamma + tr(H_K) / (a b)) / 2
        K  <- K (I - beta2 Phi(H_K / b - c I))
        C  <- C (I - beta2 Phi(H_C / a - c I))

    with ``Phi(X) = Tril(X) + 1/2 Diag(X)`` (``baselines.phi``; ``2 Phi`` is the ``Phi2`` of
    INGD). Only matrix products; ``K`` and ``C`` stay lower triangular.

    Derivation (first order in ``beta2``). Let ``W = K kron C``, so ``S^-1 = W W^T`` and the
    Fisher-Rao (affine-invariant) metric ``1/2 tr(S^-1 dS S^-1 dS)`` is the Frobenius norm of
    the whitened change ``X = W^T dS W``. The default full-matrix step
    ``dS = beta2 (H - gamma S)`` whitens to ``beta2 T`` with
    ``T = mean_i vec(Y_i) vec(Y_i)^T - gamma I``, because ``W^T vec(G) = vec(K^T G C)``.
    The tangent space of the Kronecker family at ``S`` whitens to
    ``{A kron I + I kron B : A, B symmetric}``, so the Fisher natural-gradient step of the
    family (parametrisation-invariant to first order, for any parametrisation that covers
    the family, e.g. the triangular factors) is ``beta2`` times the Frobenius projection of
    ``T`` onto that space. Its normal equations use the partial traces
    ``Tr_R T = sum_i Y_i Y_i^T / k - gamma b I = H_K - gamma b I`` and
    ``Tr_L T = H_C - gamma a I``:

        b A + tr(B) I = H_K - gamma b I,     tr(A) I + a B = H_C - gamma a I,

    solved up to the gauge ``(A + s I, B - s I)`` (the same ``S``) by
    ``A = H_K / b - c I``, ``B = H_C / a - c I`` with ``c = (gamma + tr(H_K) / (ab)) / 2``
    (the symmetric choice of ``s``). On the other side, ``K <- K (I + m_K)``,
    ``C <- C (I + m_C)`` changes ``S`` to first order by
    ``W^T dS W = -(m_K + m_K^T) kron I - I kron (m_C + m_C^T)``, and
    ``m_K = -beta2 Phi(A)``, ``m_C = -beta2 Phi(B)`` give ``-(m + m^T) = beta2 A`` (resp. B)
    since ``Phi(X) + Phi(X)^T = X``. Hence ``S_new = S + beta2 Proj_S(H - gamma S) +
    O(beta2^2)``: the same first-order change as the spectral Kronecker step
    (``KroneckerSpectralSPD`` + ``Gaussian``, exact RGD under the same metric), which
    ``tests/test_experiment_kronecker.py`` checks as a rate test (difference ``O(beta2^2)``).

    The plain INGD constants (``c = gamma`` in both factors, ``split_scale=False``) use a
    block-diagonal Fisher approximation that ignores the coupling of ``K`` and ``C`` through
    the common scale: the identity component of the whitened step is counted twice
    (``S_new - S_projected = beta2 (tr(H_K)/(ab) - gamma) S + O(beta2^2)``). The fixed point
    (``E[H_K] = gamma b I``, ``E[H_C] = gamma a I``) is the same, but the step differs from
    the natural gradient at first order. This is the non-uniqueness of the Kronecker
    factorisation that the paper's ``alpha`` and ``det S_l = 1`` remove (Claims 5-6).

    Args:
        a, b: factor sizes (rows and columns of the weight matrix).
        dtype, device: of ``K`` and ``C`` (default: torch's default dtype, CPU).
        split_scale: ``True`` (default) for the first-order natural-gradient constants above;
            ``False`` for the plain INGD constants ``c = gamma``.
    """

    def __init__(
        self,
        a: int,
        b: int,
        dtype: torch.dtype | None = None,
        device: Any = None,
        *,
        split_scale: bool = True,
    ) -> None:
        self.a, self.b = _check_sizes(a, b)
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.split_scale = check_flag(split_scale, "split_scale")
        self._left = CholeskyCurvature(self.a, self.dtype, self.device)
        self._right = CholeskyCurvature(self.b, self.dtype, self.device)

    def __repr__(self) -> str:
        return (
            f"KroneckerCholeskyCurvature(a={self.a}, b={self.b}, dtype={self.dtype}, "
            f"split_scale={self.split_scale})"
        )

    def from_kronecker(self, S_L: Any, S_R: Any) -> KroneckerCholeskyFactors:
        """Factors with ``K K^T = S_L^-1``, ``C C^T = S_R^-1`` (initialisation only)."""
        return KroneckerCholeskyFactors(self._left.from_matrix(S_L), self._right.from_matrix(S_R))

    def from_matrix(self, S: Tensor) -> KroneckerCholeskyFactors:
        """Factors of ``nearest_kronecker(S)`` (float64 SVD; initialisation only)."""
        A, B = nearest_kronecker(S.to(dtype=torch.float64, device=self.device), self.a, self.b)
        return self.from_kronecker(A, B)

    def step(
        self,
        state: KroneckerCholeskyFactors,
        grads: Tensor,
        beta2: float,
        gamma: float = 1.0,
    ) -> KroneckerCholeskyFactors:
        """One update for the GOP of ``grads`` ((a, b), (ab,) or (k, ab)); no (ab, ab) matrix.

        Cost per gradient: ``Y`` 2ab(a + b) flops, ``H_K`` and ``H_C`` 2ab(a + b); the factor
        updates 2(a^3 + b^3)/3 (triangular products). Raises ``FloatingPointError`` if a new
        factor is singular or not finite (``beta2`` far outside the first-order regime).
        """
        K, C = state.K, state.C
        self._left._check_factor(K)
        self._right._check_factor(C)
        beta2 = check_positive(beta2, "beta2")
        gamma = check_positive(gamma, "gamma", allow_zero=True)
        check_tensor(grads, "grads", dtype=self.dtype, device=self.device)
        G = _gradient_matrices(grads, self.a, self.b)
        Y = K.T @ G @ C  # (k, a, b)
        k = Y.shape[0]
        H_K = torch.einsum("kij,klj->il", Y, Y) / k
        H_C = torch.einsum("kij,kil->jl", Y, Y) / k
        if self.split_scale:
            c = 0.5 * (gamma + torch.trace(H_K) / (self.a * self.b))
        else:
            c = torch.as_tensor(gamma, dtype=self.dtype, device=self.device)
        eye_a = torch.eye(self.a, dtype=self.dtype, device=self.device)
        eye_b = torch.eye(self.b, dtype=self.dtype, device=self.device)
        K_new = K - beta2 * (K @ phi(H_K / self.b - c * eye_a))
        C_new = C - beta2 * (C @ phi(H_C / self.a - c * eye_b))
        for F in (K_new, C_new):
            if not bool(torch.isfinite(F).all()) or bool(torch.diagonal(F).eq(0).any()):
                raise FloatingPointError(
                    "KroneckerCholeskyCurvature.step: the step produced a singular or "
                    "non-finite factor (beta2 too large for this gradient?)"
                )
        return KroneckerCholeskyFactors(K_new, C_new)

    def factor_matrices(self, state: KroneckerCholeskyFactors) -> tuple[Tensor, Tensor]:
        """``((K K^T)^-1, (C C^T)^-1)`` by triangular solves (evaluation only)."""
        return self._left.to_matrix(state.K), self._right.to_matrix(state.C)

    def to_matrix(self, state: KroneckerCholeskyFactors) -> Tensor:
        """Dense ``S = (K K^T)^-1 kron (C C^T)^-1`` (ab, ab) (evaluation only)."""
        return torch.kron(*self.factor_matrices(state))
