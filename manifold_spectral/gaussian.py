"""The Gaussian family ``q = N(mu, S^-1)`` with precision ``S`` on a spectral manifold.

Curvature learning (paper Sec. 2-3, Fig. 1) is RGD on ``S`` for the variational objective
``L(mu, S) = E_q[l(w)] - gamma * Entropy(q)``:

    dL/dS^-1 = 1/2 (H - gamma S)            (H: a curvature estimate, e.g. the GOP g g^T)
    dL/dS    = -S^-1 (dL/dS^-1) S^-1

In the eigenbasis of ``S = B Diag(d) B^T`` this gradient is
``G = -1/2 (Ht - gamma Diag(d)) / (d_i d_j)`` with ``Ht = B^T H B``; it goes through the generic
RGD step (``manifold_spectral.RGD.step_eigenbasis``) with step size ``beta2``. For the GOP
this is exactly the top box of Fig. 1 (``d <- d exp(beta2/d (q*q - gamma d))``,
``B <- B Cayley(beta2/2 Skew(Tril U))``, ``U_ij = -q_i q_j / (d_i - d_j)``); with
``exponential="truncated"`` the eigenvalue map is ``d (1 + m)``, giving
``d <- (1 - gamma beta2) d + beta2 q*q`` (Fig. 5). The mean step is
``mu <- mu - beta1 S^(-1/p) g``, computed from ``(B, d)`` only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Union

import torch
from torch import Tensor

from .manifolds.base import SpectralManifold, check_positive, check_tensor
from .rgd import RGD, singular_step_error
from .validation import check_exponential, check_flag, check_symmetric

__all__ = [
    "Curvature",
    "GOP",
    "DenseCurvature",
    "CallableCurvature",
    "Rotated",
    "as_curvature",
    "Gaussian",
]


class Curvature:
    """A curvature estimate ``H`` that can express itself in the eigenbasis of a point."""

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        """``B^T H B`` in the manifold's representation (dense, or the diagonal)."""
        raise NotImplementedError(f"{type(self).__name__}.eigenbasis")


class GOP(Curvature):
    """Gradient outer product ``H = (1/m) sum_i g_i g_i^T`` of m stacked (m, n) gradients.

    A single gradient of shape (n,) is the case m = 1. ``damping`` adds ``lambda I`` to ``H``.
    On a manifold with ``batch=k`` the gradients of the ``k`` elements are stacked first:
    ``grads`` is (k, n) (one gradient per element) or (k, m, n) (``m`` per element), and each
    element gets the GOP of its own gradients.

    Never forms ``H``: ``B^T H B = Q Q^T / m`` with ``Q = B^T [g_1 ... g_m]`` (for a Kronecker
    manifold, ``Z_i = B_L^T Mat(g_i) B_R``).
    """

    def __init__(self, grads: Tensor, damping: float = 0.0) -> None:
        check_tensor(grads, "grads")
        self.damping = check_positive(damping, "damping", allow_zero=True)
        if grads.ndim not in (1, 2, 3):
            raise ValueError(
                "grads: expected shape (n,) or (m, n), or (k, n) or (k, m, n) for a batch of k, "
                f"got {tuple(grads.shape)}"
            )
        self.grads = grads if grads.ndim >= 2 else grads[None, :]

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        bs, n = manifold.batch_shape, manifold.egrad_shape[-1]
        grads = self.grads
        if bs and grads.ndim == 2:
            grads = grads[:, None, :]  # one gradient per element: (k, 1, n)
        m = grads.shape[-2]
        check_tensor(
            grads, "grads", shape=(*bs, m, n), dtype=manifold.dtype, device=manifold.device
        )
        return manifold.gop_eigenbasis(x, grads.mT, self.damping)


class DenseCurvature(Curvature):
    """A dense symmetric curvature estimate ``H`` (n, n): a Hessian, a Gauss-Newton or Fisher
    matrix, any symmetric estimate (the name ``Hessian`` of earlier versions still works, with
    a ``DeprecationWarning``).

    ``H`` need not be PSD (the exact exponential handles any symmetric ``H``). On a batched
    ``SpectralSPD`` it is (k, n, n), one per element. A non-symmetric ``H`` (relative
    asymmetry above ``sqrt(eps)``, the rule of ``SpectralSPD.from_matrix``) is a
    ``ValueError``: the step would only see ``Sym(H)``.
    """

    def __init__(self, H: Tensor) -> None:
        check_tensor(H, "H")
        if H.ndim not in (2, 3) or H.shape[-2] != H.shape[-1]:
            raise ValueError(f"H: expected a square matrix, got shape {tuple(H.shape)}")
        check_symmetric(H, "H")
        self.H = H

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        n = manifold.egrad_shape[-1]
        shape = (*manifold.batch_shape, n, n)
        check_tensor(self.H, "H", shape=shape, dtype=manifold.dtype, device=manifold.device)
        return manifold.rotate(x, self.H)


