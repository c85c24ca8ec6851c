"""Optimisation over SPD matrices: problems and ``minimize`` (paper Sec. 4.2, Fig. 3 left).

Problems (each exposes ``value``, the Euclidean gradient ``egrad = df/dS`` and, where known,
the optimal value ``f_star`` and minimiser ``x_star``):

* ``MetricNearness(Q, X)``: ``f(S) = 1/(2N) sum_i ||S Q x_i - x_i||^2`` over samples ``x_i``
  (rows of ``X``), of which each iteration observes a random mini-batch of ``m``:
  ``egrad = Sym(R^T Y) / m`` with ``Y`` the batch rows of ``X Q`` and ``R = Y S - X_batch``
  (row form of ``(S Q x - x)(Q x)^T``). ``S* = Q^-1``, ``f* = 0``.
* ``LogDet(Q)``: ``f(S) = tr(S Q) - log det S``, ``egrad = Q - S^-1``; ``S* = Q^-1``,
  ``f* = n + log det Q``.
* ``Objective(fun, n, grad=None)``: any smooth ``f(S)``, with a callable gradient or
  autograd on a torch function of ``S``.

``minimize(problem, method, lr, steps)`` runs one of three Riemannian gradient methods under
the same Fisher-Rao (affine-invariant) metric ``1/2 tr(S^-1 dS S^-1 dS)``, so with the same
``lr`` all three take the step ``S - 2 lr S E S + O(lr^2)`` (they follow the same Riemannian
gradient flow, and their curves coincide; paper Fig. 3):

* ``"spectral"``: ``S = B Diag(d) B^T`` on ``SpectralSPD``, ``RGD(M, lr).step`` (ours; no
  eigendecomposition, Cholesky or inverse of ``S`` after initialisation);
* ``"retraction"``: dense ``S`` with geoopt's ``SymmetricPositiveDefinite`` and
  ``RiemannianSGD`` at ``2 lr`` (``baselines.RetractionRGD``; geoopt's metric is twice ours);
* ``"cholesky"``: ``S = L L^T``, ``L <- L h(-2 lr Phi(L^T E L))`` (``baselines.CholeskyRGD``,
  Lin et al. 2023).

Fast path: ``LogDet`` and ``MetricNearness`` implement ``congruence_grad(A, w) = A^T E A``
at ``S = A Diag(w) A^T`` with matrix products only (``A^T S^-1 A = Diag(1/w)`` for any
invertible ``A``). The spectral method passes its factors ``(B, d)`` and hands
``G = B^T E B`` to ``RGD.step_eigenbasis``; the Cholesky method passes ``(L, 1)``. Neither
forms ``S``, ``S^-1`` or a decomposition. Other problems go through the dense
``egrad(S)`` and ``RGD.step``.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._threads import small_problem_threads, torch_threads
from ..baselines.cholesky_rgd import CholeskyRGD
from ..baselines.retraction_rgd import RetractionRGD
from ..linalg import check_cayley, eps, sym
from ..manifolds import SpectralPoint, SpectralSPD
from ..rgd import RGD
from ..validation import (
    NonFiniteError,
    check_positive,
    check_real,
    check_size,
    check_tensor,
    resolve_device,
    resolve_dtype,
    symmetric_matrix,
)
from .check import GradientCheck, check_gradient
from .result import OptimizeResult

__all__ = [
    "check_gradient",
    "GradientCheck",
    "SPDProblem",
    "LogDet",
    "MetricNearness",
    "Objective",
    "SPDResult",
    "METHODS",
    "minimize",
]

#: The methods of ``minimize``.
METHODS = ("spectral", "retraction", "cholesky")


# Input handling ------------------------------------------------------------------------------


def _as_tensor(value: Any, name: str) -> tuple[Tensor, bool]:
    """``(tensor, came_as_numpy)``; non-floating input becomes float64."""
    is_numpy = not isinstance(value, Tensor)
    if is_numpy:
        try:
            value = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name}: expected a matrix (tensor or array), got {value!r}") from e
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{name}: expected real numbers, got dtype {value.dtype}")
    if not value.dtype.is_floating_point:
        value = value.to(torch.float64)
    return value, is_numpy


def _spd_matrix(Q: Any, name: str = "Q") -> tuple[Tensor, bool, Tensor]:
    """Validate a symmetric positive-definite matrix; returns it (its own dtype and device),
    whether it came as numpy, and its Cholesky factor in float64 (setup only)."""
    Q, is_numpy = _as_tensor(Q, name)
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] < 1:
        raise ValueError(f"{name}: expected a square (n, n) matrix, got shape {tuple(Q.shape)}")
    Q64, _ = symmetric_matrix(Q, name, Q.shape[0])
    Q64 = sym(Q64)
    chol, info = torch.linalg.cholesky_ex(Q64)  # init-only: validates Q when built
    if int(info) != 0:
        raise ValueError(f"{name}: not positive definite (Cholesky factorisation failed)")
    return sym(Q), is_numpy, chol


def _logdet_dense(S: Tensor) -> Tensor:
    """``log det S`` of a dense SPD matrix (dense monitoring only); ``-inf`` if not PD (the
    limit at the boundary of the cone, so that ``-log det S = +inf`` outside it)."""
    L, info = torch.linalg.cholesky_ex(S)  # dense monitoring/baselines; not on the spectral path
    if int(info) != 0:
        return torch.tensor(-math.inf, dtype=S.dtype, device=S.device)
    return 2.0 * torch.log(torch.diagonal(L)).sum()


# Problems ------------------------------------------------------------------------------------


class SPDProblem(abc.ABC):
    """A smooth ``f(S)`` over n x n SPD matrices.

    Attributes: ``n``, ``dtype``, ``device``; ``numpy`` (``minimize`` returns numpy arrays when
    true); ``f_star`` (optimal value, or ``None``); ``factored`` (whether
    ``congruence_grad`` is implemented); ``stochastic`` (whether ``sample`` draws batches).
    """

    n: int
    dtype: torch.dtype
    device: torch.device
    numpy: bool = False
    f_star: float | None = None
    factored: bool = False
    stochastic: bool = False

    @abc.abstractmethod
    def value(self, S: Tensor, *, logdet: Tensor | None = None) -> Tensor:
        """``f(S)`` (the full objective; ``logdet``, if given, is ``log det S``)."""

    @abc.abstractmethod
    def egrad(self, S: Tensor, batch: Any = None) -> Tensor:
        """Euclidean gradient ``df/dS`` (symmetric), on ``batch`` for stochastic problems."""

    def congruence_grad(
        self, A: Tensor, w: Tensor, batch: Any = None, *, orthogonal: bool = False
    ) -> Tensor:
        """``A^T E A`` with ``E = df/dS`` at ``S = A Diag(w) A^T`` (``A`` invertible, ``w > 0``),
        formed without ``S``; only where ``factored`` is true. ``orthogonal=True`` promises
        ``A^T A = I`` (spectral factors), which some problems use to save products."""
        raise NotImplementedError(f"{type(self).__name__}.congruence_grad")

    def sample(self, generator: torch.Generator) -> Any:
        """The data one iteration observes (``None`` for deterministic problems)."""
        return None

    @property
    def x_star(self) -> Tensor | None:
        """The minimiser as a dense matrix, where known (``None`` otherwise)."""
        return None

    def _check_factors(self, A: Any, w: Any) -> None:
        """Shape, dtype and device of the factors of ``congruence_grad`` (no reduction)."""
        opts = dict(dtype=self.dtype, device=self.device, finite=False)
        check_tensor(A, "A", shape=(self.n, self.n), **opts)
        check_tensor(w, "w", shape=(self.n,), **opts)

    def _check_matrix(self, S: Tensor, name: str = "S") -> Tensor:
        return check_tensor(S, name, shape=(self.n, self.n), dtype=self.dtype, device=self.device)


class _InverseOptimum(SPDProblem):
    """Shared setup of the problems with minimiser ``S* = Q^-1``."""

    def __init__(self, Q: Any) -> None:
        self.Q, self.numpy, self._chol = _spd_matrix(Q)
        self.n = self.Q.shape[0]
        self.dtype = self.Q.dtype
        self.device = resolve_device(self.Q.device)
        self._x_star: Tensor | None = None

    @property
    def x_star(self) -> Tensor:
        """``S* = Q^-1`` (computed once, by a Cholesky inverse: for reporting only)."""
        if self._x_star is None:
            self._x_star = torch.cholesky_inverse(self._chol).to(self.dtype)  # reporting only
        return self._x_star

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, dtype={self.dtype}, device={self.device})"


class LogDet(_InverseOptimum):
    """``f(S) = tr(S Q) - log det S`` (Han et al., 2021), minimiser ``S* = Q^-1``.

    Args:
        Q: symmetric positive-definite (n, n) matrix (numpy or torch; its dtype and device
            are the problem's). ``ValueError`` if it is not square, symmetric, finite and PD.

    ``egrad(S) = Q - S^-1`` is indefinite away from the optimum. ``f* = n + log det Q``.
    """

    factored = True

    def __init__(self, Q: Any) -> None:
        super().__init__(Q)
        self.f_star = float(self.n + 2.0 * torch.log(torch.diagonal(self._chol)).sum())

    def value(self, S: Tensor, *, logdet: Tensor | None = None) -> Tensor:
        self._check_matrix(S)
        return (S * self.Q).sum() - (_logdet_dense(S) if logdet is None else logdet)

    def egrad(self, S: Tensor, batch: Any = None) -> Tensor:
        """``Q - S^-1`` (dense path: one Cholesky inverse of ``S``)."""
        self._check_matrix(S)
        L, info = torch.linalg.cholesky_ex(S)  # dense path of the baselines only
        if int(info) != 0:
            raise ValueError("S: not positive definite")
        return sym(self.Q - torch.cholesky_inverse(L))

    def congruence_grad(
        self, A: Tensor, w: Tensor, batch: Any = None, *, orthogonal: bool = False
    ) -> Tensor:
        """``A^T Q A - Diag(1/w)``: ``A^T S^-1 A = Diag(1/w)`` for ``S = A Diag(w) A^T``."""
        self._check_factors(A, w)
        G = sym(A.T @ (self.Q @ A))
        G.diagonal().sub_(1.0 / w)
        return G


class MetricNearness(_InverseOptimum):
    """``f(S) = 1/(2N) sum_i ||S Q x_i - x_i||^2`` (Brickell et al., 2008), minimiser
    ``S* = Q^-1`` with ``f* = 0``; each iteration observes a mini-batch of the ``x_i``.

    Args:
        Q: symmetric positive-definite (n, n) matrix.
        X: samples, one per row, shape (N, n); default: ``n_samples`` draws from
            ``N(0, I)`` (seeded by ``seed``).
        n_samples: N when ``X`` is not given (default ``10 n``).
        batch_size: samples per iteration (default ``min(N, n)``; ``N`` makes the problem
            deterministic).
        seed: of the generated samples.

    ``S Q x_i = x_i`` for every sample at ``S = Q^-1``, so the mini-batch gradient vanishes
    at the optimum and a constant step size converges (no gradient noise at ``S*``). With
    ``N >= n`` samples spanning R^n the minimiser is unique. The full objective is evaluated
    as ``1/2 tr(R Sigma R^T)``, ``R = S Q - I``, ``Sigma = X^T X / N`` (O(n^3), any N).
    """

    factored = True

    def __init__(
        self,
        Q: Any,
        X: Any = None,
        *,
        n_samples: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(Q)
        n = self.n
        if X is None:
            N = 10 * n if n_samples is None else _positive_int(n_samples, "n_samples")
            g = torch.Generator().manual_seed(_nonnegative_int(seed, "seed"))
            X = torch.randn(N, n, generator=g, dtype=torch.float64)
        elif n_samples is not None:
            raise ValueError("n_samples: give either X or n_samples, not both")
        X, _ = _as_tensor(X, "X")
        check_tensor(X, "X")
        if X.ndim != 2 or X.shape[1] != n or X.shape[0] < 1:
            raise ValueError(
                f"X: expected shape (N, {n}) (one sample per row, matching Q), got {tuple(X.shape)}"
            )
        self.X = X.to(dtype=self.dtype, device=self.device)
        self.N = X.shape[0]
        self.batch_size = (
            min(self.N, n) if batch_size is None else _positive_int(batch_size, "batch_size")
        )
        if self.batch_size > self.N:
            raise ValueError(f"batch_size: {self.batch_size} exceeds the {self.N} samples")
        self.stochastic = self.batch_size < self.N
        self.Y = self.X @ self.Q  # rows (Q x_i)^T, once
        self.Sigma = (self.X.T @ self.X) / self.N
        self.f_star = 0.0

    def value(self, S: Tensor, *, logdet: Tensor | None = None) -> Tensor:
        self._check_matrix(S)
        R = S @ self.Q - torch.eye(self.n, dtype=self.dtype, device=self.device)
        return 0.5 * ((R @ self.Sigma) * R).sum()

    def sample(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A batch ``(X_b, Y_b)`` of ``batch_size`` distinct rows of ``X`` and ``X Q``."""
        if not self.stochastic:
            return self.X, self.Y
        idx = torch.randperm(self.N, generator=generator)[: self.batch_size].to(self.device)
        return self.X[idx], self.Y[idx]

    def _batch(self, batch: Any) -> tuple[Tensor, Tensor]:
        return (self.X, self.Y) if batch is None else batch

    def egrad(self, S: Tensor, batch: Any = None) -> Tensor:
        """``Sym(R^T Y) / m`` with ``R = Y S - X_b`` (rows ``(S Q x_i - x_i)^T``)."""
        self._check_matrix(S)
        Xb, Yb = self._batch(batch)
        R = Yb @ S - Xb
        return sym(R.T @ Yb) / Xb.shape[0]

    def congruence_grad(
        self, A: Tensor, w: Tensor, batch: Any = None, *, orthogonal: bool = False
    ) -> Tensor:
        """``Sym(P^T Z) / m`` with ``Z = Y A``, ``P = ((Z w) A^T - X_b) A``: four products of
        an (m, n) and an (n, n) matrix, no ``S``. With ``A^T A = I`` (``orthogonal``)
        ``P = Z w - X_b A``, and ``[Y; X_b] A`` is one product: half the work."""
        self._check_factors(A, w)
        Xb, Yb = self._batch(batch)
        m = Xb.shape[0]
        if orthogonal:
            ZX = torch.cat([Yb, Xb]) @ A
            Z, XA = ZX[:m], ZX[m:]
            P = Z * w - XA
        else:
            Z = Yb @ A
            P = ((Z * w) @ A.T - Xb) @ A
        return sym(P.T @ Z) / m


class Objective(SPDProblem):
    """A user-supplied ``f(S)``.

    Args:
        fun: ``f(S) -> scalar``. Receives a torch tensor (a numpy array with ``numpy=True``).
        n: matrix size.
        grad: ``df/dS`` as a callable of ``S`` (any shape-(n, n) array; symmetrised). Default:
            autograd on ``fun``, which must then be a torch function returning a 0-d tensor.
        f_star: the optimal value if known (enables ``history["gap"]`` and ``tol``).
        x_star: the minimiser if known (reporting only).
        dtype, device: of ``S`` (default float64, CPU).
        numpy: call ``fun``/``grad`` with numpy arrays (CPU; ``grad`` required) and return
            numpy arrays from ``minimize``.
    """

    def __init__(
        self,
        fun: Callable[[Any], Any],
        n: int,
        grad: Callable[[Any], Any] | None = None,
        *,
        f_star: float | None = None,
        x_star: Any = None,
        dtype: torch.dtype = torch.float64,
        device: Any = None,
        numpy: bool = False,
    ) -> None:
        if not callable(fun):
            raise TypeError(f"fun: expected a callable, got {type(fun).__name__}")
        if grad is not None and not callable(grad):
            raise TypeError(f"grad: expected a callable or None, got {type(grad).__name__}")
        if not isinstance(numpy, bool):
            raise TypeError(f"numpy: expected a bool, got {numpy!r}")
        if numpy and grad is None:
            raise ValueError("grad: required with numpy=True (autograd needs torch functions)")
        self.fun, self.grad_fn = fun, grad
        self.n = check_size(n, "n")
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.numpy = numpy
        self.f_star = None if f_star is None else check_real(f_star, "f_star")
        self._x_star = None
        if x_star is not None:
            xs, _ = _as_tensor(x_star, "x_star")
            self._x_star = self._check_matrix(xs.to(dtype=dtype, device=self.device), "x_star")

    @property
    def x_star(self) -> Tensor | None:
        return self._x_star

    def __repr__(self) -> str:
        return f"Objective({getattr(self.fun, '__name__', 'fun')}, n={self.n})"

    def _call(self, S: Tensor, fn: Callable[[Any], Any]) -> Any:
        return fn(S.detach().cpu().numpy()) if self.numpy else fn(S)

    def value(self, S: Tensor, *, logdet: Tensor | None = None) -> Tensor:
        self._check_matrix(S)
        with torch.no_grad():
            f = self._call(S, self.fun)
        f = torch.as_tensor(np.asarray(f) if self.numpy else f)
        if f.numel() != 1:
            raise ValueError(f"fun: expected a scalar, got shape {tuple(f.shape)}")
        return f.reshape(()).to(dtype=self.dtype, device=self.device)

    def egrad(self, S: Tensor, batch: Any = None) -> Tensor:
        self._check_matrix(S)
        if self.grad_fn is not None:
            E, _ = _as_tensor(self._call(S, self.grad_fn), "grad(S)")
            E = E.to(dtype=self.dtype, device=self.device)
        else:
            Sv = S.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                f = self.fun(Sv)
                if not isinstance(f, Tensor) or f.numel() != 1 or not f.requires_grad:
                    raise TypeError(
                        "fun: autograd needs a torch function of S returning a scalar tensor "
                        "that depends on S; otherwise pass grad="
                    )
                (E,) = torch.autograd.grad(f.reshape(()), Sv)
        check_tensor(E, "grad(S)", shape=(self.n, self.n))
        return sym(E)


# Methods -------------------------------------------------------------------------------------


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
        self.L = self.opt.origin() if x0 is None else self.opt.from_matrix(x0)
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
        return self.L

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


_METHOD_CLASSES = {"spectral": _Spectral, "retraction": _Retraction, "cholesky": _Cholesky}


def _eig_factors(S: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, d)`` of a dense baseline result: one ``eigh`` after the run (reporting only)."""
    d, B = torch.linalg.eigh(sym(S))  # post-processing of a baseline, not on the update path
    return B, d


# minimize ------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False, repr=False)  # OptimizeResult's short repr, no tensor dumps
class SPDResult(OptimizeResult):
    """``OptimizeResult`` of ``spd.minimize``, plus:

    * ``B``, ``d``: spectral factors of ``x`` (``x = B Diag(d) B^T``); the spectral method's
      own iterate, one ``eigh`` of the final matrix for the baselines;
    * ``f_star``: the problem's optimal value (``None`` if unknown); ``gap = fun - f_star``;
    * ``point``: the method's native final state (``SpectralPoint``, the Cholesky factor
      ``L`` or the dense ``S``, as torch tensors) to warm-start another run. A
      ``SpectralPoint`` passes ``SpectralSPD.check_point`` (a Neumann run's drifted ``B`` is
      re-orthogonalised at the end, and ``x``, ``B``, ``d`` and ``fun`` are those of the
      repaired point).

    ``history`` holds ``"nit"``, ``"fun"``, ``"time"`` (cumulative update seconds,
    monitoring excluded) and, with ``f_star``, ``"gap"``.
    """

    B: Any = None
    d: Any = None
    f_star: float | None = None
    gap: float | None = None
    point: Any = None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _nonnegative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return int(value)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _thread_limit(
    threads: int | str | None, n: int, device: torch.device
) -> contextlib.AbstractContextManager:
    """``minimize``'s ``threads`` option as a context manager (see ``_threads``)."""
    if threads == "auto":
        return small_problem_threads(n, device)
    return torch_threads(threads)  # type: ignore[arg-type]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _start_matrix(problem: SPDProblem, x0: Any) -> Any:
    """Validate ``x0`` against the problem and bring it to its dtype and device."""
    if x0 is None or isinstance(x0, SpectralPoint):
        return x0
    S0, _ = _as_tensor(x0, "x0")
    if tuple(S0.shape) != (problem.n, problem.n):
        raise ValueError(
            f"x0: expected shape ({problem.n}, {problem.n}) to match the problem, "
            f"got {tuple(S0.shape)}"
        )
    S0, _, _ = _spd_matrix(S0, "x0")
    return S0.to(dtype=problem.dtype, device=problem.device)


