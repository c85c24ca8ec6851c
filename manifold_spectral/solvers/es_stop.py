"""Termination tests of the evolution-strategy driver (``es.NESBase.stop``) beyond the budget
and the target, and ``record_generation``, the per-generation statistics they read.

Convergence tests, each off when its tolerance is 0:

* ``tolx``: every standard deviation ``sqrt(Sigma_ii) < tolx``;
* ``tolfun``: the best values of the last ``w = 10 + ceil(30 n / lam)`` generations and the
  values of the last generation span less than ``tolfun``;
* ``tolflatfitness``: in ``tolflatfitness`` consecutive generations (default 2) the best value
  equals the 75th-percentile value of the generation (pycma's test of the same name, which
  fires after ``tolflatfitness + 1`` such generations with its default 1): most samples lie on
  one plateau of a step-like function (BBOB f7), their tied utilities carry no direction and
  the scale gradient of the few others shrinks the distribution onto that plateau, so the run
  has converged and a restart (``restarts``) pays more than waiting for ``flatfitness``;
* ``tolstagnation`` (pycma's test of the same name and default,
  ``T = int(100 + 100 n^1.5 / lam)`` generations, ``es_defaults.default_tolstagnation``):
  every 5th generation's best and median value are kept (oldest first); with blocks of
  ``l = int(max(T/10, m/10))`` such entries (``m`` kept so far), the run has stagnated when
  it has run more than ``n (5 + 100/lam)`` and 500 generations, ``2 l < m``, its best value is
  more than ``T/2`` generations old, and the median over the last block of both the kept
  medians and the kept bests is no better than over the block before. On a rugged function
  (BBOB f23, Katsuura) a run at a small step size keeps finding slightly better points
  without converging, so ``tolx``/``tolfun`` never fire and one run spends the whole budget
  (IPOP never restarts); pycma's IPOP ends such runs here. A run that still improves its
  best or median values block over block is left alone;
* ``condition``: ``cond(Sigma) > max_condition cond(Sigma_0)`` (where the distribution reads it
  for free; ``Sigma_0 = Diag(sigma0^2)``: a per-coordinate ``sigma0`` starts conditioned).

Numerical tests, always on. They end a run that is continued past convergence (large budget,
``tolx = tolfun = 0``) with a clean result instead of letting the state overflow (the
precision ``d ~ sigma^-2`` of a spectral search enters the natural gradient as ``d_i d_j``,
which overflows once ``sigma`` is near ``max_float^(-1/4)``, ``~1e-77`` in float64):

* ``noeffectcoord``: ``mu_i + 0.2 sqrt(Sigma_ii) == mu_i`` for every coordinate ``i`` (in the
  state's dtype): no sample can move the mean any more (pycma's test of the same name fires
  on *any* coordinate; here all must be frozen, so it never preempts ``tolx``);
* ``flatfitness``: the ``tolfun`` window (above) with a zero span: ``w`` generations of
  equal values (rank utilities are then zero and the distribution does not move);
* ``scalerange``: the eigenvalues of the precision ``S = Sigma^-1`` leave
  ``[tiny^0.4, max^0.4]`` of the dtype (``[8.7e-124, 2.0e123]`` in float64; a standard deviation
  outside ``[2.2e-62, 3.4e61]``): the search distribution is about to under- or overflow (where
  the distribution does not read its eigenvalues for free, ``precision_range() is None``, only
  the upper end is tested, through ``max_i Sigma_ii > 1 / tiny^0.4``). This
  is what stops a run whose mean converges to an optimum at ``0``, where ``noeffectcoord``
  cannot fire (``mu`` shrinks with ``sigma``). The margin ``0.4`` (not ``0.5``) leaves
  ``max^0.1`` (``6e30`` in float64) of headroom for the per-generation growth of ``d`` and for the
  products ``d_i d_j``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

__all__ = ["CONVERGED", "convergence_stops", "precision_bounds", "record_generation", "succeeded"]

#: The stops that mean the distribution has contracted onto a point: scipy's sense of
#: ``success`` when no ``target`` is given. A plateau (``tolflatfitness``, ``flatfitness``),
#: stagnation, the condition, the budget, a callback or a numerical stop is not one.
CONVERGED = ("tolx", "tolfun", "noeffectcoord")


def succeeded(stop: dict[str, Any], target: float | None) -> bool:
    """``success`` of a run that stopped for the reasons ``stop``: with a ``target``, a value
    at or below it was found (``"ftarget"``); without one, the run converged (``CONVERGED``),
    so a converged run does not report failure for want of a target it was never given."""
    if target is not None:
        return "ftarget" in stop
    return any(key in stop for key in CONVERGED)


def precision_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """``(tiny^0.4, max^0.4)`` of ``dtype``: the range allowed to the precision's eigenvalues."""
    info = torch.finfo(dtype)
    return info.tiny**0.4, info.max**0.4