class CallableCurvature(Curvature):
    """User-supplied ``fn(S_point) -> H`` (a dense matrix or another ``Curvature``)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
        self.fn = fn

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Tensor:
        return as_curvature(self.fn(x)).eigenbasis(manifold, x)


class Rotated(Curvature):
    """A curvature already in the eigenbasis of the point it is used at: what
    ``Curvature.eigenbasis`` returns there (e.g. ``KroneckerGOP(Z)`` with
    ``Z_i = B_L^T Mat(g_i) B_R``), for a caller that computed it anyway. Valid only at that
    point: ``eigenbasis`` returns it whatever ``x`` it is asked at."""

    def __init__(self, Ht: Any) -> None:
        self.Ht = Ht

    def eigenbasis(self, manifold: SpectralManifold, x: Any) -> Any:
        return self.Ht


def __getattr__(name: str) -> Any:
    # The dense curvature was called ``Hessian``, though it takes any symmetric estimate.
    if name == "Hessian":
        warnings.warn(
            "manifold_spectral.Hessian is deprecated; use DenseCurvature (any dense symmetric "
            "curvature estimate)",
            DeprecationWarning,
            stacklevel=2,
        )
        return DenseCurvature
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CurvatureLike = Union[Curvature, Tensor, Callable[[Any], Any]]  # noqa: UP007 (py3.10 alias)


def as_curvature(curvature: CurvatureLike) -> Curvature:
    """A ``Curvature`` from a Curvature, a dense (n, n) matrix or a callable."""
    if isinstance(curvature, Curvature):
        return curvature
    if isinstance(curvature, Tensor):
        return DenseCurvature(curvature)
    if callable(curvature):
        return CallableCurvature(curvature)
    raise TypeError(
        "curvature: expected a Curvature, a (n, n) tensor or a callable, "
        f"got {type(curvature).__name__}"
    )


class Gaussian:
    """Natural-gradient updates of ``N(mu, S^-1)`` with ``S`` learned in spectral form.

    Args:
        manifold: the spectral manifold of the precision ``S`` (``SpectralSPD`` for a full
            matrix, ``DiagonalSPD`` for a diagonal one).
        beta1: mean step size (> 0).
        beta2: precision step size (> 0); the RGD step on ``S``.
        gamma: entropy weight; ``1`` gives an RMSprop-like moving average (fixed point
            ``S = E[H]``), ``0`` an AdaGrad-like sum.
        root: ``p`` in the mean step ``S^(-1/p) g`` (any ``p > 0``; 1 = Newton-like, 2 =
            Adam/Shampoo-like square root).
        exponential: ``"exact"`` (Fig. 1), ``"truncated"`` (Fig. 5; needs PSD curvature and
            steps that keep ``1 + m > 0``) or ``"continued"`` (the truncation, continued
            positively below ``m = -1/2``: ``blocks.eig_retract``).
        cayley: ``"exact"`` or ``"neumann"``; default: the manifold's own.
        jacobi: exact 2 x 2 Jacobi angles for the rotation step (``RGD(jacobi=True)``); the
            same first-order step, bounded where eigenvalues are close.
        second_order: the second-order rotation (``RGD(second_order=True)``; implies
            ``jacobi``).
        updated_gaps: the rotation's gaps taken after the eigenvalue step
            (``manifolds.kronecker_gop``; with ``jacobi``, each pair's exact 2 x 2 angle in the
            updated curvature): a variant of the closed-form step only, so a curvature
            without one (not a GOP) raises ``ValueError``, as does ``second_order``.
        basis_scale: ``c``: the rotation's step ``c beta2``, the eigenvalues' ``beta2``
            (``manifolds.kronecker_gop``): a variant of the closed-form step only, so ``c != 1``
            with a curvature without one, or with ``second_order``, raises ``ValueError``, as
            ``updated_gaps`` does.
        reorthogonalize_every: passed to the underlying ``RGD`` (default ``"auto"``: a
            Newton-Schulz step every 10 Neumann updates, every 100 exact updates below float64).
    """

    def __init__(
        self,
        manifold: SpectralManifold,
        *,
        beta1: float = 1.0,
        beta2: float = 0.01,
        gamma: float = 1.0,
        root: float = 2.0,
        exponential: str = "exact",
        cayley: str | None = None,
        jacobi: bool = False,
        second_order: bool = False,
        updated_gaps: bool = False,
        basis_scale: float = 1.0,
        reorthogonalize_every: int | None | str = "auto",
    ) -> None:
        self.manifold = manifold
        self.beta1 = check_positive(beta1, "beta1")
        self.beta2 = check_positive(beta2, "beta2")
        self.gamma = check_positive(gamma, "gamma", allow_zero=True)
        self.root = check_positive(root, "root")
        self.exponential = check_exponential(exponential)
        self.updated_gaps = check_flag(updated_gaps, "updated_gaps")
        self.basis_scale = check_positive(basis_scale, "basis_scale")
        for name, variant in (
            ("updated_gaps", self.updated_gaps),
            ("basis_scale", self.basis_scale != 1.0),
        ):
            if variant and second_order:  # the second-order step has no closed form to vary
                raise ValueError(f"{name}: a variant of the closed-form step, not of second_order")
        self._rgd = RGD(
            manifold,
            self.beta2,
            cayley=cayley,
            exponential=self.exponential,
            jacobi=jacobi,
            second_order=second_order,
            reorthogonalize_every=reorthogonalize_every,
            step_name="beta2",
        )

    def precision_step(
        self,
        x: Any,
        curvature: CurvatureLike,
        *,
        check_input: bool = True,
        count: int | None = None,
    ) -> Any:
        """One RGD step of the precision with step size ``beta2`` (Fig. 1 top box for the GOP).

        ``check_input=False`` skips validating ``x`` for callers whose ``x`` is the checked
        output of the previous step (the result is always checked: ``RGD`` rejects a step
        that leaves the manifold). ``count``: the caller's step number for the
        re-orthogonalisation schedule (``RGD.step_eigenbasis``)."""
        if check_input:
            self.manifold.validate_point(x, "precision", fast=True)
        Ht = as_curvature(curvature).eigenbasis(self.manifold, x)
        rgd = self._rgd
        if not rgd.second_order:
            # The same step in closed form where the manifold has one (the Kronecker GOP,
            # paper Fig. 6 right; the diagonal, App. A.1): half the tensor operations.
            try:
                x_new = self.manifold.closed_form_step(
                    x,
                    Ht,
                    self.beta2,
                    self.gamma,
                    exponential=self.exponential,
                    cayley=rgd.cayley,
                    jacobi=rgd.jacobi,
                    updated_gaps=self.updated_gaps,
                    basis_scale=self.basis_scale,
                )
            except torch.linalg.LinAlgError as exc:  # an overflowing step: as RGD reports it
                raise singular_step_error(exc, "beta2") from exc
            if x_new is not None:
                return rgd.finish_step(x_new, count=count)
            for name, variant in (
                ("updated_gaps", self.updated_gaps),
                ("basis_scale", self.basis_scale != 1.0),
            ):
                if variant:
                    raise ValueError(
                        f"{name}: {type(Ht).__name__} on {type(self.manifold).__name__} has no "
                        "closed-form step (only a GOP curvature does)"
                    )
        G = self.manifold.precision_egrad_eigenbasis(x, Ht, self.gamma)
        return rgd.step_eigenbasis(x, G, check_input=False, count=count)

    def finish_step(self, x_new: Any, *, count: int | None = None) -> Any:
        """The end of ``precision_step`` for a point ``x_new`` that the caller computed by the
        same closed form (``RGD.finish_step``: the re-orthogonalisation on the schedule of
        ``count``, the point check, ``FloatingPointError`` when ``x_new`` left the manifold)."""
        return self._rgd.finish_step(x_new, count=count)

    def precondition(self, x: Any, grad: Tensor) -> Tensor:
        """``S^(-1/p) g`` from ``(B, d)`` only."""
        return self.manifold.apply_power(x, grad, -1.0 / self.root)

    def _vector_shape(self) -> tuple[int, ...]:
        """Shape of ``mu`` and of one gradient: (n,), or (k, n) on a manifold with batch=k."""
        return (*self.manifold.batch_shape, self.manifold.egrad_shape[-1])

    def mean_step(self, mu: Tensor, x: Any, grad: Tensor) -> Tensor:
        """``mu - beta1 S^(-1/p) g``."""
        shape, dt, dev = self._vector_shape(), self.manifold.dtype, self.manifold.device
        check_tensor(mu, "mu", shape=shape, dtype=dt, device=dev)
        check_tensor(grad, "grad", shape=shape, dtype=dt, device=dev)
        return mu - self.beta1 * self.precondition(x, grad)

    def step(
        self, mu: Tensor, x: Any, grad: Tensor, curvature: CurvatureLike | None = None
    ) -> tuple[Tensor, Any]:
        """Precision step (default curvature: the GOP of ``grad``), then the mean step with the
        new precision, as in Fig. 1. Returns ``(mu_new, x_new)``; inputs are not modified."""
        shape, dt, dev = self._vector_shape(), self.manifold.dtype, self.manifold.device
        check_tensor(mu, "mu", shape=shape, dtype=dt, device=dev)
        check_tensor(grad, "grad", shape=shape, dtype=dt, device=dev)
        x_new = self.precision_step(x, GOP(grad) if curvature is None else curvature)
        return self.mean_step(mu, x_new, grad), x_new
