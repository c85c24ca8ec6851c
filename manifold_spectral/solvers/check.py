"""``check_gradient``: is the gradient of an SPD objective right? (pymanopt's check, in our chart)

For a problem ``f(S)`` of ``spd.minimize``, at a point ``x = (B, d)`` and a random direction
``eta = (m, M)`` of the spectral chart (DESIGN.md section 2), the Taylor error

    err(t) = | f(S(t eta)) - f(S(0)) - t <grad_eta f, eta> |,   S(eta) = chart of x at eta

is ``O(t^2)`` when the gradient is right and ``O(t)`` when it is wrong (a wrong factor, sign
or transpose): on a log-log plot of ``err`` against ``t`` the slope is 2, resp. 1. The chart
gradient ``grad_eta f`` is built from the gradient that ``spd.minimize`` itself uses:
``problem.congruence_grad(B, d, orthogonal=True)`` (``G = B^T E B``) for a ``factored``
problem, else ``problem.egrad(S)`` (``E = df/dS``), through
``SpectralSPD.local_gradient`` (``df/dm_i = d_i G_ii``, ``df/dM_ij = 4 (d_j - d_i) G_ij``).

The slope is fitted, per direction, on the window of consecutive step sizes where the
log-log error curve is straightest (above the rounding floor ``err > 100 eps max |f|`` of
the values compared), as pymanopt's ``check_directional_derivative`` does; a direction with
no error above that floor (``f`` linear along it to rounding) passes. Evaluates ``f`` once
at the point and ``len(t) + 2`` times per direction (the steps and a central difference),
the gradient once; for research-size problems.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..manifolds import SpectralPoint, SpectralSPD
from ..manifolds.base import check_positive
from .spd_problems import check_problem

__all__ = ["GradientCheck", "check_gradient"]

#: Step sizes ``t`` of the Taylor check (log-spaced, as in pymanopt).
DEFAULT_STEPS = np.logspace(-8, 0, 33)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class GradientCheck:
    """Result of ``check_gradient``.

    * ``ok``: every direction's fitted slope is at least ``min_slope``;
    * ``slopes``: fitted log-log slope of ``err(t)`` per direction (2 when right, 1 when wrong);
    * ``rel_error``: per direction, ``|<grad_eta f, eta> - D| / |D|`` with ``D`` the central
      difference ``(f(t eta) - f(-t eta)) / 2t`` at ``t = 1e-5``;
    * ``t``, ``errors``: the step sizes and ``err(t)`` (directions x steps), to plot;
    * ``gradient``: which gradient was checked (``"congruence_grad"`` or ``"egrad"``).
    """

    ok: bool
    slopes: np.ndarray
    rel_error: np.ndarray
    t: np.ndarray
    errors: np.ndarray
    gradient: str
    min_slope: float

    def __repr__(self) -> str:
        slopes = ", ".join(f"{s:.2f}" for s in self.slopes)
        verdict = "gradient looks right" if self.ok else "gradient looks WRONG"
        return (
            f"GradientCheck({verdict}: {self.gradient}; log-log slopes [{slopes}] "
            f"(slope 2 if right, 1 if wrong; pass >= {self.min_slope}); directional-derivative "
            f"relative error max {float(np.max(self.rel_error)):.1e})"
        )

    __str__ = __repr__


def _fit_slope(t: np.ndarray, err: np.ndarray, floor: float, window: int) -> float:
    """Slope of ``log10 err`` against ``log10 t`` on ``window`` consecutive points above
    ``floor``: the smallest-``t`` window whose fit is straight (mean squared residual below
    ``1e-3``), else the straightest one; NaN if no window is above the floor.

    The smallest straight window, because the asymptotic slope is what tells a right gradient
    (2) from a wrong one (1): a wrong gradient whose error is small next to the curvature
    shows slope 1 only at small ``t`` and slope 2 beyond."""
    order = np.argsort(t)
    t, err = t[order], err[order]
    good = np.isfinite(err) & (err > floor)
    lt, le = np.log10(t), np.log10(np.where(good, err, 1.0))
    best, slope = np.inf, np.nan
    for i in range(len(t) - window + 1):
        if not good[i : i + window].all():
            continue
        coef, res, *_ = np.polyfit(lt[i : i + window], le[i : i + window], 1, full=True)
        r = (float(res[0]) if len(res) else 0.0) / window
        if r < 1e-3:
            return float(coef[0])
        if r < best:
            best, slope = r, float(coef[0])
    return slope


def check_gradient(
    problem: Any,
    point: Any = None,
    *,
    directions: int = 3,
    seed: int = 0,
    t: Any = None,
    min_slope: float = 1.8,
    window: int = 7,
) -> GradientCheck:
    """Taylor-slope check of a problem's gradient along random chart directions.

    ``err(t) = |f(S(t eta)) - f(S) - t <grad_eta f, eta>|`` must fall as ``t^2``; see the
    module docstring for the chart and which gradient is checked.

    Args:
        problem: an ``spd.SPDProblem`` (``LogDet``, ``MetricNearness``, ``Objective``, ...).
        point: where to check: a ``SpectralPoint``, an SPD matrix (one ``eigh``) or ``None``
            for a random point (``SpectralSPD.random`` with ``log_scale=0.5``, seeded by
            ``seed``; a random ``B`` and distinct eigenvalues, so every rotation coordinate
            is exercised).
        directions: number of random unit directions ``eta``.
        seed: of the point (when ``None``) and of the directions.
        t: step sizes (default ``DEFAULT_STEPS``, ``1e-8 .. 1``).
        min_slope: the pass threshold on every fitted slope.
        window: consecutive step sizes in the slope fit.

    Returns:
        ``GradientCheck`` (prints as a one-line verdict).
    """
    check_problem(problem)
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions: expected a positive int, got {directions!r}")
    min_slope = check_positive(min_slope, "min_slope")
    if isinstance(window, bool) or not isinstance(window, int) or window < 3:
        raise ValueError(
            f"window: expected an int >= 3 (a line fit needs 3 points), got {window!r}"
        )
    steps = DEFAULT_STEPS if t is None else np.asarray(t, dtype=float)
    if steps.ndim != 1 or len(steps) < window or not (steps > 0).all():
        raise ValueError(f"t: expected at least {window} positive step sizes")
    M = SpectralSPD(problem.n, dtype=problem.dtype, device=problem.device)
    g = torch.Generator().manual_seed(seed)
    if point is None:
        x = M.random(generator=g, log_scale=0.5)
    elif isinstance(point, SpectralPoint):
        M.validate_point(point, "point")
        x = point
    else:
        x = M.from_matrix(point)  # one eigendecomposition, to start the check

    S0 = M.to_matrix(x)
    if getattr(problem, "factored", False):
        name = "congruence_grad"
        G = problem.congruence_grad(x.B, x.d, orthogonal=True)
        E = x.B @ G @ x.B.mT  # so that local_gradient's B^T E B is G again
    else:
        name = "egrad"
        E = problem.egrad(S0)
    grad = M.to_vector(M.local_gradient(x, E))
    phi = M.chart(x)

    def f(eta: Tensor) -> float:
        return float(problem.value(M.to_matrix(phi(M.from_vector(eta)))))

    f0 = f(torch.zeros(M.dim, dtype=M.dtype, device=M.device))
    eps = float(torch.finfo(M.dtype).eps)
    slopes, rel, errors, flat = [], [], [], []
    for _ in range(directions):
        eta = torch.randn(M.dim, generator=g, dtype=torch.float64).to(M.dtype).to(M.device)
        eta = eta / torch.linalg.vector_norm(eta)
        slope0 = float(grad @ eta)
        values = np.array([f(s * eta) for s in steps])
        err = np.abs(values - f0 - steps * slope0)
        # Rounding of the values compared, relative to their own size: an absolute floor
        # (max(|f|, 1)) hid every point of an objective much smaller than 1.
        floor = 100.0 * eps * float(np.max(np.abs(np.append(values, f0))))
        h = 1e-5
        fd = (f(h * eta) - f(-h * eta)) / (2 * h)
        rel.append(abs(slope0 - fd) / max(abs(fd), 1e-300))
        slopes.append(_fit_slope(steps, err, floor, window))
        errors.append(err)
        flat.append(bool((err <= floor).all()))  # no error above rounding at any step
    slopes_a = np.array(slopes)
    # a direction without any error above rounding (f linear along it to rounding: a constant
    # objective with its zero gradient) agrees with the gradient: it has no slope to fit
    ok = bool(all(sl >= min_slope or fl for sl, fl in zip(slopes, flat, strict=True)))
    return GradientCheck(ok, slopes_a, np.array(rel), steps, np.array(errors), name, min_slope)
