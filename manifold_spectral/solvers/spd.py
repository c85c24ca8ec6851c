"""Optimisation over SPD matrices: the front door and ``minimize`` (paper Sec. 4.2, Fig. 3 left).

``minimize(problem, method, lr, steps)`` runs one of three Riemannian gradient methods under
the same Fisher-Rao (affine-invariant) metric ``1/2 tr(S^-1 dS S^-1 dS)``, so with the same
``lr`` all three take the step ``S - 2 lr S E S + O(lr^2)`` (they follow the same Riemannian
gradient flow, and their curves coincide; paper Fig. 3). The pieces:

* ``spd_problems``: the problems ``LogDet``, ``MetricNearness`` and ``Objective`` (base class
  ``SPDProblem``), each with its value, Euclidean gradient and, where known, optimum;
* ``spd_methods``: the per-method steps, ``"spectral"`` (ours), ``"retraction"`` (geoopt) and
  ``"cholesky"``;
* this module: the ``minimize`` loop (validation, recording, stopping, the result), and the
  public names of all three (``from manifold_spectral.solvers.spd import LogDet`` etc.).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._threads import small_problem_threads, torch_threads
from ..baselines.cholesky_rgd import CholeskyPoint, CholeskyRGD
from ..linalg import check_cayley, eps
from ..manifolds import SpectralPoint, SpectralSPD
from ..validation import NonFiniteError, callback_stops, check_positive
from .check import GradientCheck, check_gradient
from .result import OptimizeResult
from .spd_inputs import _nonnegative_int, _positive_int, _spd_matrix
from .spd_methods import (
    METHOD_CLASSES,
    METHODS,
    GoodIterates,
    result_point,
    resume_applies,
    resume_of,
    start_matrix,
)
from .spd_problems import (
    LogDet,
    MetricNearness,
    Objective,
    SPDProblem,
    check_problem,
    make_problems,
)

__all__ = [
    "check_gradient",
    "GradientCheck",
    "SPDProblem",
    "LogDet",
    "MetricNearness",
    "Objective",
    "make_problems",
    "SPDResult",
    "CholeskyPoint",
    "METHODS",
    "minimize",
]


# minimize ------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False, repr=False)  # OptimizeResult's short repr, no tensor dumps
class SPDResult(OptimizeResult):
    """``OptimizeResult`` of ``spd.minimize``, plus:

    * ``B``, ``d``: spectral factors of ``x`` (``x = B Diag(d) B^T``); the spectral method's
      own iterate, one ``eigh`` of the final matrix for the baselines;
    * ``f_star``: the problem's optimal value (``None`` if unknown); ``gap = fun - f_star``;
    * ``point``: the method's native final state, as torch tensors: a ``SpectralPoint``
      (``"spectral"``), a ``CholeskyPoint`` holding the factor ``L`` of ``S = L L^T``
      (``"cholesky"``) or the dense ``S`` (``"retraction"``). ``x0=point`` warm-starts
      another run exactly at ``x`` (the same method without momentum, problem and ``seed``
      continues bit for bit: k + k steps are 2k steps, because the point carries the run's
      next mini-batches, re-orthogonalisation count and exact pre-repair iterate,
      ``spd_methods.Resume``; a copy of it, or the point of a failed run, starts afresh);
      any method accepts any method's point. A
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
            spectral step stays SPD for every ``lr`` (``d <- d exp(m)``) until ``exp``
            overflows (a step that does fails: ``success=False``, the last good iterate).
        steps: maximum number of iterations.
        x0: starting matrix (numpy or torch, SPD, (n, n)), a ``SpectralPoint`` or a
            ``CholeskyPoint`` (``result.point`` of an earlier run, any method; checked and,
            for another method, turned into its matrix); default the identity. The spectral
            chart's metric is singular at repeated eigenvalues, so from ``x0 = c I`` the
            first step only rescales (the rotation part of the step is zero there,
            Moore-Penrose rule); a cluster that this step would leave tied first gets the
            basis of the gradient's block (``SpectralSPD.split_ties``, first step of a run
            that does not resume ``result.point``).
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
            batches); with ``x0=result.point`` of a run with this ``seed``, the sequence
            continues where that run stopped.
        record_every: record ``history`` (and check ``tol``, call ``callback``) every k
            iterations; the first and last iterates are always recorded.
        callback: ``callback(nit, fun)`` at each record; a true scalar boolean or integer
            (``True``, ``np.True_``, ``torch.tensor(True)``, ``1``) stops the run, ``None``,
            ``False`` or ``0`` continues, any other return value is a ``TypeError`` naming
            ``callback`` (``validation.callback_stops``).
        threads: torch intra-op threads during the run, the caller's count restored on exit
            (also on an exception). ``"auto"`` (default): one thread for ``n <=
            _threads.SMALL_MATRIX`` (256) on the CPU, where more threads only add overhead and
            a loaded machine stalls them, else unchanged; an int: that many; ``None``: unchanged.

    Returns:
        ``SPDResult``: ``x`` as a matrix and as spectral factors ``B``, ``d``, in numpy if the
        problem was built from numpy, else torch on the problem's device; ``fun`` (``f`` at
        ``x`` as returned: the spectral method reads ``log det`` of its drifted ``B`` to
        first order, ``_Spectral.logdet``, and so does every ``tol`` test), ``gap``,
        ``nit``, ``success``, ``message``, ``history``, ``time``. A step that fails
        numerically (``FloatingPointError``) ends the run with ``success=False`` and the last
        good iterate, and so does a gradient with NaN or Inf (the gradient of the
        problem at the returned ``x``: ``NonFiniteError``, a ``FloatingPointError``). A
        non-finite value of ``f`` also ends it, returning the last recorded iterate whose
        value was finite (``nit`` still counts the steps taken; ``history`` keeps the
        non-finite record). The returned point is always a valid ``x0``: a retraction run
        that ends at an indefinite ``S`` (finite ``f`` after divergence) fails the same way
        and returns the newest recorded iterate that is positive definite
        (``spd_methods.GoodIterates``).
    """
    check_problem(problem)
    if not isinstance(method, str):  # scipy's minimize(fun, x0): here x0 is a keyword
        got = type(method).__name__
        raise TypeError(f"method: expected one of {METHODS}, got a {got} (the start: x0=...)")
    if method not in METHOD_CLASSES:
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
    resume = resume_of(x0)  # read before x0 is converted (which drops it)
    x0 = start_matrix(problem, x0)
    if isinstance(x0, SpectralPoint) and method != "spectral":
        M0 = SpectralSPD(problem.n, dtype=problem.dtype, device=problem.device)
        M0.validate_point(x0, "x0")  # as the spectral method does: B Diag(d) B^T must be x0
        x0 = M0.to_matrix(x0)
        _spd_matrix(x0, "x0")  # a valid point whose product rounds to an indefinite matrix
    if isinstance(x0, CholeskyPoint):
        chol = CholeskyRGD(problem.n, 1.0, dtype=problem.dtype, device=problem.device)
        L0 = chol.validate_point(x0, "x0")  # also for "cholesky", which then starts at L0
        if method != "cholesky":
            x0 = chol.to_matrix(L0)
            _spd_matrix(x0, "x0")  # as above: errors name the argument, not the method's S
    generator = torch.Generator().manual_seed(_nonnegative_int(seed, "seed"))
    if resume is not None and resume.generator is not None and resume.seed == seed:
        generator.set_state(resume.generator)  # the next batches of the run x0 came from
    device = problem.device

    # Small matrices: one intra-op thread (see _threads); the caller's count comes back on exit.
    with _thread_limit(threads, problem.n, device):
        t_start = time.perf_counter()
        runner = METHOD_CLASSES[method](problem, lr, momentum, cayley, x0, rotation)
        if resume_applies(resume, method, problem):
            runner.restore(resume.state)  # x0 validated above; continue from the exact state
            runner.count = resume.count
        f_star = problem.f_star
        records: dict[str, list[float]] = {"nit": [], "fun": [], "time": []}
        if f_star is not None:
            records["gap"] = []
        update_time = 0.0
        #: Rounding of f: negative gaps above -rounding are 0 (set from f(x0) at the first record).
        rounding = math.inf
        #: The records with a finite value that a run ending badly may return.
        good = GoodIterates(runner)

        def value() -> float:
            """``f`` at the current iterate (NaN where the iterate is not finite)."""
            with torch.no_grad():
                S = runner.matrix()
                finite = bool(torch.isfinite(S).all())
                return float(problem.value(S, logdet=runner.logdet())) if finite else math.nan

        def record(k: int) -> str | None:
            """Append the current iterate's value; the reason to stop, if any."""
            nonlocal rounding
            fun = value()
            if math.isfinite(fun):
                good.add(k, fun)
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
            if callback is not None and callback_stops(callback(k, fun)):
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
                failure = f"step {nit + 1} failed: {what}{exc}"
                break
            _sync(device)
            update_time += time.perf_counter() - t0
            nit += 1
            if nit % record_every == 0 or nit == steps:
                stop = record(nit)
        if records["nit"][-1] != nit:
            stop = record(nit)
        fun = records["fun"][-1]
        # Only a run that ends at its own last iterate can be continued as the same run.
        state = runner.snapshot() if failure is None and stop != "non-finite" else None
        restored, why = None, ""
        invalid = stop != "non-finite" and not runner.accepts(runner.snapshot())
        if invalid:  # a finite f at a point no next call accepts: a diverged retraction's S
            failure = failure or f"the iterate is not positive definite at iteration {nit}"
            state = None
        if stop == "non-finite" or invalid:
            # Return the last recorded iterate with a finite value that is a valid x0.
            last, skipped = good.last_valid()
            if last is not None:
                restored, last_state, fun = last
                runner.restore(last_state)
                why = "with a finite value" + (" that is positive definite" if skipped else "")
        if runner.finish():  # the returned point was repaired: report its value
            fun = value()
            if restored is None:
                records["fun"][-1] = fun
                if f_star is not None:
                    records["gap"][-1] = fun - f_star

        if failure is not None:
            back = "" if restored is None else f"iteration {restored}, the last recorded {why}"
            success, message = False, f"{failure}; returning {back or 'the last good iterate'}"
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
                message += f"; returning iteration {restored}, the last recorded {why}"
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
            point=result_point(runner, state, method, seed, generator, problem.stochastic),
        )
