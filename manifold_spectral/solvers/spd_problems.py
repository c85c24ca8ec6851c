"""Problems of ``spd.minimize``: smooth ``f(S)`` over SPD matrices (paper Sec. 4.2).

Each exposes ``value``, the Euclidean gradient ``egrad = df/dS`` and, where known, the optimal
value ``f_star`` and minimiser ``x_star``:

* ``MetricNearness(Q, X)``: ``f(S) = 1/(2N) sum_i ||S Q x_i - x_i||^2`` over samples ``x_i``
  (rows of ``X``), of which each iteration observes a random mini-batch of ``m``:
  ``egrad = Sym(R^T Y) / m`` with ``Y`` the batch rows of ``X Q`` and ``R = Y S - X_batch``
  (row form of ``(S Q x - x)(Q x)^T``). ``S* = Q^-1``, ``f* = 0``.
* ``LogDet(Q)``: ``f(S) = tr(S Q) - log det S``, ``egrad = Q - S^-1``; ``S* = Q^-1``,
  ``f* = n + log det Q``.
* ``Objective(fun, n, grad=None)``: any smooth ``f(S)``, with a callable gradient or
  autograd on a torch function of ``S``.

Fast path: ``LogDet`` and ``MetricNearness`` implement ``congruence_grad(A, w) = A^T E A``
at ``S = A Diag(w) A^T`` with matrix products only (``A^T S^-1 A = Diag(1/w)`` for any
invertible ``A``); ``spd_methods`` says which factors each method passes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..linalg import random_spd, sym
from ..validation import (
    check_real,
    check_size,
    check_tensor,
    real_tensor,
    resolve_device,
    resolve_dtype,
)
from .spd_inputs import _as_tensor, _logdet_dense, _nonnegative_int, _positive_int, _spd_matrix

__all__ = ["SPDProblem", "LogDet", "MetricNearness", "Objective", "check_problem", "make_problems"]


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

    def _check_matrix(self, S: Any, name: str = "S") -> Tensor:
        """``S`` as this problem's tensor (an array, e.g. a numpy problem's ``result.x``, is
        read as a tensor first), ``TypeError``/``ValueError`` naming ``name``."""
        if not isinstance(S, Tensor):
            S = _as_tensor(S, name)[0].to(device=self.device)
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
        S = self._check_matrix(S)
        return (S * self.Q).sum() - (_logdet_dense(S) if logdet is None else logdet)

    def egrad(self, S: Tensor, batch: Any = None) -> Tensor:
        """``Q - S^-1`` (dense path: one Cholesky inverse of ``S``)."""
        S = self._check_matrix(S)
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
        S = self._check_matrix(S)
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
        S = self._check_matrix(S)
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
        fun: ``f(S) -> scalar``, a real number (``TypeError`` naming ``fun`` for ``None``, a
            complex value, ...; a masked value, ``np.ma.masked``, is a missing value: NaN,
            which ends the run). Receives a torch tensor (a numpy array with ``numpy=True``),
            a copy of the iterate: ``fun`` and ``grad`` may write into it.
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
        """``fn`` at a copy of ``S`` (numpy with ``numpy=True``): a function that writes into
        its argument (``S *= 2``, ``S -= shift``) must not change the caller's iterate (the
        retraction method passes geoopt's own ``S``). The n x n copy is cheap next to any
        ``f`` or gradient; a read-only view would turn such a function into an error."""
        S = S.detach()
        return fn(S.cpu().numpy().copy()) if self.numpy else fn(S.clone())

    def value(self, S: Tensor, *, logdet: Tensor | None = None) -> Tensor:
        S = self._check_matrix(S)
        with torch.no_grad():
            f = real_tensor(self._call(S, self.fun), "fun", "the value f(S)")
        if f.numel() != 1:
            raise ValueError(f"fun: expected a scalar, got shape {tuple(f.shape)}")
        return f.reshape(()).to(dtype=self.dtype, device=self.device)

    def egrad(self, S: Tensor, batch: Any = None) -> Tensor:
        S = self._check_matrix(S)
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


def check_problem(problem: Any) -> SPDProblem:
    """``problem`` if it is an ``SPDProblem``, else a ``TypeError`` naming it: a bare function
    or matrix (what scipy's ``minimize`` takes) would fail later on a missing attribute."""
    if not isinstance(problem, SPDProblem):
        hint = " (spd.Objective(fun, n) wraps a function of S)" if callable(problem) else ""
        raise TypeError(f"problem: expected an SPDProblem, got {type(problem).__name__}{hint}")
    return problem


def make_problems(
    d: int,
    *,
    seed: int = 0,
    q_decades: float = 1.0,
    init_decades: float = 1.0,
    batch_size: int = 20,
    n_samples: int | None = None,
    device: Any = None,
) -> tuple[dict[str, SPDProblem], Tensor]:
    """The benchmark pair of paper Fig. 3 (left) on one ``Q`` (``"nearness"``, ``"logdet"``)
    and the shared start ``S0`` (``linalg.random_spd`` with condition numbers
    ``10^q_decades`` and ``10^init_decades``), drawn on the CPU (the same numbers on every
    device) and moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    Q = random_spd(d, q_decades, g).to(device)
    S0 = random_spd(d, init_decades, g).to(device)
    problems: dict[str, SPDProblem] = {
        "nearness": MetricNearness(
            Q,
            n_samples=10 * d if n_samples is None else n_samples,
            batch_size=min(batch_size, 10 * d if n_samples is None else n_samples),
            seed=seed + 1,
        ),
        "logdet": LogDet(Q),
    }
    return problems, S0