def convergence_stops(es: Any) -> dict[str, Any]:
    """The convergence and numerical stop reasons that hold for the ``NESBase`` ``es`` now.

    Called after at least one generation; returns ``{reason: value}`` (empty: continue).
    """
    out: dict[str, Any] = {}
    stds = es.dist.stds()
    if es.tolx > 0 and float(stds.max()) < es.tolx:
        out["tolx"] = es.tolx
    # The mean moves by sums of u_i delta_i with |u| <= 1: a step of 0.2 std that rounds
    # away in every coordinate means no generation can change the mean.
    if bool(torch.equal(es.mean + 0.2 * stds, es.mean)):
        out["noeffectcoord"] = float(stds.max())
    if es.tolflatfitness > 0 and es._flat_gens >= es.tolflatfitness:
        out["tolflatfitness"] = es._flat_gens
    window = 10 + int(math.ceil(30 * es.n / es.popsize))
    if len(es._gen_best) >= window:
        recent = es._gen_best[-window:]
        span = max(recent) - min(recent)
        if es.tolfun > 0 and span < es.tolfun and es._gen_range < es.tolfun:
            out["tolfun"] = es.tolfun
        if span == 0 and es._gen_range == 0:
            out["flatfitness"] = window
    if es.tolstagnation > 0 and _stagnated(es):
        out["tolstagnation"] = es.tolstagnation
    lo, hi = precision_bounds(es.dtype)
    bounds = es.dist.precision_range()
    if bounds is not None:
        if not (bounds[0] >= lo and bounds[1] <= hi):  # NaN fails too
            out["scalerange"] = bounds
    else:
        # Only the diagonal is free to read: Sigma_ii <= lambda_max(Sigma) = 1 / lambda_min(S),
        # so a variance above 1 / lo shows that the precision left the range.
        top = float(stds.max())
        if not top * top <= 1.0 / lo:
            out["scalerange"] = top
    cond = es.dist.condition()
    if cond is not None and es.max_condition > 0 and cond > es.max_condition * es._cond0:
        out["condition"] = cond
    return out


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _stagnated(es: Any) -> bool:
    """pycma's ``tolstagnation`` test on the kept every-5th-generation bests and medians."""
    m = len(es._hist5_best)
    if m <= 100 or es.countiter <= es.n * (5 + 100 / es.popsize):
        return False
    if (es.countevals - es.evals_best) / es.popsize <= es.tolstagnation / 2:
        return False
    block = int(max(es.tolstagnation / 10, m / 10))
    if not 2 * block < m:
        return False
    best, med = es._hist5_best, es._hist5_median
    return _median(med[-block:]) >= _median(med[-2 * block : -block]) and _median(
        best[-block:]
    ) >= _median(best[-2 * block : -block])


def record_generation(es: Any, T: torch.Tensor, f: Any) -> None:
    """Count a generation of ``es`` (a ``NESBase``) with candidates ``T`` and values ``f`` and
    update what the stopping tests and the result read: the best point, the last generation's
    best and range, the flat-fitness count, pycma's sampled histories of best and median
    values, and the history."""
    es.countiter += 1
    es.countevals += es.popsize
    # Python floats: on ~10 values cheaper than numpy reductions (the same values).
    fl = f.tolist()
    finite = [v for v in fl if math.isfinite(v)]
    if finite:
        lo = min(finite)
        i = fl.index(lo)  # the first minimum, as np.argmin over the finite values
        if lo < es.fbest:
            es.fbest, es.xbest = lo, T[i].clone()
            es.evals_best = es.countevals - es.popsize + i + 1
        es._gen_best.append(lo)
        es._gen_range = max(finite) - lo if len(finite) == len(fl) else math.inf
        # pycma's flat-fitness test: the best value ties the 75th-percentile one
        # (non-finite values rank last, as in the utilities).
        k = int(0.75 * len(fl))
        flat = k < len(finite) and sorted(finite)[k] == lo
        es._flat_gens = es._flat_gens + 1 if flat else 0
    else:
        es._gen_best.append(math.inf)
        es._gen_range = math.inf
        es._flat_gens = 0
    if es.countiter % 5 == 0:  # pycma's sampling of its long histories
        ranked = sorted(v if math.isfinite(v) else math.inf for v in fl)
        es._hist5_best.append(ranked[0])
        es._hist5_median.append(statistics.median(ranked))
    es._hist_nfev.append(es.countevals)
    # NaN until a value is finite: there is no best value yet (result.fun is NaN then too).
    es._hist_fun.append(es.fbest if es.xbest is not None else math.nan)
    es._hist_time.append(es._busy)
