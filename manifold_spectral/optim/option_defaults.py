"""``SpectralKron``'s defaults that are resolved from other options or carry a reason, and
the reading of the ``truncated`` bool of earlier versions.

Each is one place: the constructor's signature, the preconditioners, the step and the
state-dict loader read them from here.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..validation import check_flag

__all__ = [
    "BASIS_SCALE",
    "BETA2",
    "DEFAULT_EXPONENTIAL",
    "GAP_DAMPING",
    "NEUMANN_SQUARINGS",
    "beta2",
    "corrected",
    "curvature_period",
    "squarings",
    "exponential_of_truncated",
    "legacy_truncated",
]


def exponential_of_truncated(truncated: Any) -> str:
    """``exponential`` for the ``truncated`` bool of earlier versions: ``True`` is
    ``"truncated"``, ``False`` ``"exact"`` (also for saved parameter groups)."""
    return "truncated" if check_flag(truncated, "truncated") else "exact"


#: ``SpectralKron``'s default ``exponential``.
DEFAULT_EXPONENTIAL = "truncated"

#: Default ``gap_damping``: the perturbation of a rotation angle by a rounding-level change of
#: the input grows like ``1 / rho^2`` (tests/test_optim_continuity.py), and a rotation inside
#: a pair closer than ``rho`` changes ``S^(-1/2)`` by at most about ``rho / 2`` relative. The
#: angles of such pairs are mostly gradient noise (a one-sample GOP's off-diagonal entries
#: are as large as the gaps), and with the Neumann Cayley map they would also use up the
#: norm budget of the whole rotation step, slowing the pairs whose rotation matters:
#: benchmarks/bench_basis_tracking.py measures how well the basis tracks its target.
GAP_DAMPING = 0.3

#: Default ``neumann_squarings`` of the Neumann map: its bound ``||N^4||_F^(1/4) <= 1/4``
#: shrinks a large rotation step whole, so the learned basis lags the target that SOAP's
#: ``eigh`` reaches in one step; one squaring halves ``N`` before the bound for one more
#: product per factor and curvature step (benchmarks/bench_basis_oracle.py).
NEUMANN_SQUARINGS = 1

#: Default ``basis_scale``: the learned basis lags the eigenbasis of its target (the squaring
#: lifts only the bound on a turn, not the turn's size ``beta2``); a rotation step twice the
#: eigenvalues' over-relaxes every turn towards it while the eigenvalues keep ``beta2``'s
#: memory. Measured against ``1`` (the paper's single step size) on the full-size GPT, the
#: small tasks and the held-out tasks: benchmarks/HISTORY.md.
BASIS_SCALE = 2.0


def curvature_period(group: dict[str, Any], kind: str) -> int:
    """The curvature period of a parameter of ``group`` whose preconditioner is ``kind``
    (``"kronecker"`` or ``"diagonal"``): ``update_every``, or ``diagonal_every`` for the
    diagonal scheme when set (``None``: ``update_every``, the paper's one period).

    The period amortises the Kronecker factors' matrix products; the diagonal curvature
    update is elementwise, as cheap as the step. A diagonal step ``D / d^(1/p)`` taken with a
    ``d`` that has not taken in this gradient grows with the gradient where an entry's
    gradient grows between updates (an entry whose first gradient, squared by the warm start,
    was near zero) up to the floor by the direction's GOP (``DiagonalSPD.eigen_floor``:
    ``1 / ((1 - momentum) beta2^(1/2))``), whereas the updated ``d >= beta2 g^2`` (truncated
    map) bounds ``|g| / d^(1/2)`` by ``beta2^(-1/2)``."""
    if kind == "diagonal" and group["diagonal_every"] is not None:
        return group["diagonal_every"]
    return group["update_every"]


#: The curvature's rate per optimizer step behind ``beta2=None`` (``beta2`` below).
BETA2 = 0.1


def beta2(group: dict[str, Any], kind: str) -> float:
    """The rate of a curvature step of a ``kind`` preconditioner of ``group``: its ``beta2``,
    or (``None``) ``1 - (1 - BETA2)^k`` at its period ``k`` (``curvature_period``); the
    period is read only then (a group of explicit options may lack it).

    Why per period: a curvature step at rate ``beta2`` every ``k`` steps forgets at ``1 -
    (1 - beta2)^(1/k)`` per optimizer step, so at a fixed rate a longer period makes a slower
    curvature, in steps, not only a cheaper one; its basis then lags the gradients' eigenbasis
    more, which is what the defaults pay against SOAP, whose gradient statistics are an
    average over every step whatever its refresh period (``benchmarks/HISTORY.md``). ``1 -
    (1 - BETA2)^k`` takes ``k`` steps' worth of forgetting at once, the memory of about
    ``1 / BETA2`` optimizer steps at every period (with ``accumulate_gop``, the step reads the
    ``k`` gradients' mean GOP). ``period = 1`` gives ``BETA2`` itself (not ``1 - (1 -
    BETA2)``, which rounds differently)."""
    value = group.get("beta2")
    if value is not None:
        return value
    period = curvature_period(group, kind)
    return BETA2 if period == 1 else 1.0 - (1.0 - BETA2) ** period


def squarings(group: dict[str, Any]) -> int:
    """A group's squarings ``k``: its ``neumann_squarings``, or (``None``)
    ``NEUMANN_SQUARINGS`` with ``cayley="neumann"`` and ``0`` with the exact map."""
    k = group.get("neumann_squarings")
    if k is not None:
        return int(k)
    return NEUMANN_SQUARINGS if group["cayley"] == "neumann" else 0


def corrected(group: dict[str, Any]) -> bool:
    """Whether a group runs the eigenvalue correction: its flag, or (``None``) ``root >= 2``.

    Why not below 2: the elementwise scale ``(v + lambda)^(-1/p)`` amplifies by up to
    ``lambda^(-1/p)`` where a direction of a rank-deficient layer has ``v ~ 0``; at ``p = 1``
    that is ``1 / lambda``, and rounding-level differences of the gradient then move the
    parameters far more than by rounding (tests/test_optim_continuity.py)."""
    flag = group["eigenvalue_correction"]
    return float(group["root"]) >= 2.0 if flag is None else bool(flag)


def legacy_truncated(truncated: Any, exponential: Any = DEFAULT_EXPONENTIAL) -> str:
    """``exponential_of_truncated`` for a caller's argument, with a ``DeprecationWarning``;
    ``ValueError`` naming both when ``exponential`` was set to the other map (a default
    ``exponential`` cannot be told from an explicit one: ``truncated`` then decides)."""
    new = exponential_of_truncated(truncated)
    if exponential != DEFAULT_EXPONENTIAL and exponential != new:
        raise ValueError(
            f"truncated={truncated!r} and exponential={exponential!r} disagree; pass "
            "exponential only (truncated is deprecated)"
        )
    warnings.warn(
        f"SpectralKron(truncated={truncated}) is deprecated; pass exponential={new!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return new
