"""Generic Riemannian gradient descent in local charts (paper Sec. 3, DESIGN.md section 2).

One step at ``x`` for a smooth ``f(S)`` with Euclidean gradient ``egrad = df/dS``:

    eta  = -lr * F^+ grad_eta f        (natural gradient at the chart origin)
    x   <- chart_x(eta)                (the chart map is the retraction)

With momentum the natural gradients are accumulated in chart coordinates,
``v <- momentum * v + F^+ grad`` and ``eta = -lr * v`` (the local-coordinate momentum of
Lin et al., 2023: coordinates of successive charts agree to first order at their origins).
The driver only uses the ``manifold_spectral.manifolds.SpectralManifold`` protocol, so
it runs unchanged on every spectral manifold.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from .linalg import check_cayley
from .manifolds.base import SpectralManifold
from .manifolds.blocks import default_jacobi
from .validation import (
    NonFiniteError,
    check_exponential,
    check_flag,
    check_momentum,
    check_positive,
)

__all__ = ["RGD", "AUTO_REORTHOGONALIZE_EVERY", "singular_step_error"]

#: Newton-Schulz periods of ``reorthogonalize_every="auto"``: one polar step (two products)
#: every 10 Neumann updates keeps ``||B^T B - I||`` at the level of one step's defect; exact
#: steps in low precision drift only by rounding.
AUTO_REORTHOGONALIZE_EVERY = {"neumann": 10, "exact-low-precision": 100}


def singular_step_error(exc: Exception, step_name: str = "lr") -> FloatingPointError:
    """The error of a step whose exact Cayley solve failed (``exc``, torch's ``LinAlgError``).

    ``I - N`` is invertible for every finite skew ``N``; a singular one means the step ``N``
    overflowed (entries of ~1e300 and beyond round ``I - N`` to a singular matrix, or are
    Inf/NaN). That is the same numerical failure that ``RGD`` reports when a step leaves the
    manifold, and it gets the same ``FloatingPointError``; nothing was committed yet.
    ``step_name``: the caller's name of the step size, which the message suspects.
    """
    return FloatingPointError(
        "RGD.step: the step left the manifold (the rotation's Cayley solve failed: "
        f"{str(exc).rstrip('.')}; "
        f"{step_name} too large?); state left unchanged"
    )


class RGD:
    """Chart-based RGD on a spectral manifold, ``RGD(manifold, lr).step(x, egrad) -> x_new``.

    Args:
        manifold: a ``manifold_spectral.manifolds.SpectralManifold``.
        lr: step size (> 0).
        momentum: heavy-ball coefficient in ``[0, 1)`` on the chart coordinates.
        cayley: ``"exact"`` or ``"neumann"``; default: the manifold's own.
        exponential: the eigenvalue map, ``"exact"`` (``d exp(m)``, default), ``"truncated"``
            (the first-order map ``d (1 + m)``) or ``"continued"`` (that map continued
            positively below ``m = -1/2``; ``blocks.eig_retract``).
        jacobi: turn each eigenvector pair by its exact 2 x 2 Jacobi angle
            (``blocks.jacobi_angles``): the same RGD direction (a retraction that agrees with
            the chart to first order) whose rotation stays bounded where eigenvalues are close
            and the linearised angle ``~ 1 / gap`` overshoots. Default (``None``): on with the
            Neumann map, whose rescaling of an overshooting rotation to its trust radius
            can cycle, off with the exact map (the exact chart step of the paper).
        second_order: turn the eigenvectors to those of the first-order step up to
            third-order terms (``blocks.second_order_angles``; implies ``jacobi``): one more
            n x n product per rotation, and the step tracks the affine-invariant exponential
            map where eigenvalues are close.
        reorthogonalize_every: apply ``manifold.reorthogonalize`` (a Newton-Schulz polar
            step, no decomposition) every k steps; ``None`` never; ``"auto"`` (default):
            every ``AUTO_REORTHOGONALIZE_EVERY["neumann"]`` (10) steps with the Neumann map
            (whose defect is up to ``2 rho^6`` a step), every 100 steps with the exact map in
            float32 and 16-bit types (rounding drift ~1e-7 a step in float32), never with the
            exact map in float64.
        step_name: what the caller's users call ``lr`` (``Gaussian``: ``beta2``), named in
            the error of a step that left the manifold.

    A rejected call (bad point, gradient with wrong shape/dtype/device, NaN/Inf, or a step
    whose result is not finite) raises and leaves the momentum state unchanged.
    """

    def __init__(
        self,
        manifold: SpectralManifold,
        lr: float,
        momentum: float = 0.0,
        *,
        cayley: str | None = None,
        exponential: str = "exact",
        jacobi: bool | None = None,
        second_order: bool = False,
        reorthogonalize_every: int | None | str = "auto",
        step_name: str = "lr",
    ) -> None:
        if not isinstance(manifold, SpectralManifold):
            raise TypeError(f"manifold: expected a SpectralManifold, got {type(manifold).__name__}")
        self.manifold = manifold
        self.lr = check_positive(lr, "lr")
        self.momentum = check_momentum(momentum)
        self.cayley = None if cayley is None else check_cayley(cayley)
        self.exponential = check_exponential(exponential)
        method = self.cayley or getattr(manifold, "cayley", "exact")
        # None: Jacobi angles with the Neumann map only (blocks.default_jacobi says why)
        self.jacobi = default_jacobi(method) if jacobi is None else check_flag(jacobi, "jacobi")
        self.second_order = check_flag(second_order, "second_order")
        if reorthogonalize_every == "auto":
            if method == "neumann":
                reorthogonalize_every = AUTO_REORTHOGONALIZE_EVERY["neumann"]
            elif manifold.dtype != torch.float64:
                reorthogonalize_every = AUTO_REORTHOGONALIZE_EVERY["exact-low-precision"]
            else:
                reorthogonalize_every = None
        if reorthogonalize_every is not None and (
            isinstance(reorthogonalize_every, bool)
            or not isinstance(reorthogonalize_every, int)
            or reorthogonalize_every < 1
        ):
            raise ValueError(
                "reorthogonalize_every: expected a positive int or None, "
                f"got {reorthogonalize_every!r}"
            )
        self.reorthogonalize_every = reorthogonalize_every
        self.step_name = step_name
        self.buffer: Any = None
        self.steps = 0

    def direction(self, x: Any, egrad: Tensor) -> Any:
        """The chart direction ``v`` (natural gradient, with momentum) without committing it."""
        return self._with_momentum(self.manifold.natural_gradient(x, egrad))

    def _with_momentum(self, nat: Any) -> Any:
        if self.momentum and self.buffer is not None:
            return self.buffer * self.momentum + nat
        return nat

    def step(self, x: Any, egrad: Tensor) -> Any:
        """One RGD step ``x <- chart_x(-lr * v)`` for ``egrad = df/dS``; returns the new point."""
        self.manifold.validate_point(x, fast=True)
        return self._apply(x, self.direction(x, egrad))

    def step_eigenbasis(
        self, x: Any, G: Any, *, check_input: bool = True, count: int | None = None
    ) -> Any:
        """``step`` from the gradient already rotated into the eigenbasis, ``G = B^T E B``.

        The Gaussian layer uses this to skip forming ``df/dS`` (for the GOP, ``G`` needs only
        ``q = B^T g``). ``G`` must be finite. ``check_input=False`` skips the point check for
        callers that have just made it (the result is always checked). ``G`` is checked by
        ``manifold.validate_eigen_gradient`` (type, shape, dtype, device; one reduction for
        finiteness): ``TypeError``/``ValueError`` naming ``G``, the state unchanged.

        ``count``: the number (1, 2, ...) of this step in a schedule the caller owns and
        saves, e.g. an optimizer's step count (default: this driver's own ``steps + 1``);
        the re-orthogonalisation runs when it is a multiple of ``reorthogonalize_every``, so
        a resumed run or a rejected step does not shift the schedule.
        """
        if check_input:
            self.manifold.validate_point(x, fast=True)
        G = self.manifold.validate_eigen_gradient(G)
        nat = self.manifold.natural_gradient_eigenbasis(x, G)
        return self._apply(x, self._with_momentum(nat), count)

    def _apply(self, x: Any, v: Any, count: int | None = None) -> Any:
        try:
            x_new = self.manifold.retr(
                x,
                -v,
                self.lr,
                cayley=self.cayley,
                exponential=self.exponential,
                jacobi=self.jacobi,
                second_order=self.second_order,
            )
        except NonFiniteError as exc:
            # A finite gradient at a valid point whose natural gradient overflowed: a
            # numerical failure of this step, not a bad "tangent" argument of the caller.
            raise FloatingPointError(
                f"RGD.step: the natural gradient is not finite ({exc}; {self.step_name} too "
                "large or the point too extreme?); state left unchanged"
            ) from exc
        except torch.linalg.LinAlgError as exc:
            raise singular_step_error(exc, self.step_name) from exc
        return self._commit(x_new, v, count)

    def finish_step(self, x_new: Any, *, count: int | None = None) -> Any:
        """The end of a step whose point ``x_new`` the caller computed in closed form (e.g.
        ``KroneckerSpectralSPD.closed_form_step``): the re-orthogonalisation on the schedule of
        ``count`` (as ``step_eigenbasis``), the point check (``FloatingPointError`` when
        ``x_new`` left the manifold) and the step count. Only for a driver without momentum,
        whose buffer such a step cannot update."""
        if self.momentum:
            raise ValueError("finish_step: the driver has momentum; use step_eigenbasis")
        return self._commit(x_new, None, count)

    def _commit(self, x_new: Any, v: Any, count: int | None) -> Any:
        count = self.steps + 1 if count is None else count
        if self.reorthogonalize_every and count % self.reorthogonalize_every == 0:
            x_new = self.manifold.reorthogonalize(x_new)
        ok, reason = self.manifold.check_point(x_new, fast=True)
        if not ok:
            raise FloatingPointError(
                f"RGD.step: the step left the manifold ({reason}; {self.step_name} too large?); "
                "state left unchanged"
            )
        # Commit only after everything succeeded.
        if self.momentum:
            self.buffer = v
        self.steps += 1
        return x_new

    def reset(self) -> None:
        """Forget the momentum buffer and the step count."""
        self.buffer = None
        self.steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "buffer": None if self.buffer is None else self.buffer.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``: ``steps`` an int >= 0, ``buffer`` ``None`` or a finite
        tangent of this manifold (type, shapes, dtype, device); ``TypeError``/``ValueError``
        naming the entry, the current state unchanged."""
        if not isinstance(state, dict) or not {"steps", "buffer"} <= state.keys():
            raise ValueError("state: expected a dict with the keys 'steps' and 'buffer'")
        steps, buf = state["steps"], state["buffer"]
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"state['steps']: expected an int >= 0, got {steps!r}")
        if buf is not None:
            ref = self.manifold.zero_tangent(self.manifold.origin())
            layout = [(t.shape, t.dtype, t.device) for t in ref.leaves()]
            if (
                type(buf) is not type(ref)
                or [(t.shape, t.dtype, t.device) for t in buf.leaves()] != layout
            ):
                raise ValueError(
                    f"state['buffer']: not a tangent of {self.manifold!r} "
                    f"(expected a {type(ref).__name__} shaped like its zero_tangent)"
                )
            if not buf.is_finite():
                raise ValueError("state['buffer']: contains NaN or Inf")
        self.steps = int(steps)
        self.buffer = None if buf is None else buf.clone()