def minimize(
    problem: SPDProblem,
    method: str = "spectral",
    lr: float | None = None,
    steps: int = 1000,
    *,
    x0: Any = None,
    tol: float | None = None,
    momentum: float = 0.0,
    cayley: str = "exact",
    jacobi: bool = True,
    second_order: bool = True,
    seed: int = 0,
    record_every: int = 1,
    callback: Callable[[int, float], Any] | None = None,
    threads: int | str | None = "auto",
) -> SPDResult:
    """Minimise ``problem`` over SPD matrices by Riemannian gradient descent.

    Args:
        problem: an ``SPDProblem`` (``LogDet``, ``MetricNearness``, ``Objective``, ...).
        method: ``"spectral"`` (ours), ``"retraction"`` (geoopt) or ``"cholesky"``.
        lr: step size (> 0, required) in the Fisher-Rao convention, the same for every method
            (geoopt runs at ``2 lr``, see ``baselines.retraction_rgd``). Far from the optimum
            a large ``lr`` makes the dense methods diverge first (metric nearness), while the
            spectral step stays SPD for every ``lr`` (``d <- d exp(m)``).
        steps: maximum number of iterations.
        x0: starting matrix (numpy or torch, SPD, (n, n)) or, for ``"spectral"``, a
            ``SpectralPoint``; default the identity. The spectral chart's metric is
            singular at repeated eigenvalues, so from ``x0 = c I`` the first step only
            rescales (the rotation part of the step is zero there, Moore-Penrose rule).
        tol: stop once ``f - f* < tol`` (checked at recorded iterations; needs
            ``problem.f_star``). ``f`` is evaluated in the problem's dtype, so a gap below
            its resolution ``eps(dtype) |f*|`` cannot be measured: a smaller ``tol`` warns
            and is raised to it (the message names both). A negative gap within the rounding
            of ``f``, ``sqrt(eps(dtype)) max(|f*|, |f(x0)|)``, counts as 0; one beyond it is no
            convergence: the run stops with ``success=False`` (``f_star`` is not the optimal
            value, or ``f`` is evaluated inaccurately).
        momentum: heavy-ball coefficient in ``[0, 1)`` (chart momentum for ``"spectral"``
            and ``"cholesky"``; geoopt's momentum for ``"retraction"``).
        cayley: Cayley map of ``"spectral"``: ``"exact"`` (one n x n linear solve with the
            always-invertible ``I - N``, ``N`` skew) or ``"neumann"`` (matrix products only).
        jacobi: ``"spectral"`` only: turn each eigenvector pair by its exact 2 x 2 Jacobi
            angle (``RGD(jacobi=True)``, ``manifolds.blocks.jacobi_angles``). The step is the
            same to first order; where eigenvalues are close the linearised angle
            ``~ 1 / gap`` overshoots and costs iterations. Elementwise, no extra product.
        second_order: ``"spectral"`` only, needs ``jacobi``: turn ``B`` to the eigenvectors
            of the first-order step up to third-order terms (``RGD(second_order=True)``,
            ``manifolds.blocks.second_order_angles``): the Jacobi angles plus each pair's
            coupling through the other eigenvectors, one more n x n product per iteration;
            it follows the affine-invariant exponential map (geoopt's step) where
            eigenvalues are close.
        seed: of the mini-batch sequence (the same ``seed`` gives every method the same
            batches).
        record_every: record ``history`` (and check ``tol``, call ``callback``) every k
            iterations; the first and last iterates are always recorded.
        callback: ``callback(nit, fun)`` at each record; returning ``True`` stops the run.
        threads: torch intra-op threads during the run, the caller's count restored on exit
            (also on an exception). ``"auto"`` (default): one thread for ``n <=
            _threads.SMALL_MATRIX`` (256) on the CPU, where more threads only add overhead and
            a loaded machine stalls them, else unchanged; an int: that many; ``None``: unchanged.

    Returns:
        ``SPDResult``: ``x`` as a matrix and as spectral factors ``B``, ``d``, in numpy if the
        problem was built from numpy, else torch on the problem's device; ``fun``, ``gap``,
        ``nit``, ``success``, ``message``, ``history``, ``time``. A step that fails
        numerically (``FloatingPointError``) ends the run with ``success=False`` and the last
        good iterate, and so does a gradient with NaN or Inf (the gradient of the
        problem at the returned ``x``: ``NonFiniteError``, a ``FloatingPointError``). A
        non-finite value of ``f`` also ends it, returning the last recorded iterate whose
        value was finite (``nit`` still counts the steps taken; ``history`` keeps the
        non-finite record).
    """
    if not isinstance(problem, SPDProblem):
        raise TypeError(f"problem: expected an SPDProblem, got {type(problem).__name__}")
    if method not in _METHOD_CLASSES:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if lr is None:
        raise TypeError("lr: required (a step size > 0, e.g. lr=0.01)")
    lr = check_positive(lr, "lr")
    steps = _positive_int(steps, "steps")
    record_every = _positive_int(record_every, "record_every")
    cayley = check_cayley(cayley)
    if not isinstance(jacobi, bool):
        raise TypeError(f"jacobi: expected a bool, got {jacobi!r}")
    if not isinstance(second_order, bool):
        raise TypeError(f"second_order: expected a bool, got {second_order!r}")
    if second_order and not jacobi:
        raise ValueError(
            "second_order=True needs jacobi=True (its first-order part is the Jacobi angle); "
            "pass second_order=False for the linearised rotation"
        )
    rotation = "second-order" if second_order else ("jacobi" if jacobi else "linear")
    tol_note = ""
    if tol is not None:
        tol = check_positive(tol, "tol")
        if problem.f_star is None:
            raise ValueError("tol: needs a problem with a known optimal value (f_star)")
        resolution = eps(problem.dtype) * abs(problem.f_star)
        if tol < resolution:
            tol_note = f" (tol={tol:g} requested: below the {problem.dtype} resolution)"
            warnings.warn(
                f"tol={tol:g} is below the resolution of f in {problem.dtype} at f* = "
                f"{problem.f_star:g} (eps |f*| = {resolution:.2g}); using tol = {resolution:.2g}",
                UserWarning,
                stacklevel=2,
            )
            tol = resolution
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable, got {type(callback).__name__}")
    if not (threads in (None, "auto") or _is_positive_int(threads)):
        raise ValueError(f"threads: expected 'auto', None or an int >= 1, got {threads!r}")
    x0 = _start_matrix(problem, x0)
    if isinstance(x0, SpectralPoint) and method != "spectral":
        M0 = SpectralSPD(problem.n, dtype=problem.dtype, device=problem.device)
        M0.validate_point(x0, "x0")  # as the spectral method does: B Diag(d) B^T must be x0
        x0 = M0.to_matrix(x0)
    generator = torch.Generator().manual_seed(_nonnegative_int(seed, "seed"))
    device = problem.device

    # Small matrices: one intra-op thread (see _threads); the caller's count comes back on exit.
    with _thread_limit(threads, problem.n, device):
        t_start = time.perf_counter()
        runner = _METHOD_CLASSES[method](problem, lr, momentum, cayley, x0, rotation)
        f_star = problem.f_star
        records: dict[str, list[float]] = {"nit": [], "fun": [], "time": []}
        if f_star is not None:
            records["gap"] = []
        update_time = 0.0
        #: Rounding of f: negative gaps above -rounding are 0 (set from f(x0) at the first record).
        rounding = math.inf
        #: (iteration, runner state, f) of the last record with a finite value.
        good: tuple[int, Any, float] | None = None

        def value() -> float:
            """``f`` at the current iterate (NaN where the iterate is not finite)."""
            with torch.no_grad():
                S = runner.matrix()
                finite = bool(torch.isfinite(S).all())
                return float(problem.value(S, logdet=runner.logdet())) if finite else math.nan

        def record(k: int) -> str | None:
            """Append the current iterate's value; the reason to stop, if any."""
            nonlocal rounding, good
            fun = value()
            if math.isfinite(fun):
                good = (k, runner.snapshot(), fun)
            if k == 0 and f_star is not None:
                scale = max(abs(f_star), abs(fun) if math.isfinite(fun) else 0.0)
                rounding = math.sqrt(eps(problem.dtype)) * scale
            records["nit"].append(k)
            records["fun"].append(fun)
            records["time"].append(update_time)
            if f_star is not None:
                records["gap"].append(fun - f_star)
            # Non-finite first: a diverged dense baseline can reach f = -inf (log det of an
            # indefinite S), which is below any tolerance but is no convergence.
            if not math.isfinite(fun):
                return "non-finite"
            if tol is not None and f_star is not None:
                if fun - f_star < -rounding:
                    return "below-optimum"
                if fun - f_star < tol:
                    return "converged"
            if callback is not None and callback(k, fun) is True:
                return "callback"
            return None

        nit, failure = 0, None
        stop = record(0)
        while stop is None and nit < steps:
            batch = problem.sample(generator) if problem.stochastic else None
            _sync(device)
            t0 = time.perf_counter()
            try:
                with torch.no_grad():
                    runner.step(batch)
            except FloatingPointError as exc:  # NonFiniteError: a NaN/Inf gradient of the problem
                what = "the gradient is not finite: " if isinstance(exc, NonFiniteError) else ""
                failure = f"step {nit + 1} failed: {what}{exc}; returning the last good iterate"
                break
            _sync(device)
            update_time += time.perf_counter() - t0
            nit += 1
            if nit % record_every == 0 or nit == steps:
                stop = record(nit)
        if records["nit"][-1] != nit:
            stop = record(nit)
        fun = records["fun"][-1]
        restored = None
        if stop == "non-finite" and failure is None and good is not None:
            # f is NaN/Inf at the iterate: return the last recorded one with a finite value.
            restored, state, fun = good
            runner.restore(state)
        if runner.finish():  # the returned point was repaired: report its value
            fun = value()
            if restored is None:
                records["fun"][-1] = fun
                if f_star is not None:
                    records["gap"][-1] = fun - f_star

        if failure is not None:
            success, message = False, failure
        elif stop == "converged":
            success, message = True, f"converged: f - f* < tol = {tol:g}{tol_note}"
        elif stop == "below-optimum":
            gap = records["gap"][-1]
            success, message = (
                False,
                (
                    f"f - f* = {gap:.3g} is below -{rounding:.2g}, more than the rounding of f: "
                    "f_star is not the optimal value, or f is evaluated inaccurately"
                ),
            )
        elif stop == "non-finite":
            success, message = False, f"the objective became non-finite at iteration {nit}"
            if restored is not None:
                message += (
                    f"; returning iteration {restored}, the last recorded with a finite value"
                )
        elif stop == "callback":
            success, message = tol is None, "stopped by the callback"
        elif tol is not None:
            success, message = False, f"f - f* >= tol = {tol:g} after the maximum {steps} steps"
        else:
            success, message = True, f"completed the {steps} steps"

        S = runner.matrix()
        B, d = runner.factors()
        out = (lambda t: t.detach().cpu().numpy()) if problem.numpy else (lambda t: t.detach())
        return SPDResult(
            x=out(S),
            fun=fun,
            nit=nit,
            success=success,
            message=message,
            method=method,
            history={
                k: np.asarray(v, dtype=np.int64 if k == "nit" else np.float64)
                for k, v in records.items()
            },
            time=time.perf_counter() - t_start,
            B=out(B),
            d=out(d),
            f_star=f_star,
            gap=None if f_star is None else fun - f_star,
            point=runner.point(),
        )
