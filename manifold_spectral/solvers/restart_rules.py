"""How a restart learns from why the previous run ended (``RestartNES``, ``adapt=True``).

IPOP answers every stop with a larger population, which is the cure for a run that
converged to a local minimum of a multi-modal function (its values flattened: ``tolfun``).
Two other stops say that the *scale* collapsed before the run could learn what it needed,
and a larger population with the same step-size rule collapses the same way:

* ``tolflatfitness`` (a plateau of a step-like function, BBOB f7): most samples tie with
  the best, the tied utilities carry no direction and the xNES scale gradient of the few
  others shrinks the distribution onto the plateau (a fixed rate per generation, whatever
  the population). Cumulative step-size adaptation (CMA-ES's CSA, ``step_size="csa"``)
  keeps the scale when the ranks are random: under tied (random) selection its path keeps
  its expected length and the scale stays, so a larger population can cross the plateaus
  instead of settling on one. The next run uses ``step_size="csa"`` and independent samples
  (``mirrored=False``): a mirrored pair ``m +- sigma z`` whose two points land on one plateau
  ties, both get the same utility and cancel in the mean step, so the step-size path (CSA's
  as DX-NES's) comes out shorter than under random selection and the scale shrinks onto the
  plateau, the collapse the rule is there to avoid; independent tied samples do not cancel
  (they add up to a random step).
* ``tolx`` (every standard deviation below ``tolx`` while the values of a generation still
  differ by more than ``tolfun``): at a smooth minimum the values flatten like ``sigma^2``,
  so ``tolfun`` fires at ``sigma ~ sqrt(tolfun)`` long before ``tolx``; ``tolx`` first means
  the values still change linearly with the step: the run converged onto a kink or a sharp
  ridge (BBOB f13, sharp ridge; f18, Schaffer F7, whose terms are ``s^(1/2)``). On a sharp
  ridge the ranks see a sphere across the ridge (the distance to it shrinks with the scale,
  at the sphere's rate) and nothing along it, so the scale gradient shrinks every direction
  at that rate while the shape must grow the variance along the ridge from near-neutral
  samples, at the shape rate ``eta_B``, about ten times smaller (the scale falls by decades while
  the condition barely grows). The next
  run divides the DX-NES scale rate of the *stagnating* phase by ``TOLX_SCALE_DAMPING``
  (4), which gives the shape four times as many generations per decade of scale. CSA is not
  used here: at large populations it shrinks the scale on a ridge as fast, and its every-phase
  rank-one term drives the condition to the ``condition`` stop.

A plateau stop also says that the run had learned part of the shape before its scale
shrank onto the plateau (the axes of the step ellipsoid), and a restart from scratch throws
that away: the next run starts from its fresh ``x0`` and its own scale but with the stopped
run's eigenbasis ``B`` and the spread of its eigenvalues (``carry_shape``), at unit
determinant and flattened to a condition of at most ``CARRIED_CONDITION``. The flattening
is a power ``C^a`` of the learned covariance (same eigenbasis, eigenvalue ratios raised to
``a <= 1``): the orientation is the function's, while the variance ratios are partly where
the run stopped, which a fresh start far away does not share. The stop counts only while the
run's scale is still a sizeable part of its start's (``PLATEAU_SCALE``): values that tie
because the scale collapsed to the floating-point resolution of a smooth minimum are a local
minimum's, whose shape would steer the next run back into its basin. After every other stop
the next run starts from a sphere: after ``tolfun`` (a local minimum of a multi-modal
function) the learned shape is that of one basin, and IPOP's fresh start is what explores
the others; after ``tolx`` the shape learned at a kink is a local one too (BBOB f17, Schaffer
F7, whose kinks are many), and carrying it helped the sharp ridge (f13) less than it cost
there (benchmarks/bench_bbob.py).

The CSA rule applies to the next run only (it reads the stop of the run just ended): on
BBOB f20/f21 the first, small runs end on plateaus and the later ones on ``tolfun`` (smooth
local minima), where CSA made every later run longer and lost solved instances. The
``tolx`` rule holds for every run after the first ``tolx`` stop: a kink is a property of the
function, and on f18 the runs that follow a ``tolx`` run end on ``tolx`` again as soon as
they are undamped. With BIPOP, "the previous run" and "every run after" are those of the new
run's own regime (``RestartNES`` passes them); the shape rule, like the CSA rule, reads
the previous run of the regime only. Neither touches the first run, which stays
bitwise the plain NES run; caller-fixed rates and an explicit ``step_size`` are left alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from ..manifolds.points import SpectralPoint

__all__ = [
    "TOLX_SCALE_DAMPING",
    "PLATEAU_SCALE",
    "CARRIED_CONDITION",
    "next_run_options",
    "adapt_run",
    "carried_shape",
    "carry_shape",
]

#: Divisor of the DX-NES stagnating scale rate in the runs after a ``tolx`` stop: a
#: compromise between the sharp ridge (BBOB f13), whose later runs fail more often with less
#: damping, and Schaffer F7 (f18), which slows with more (benchmarks/bench_bbob.py).
TOLX_SCALE_DAMPING = 4.0


#: Smallest fall of the scale (final over initial geometric-mean standard deviation) of a
#: run ending on ``tolflatfitness`` whose shape the next run takes over (``carry_shape``).
#: A step function's plateau stops a run whose samples still spread over several steps
#: (BBOB f7); ties of a run whose scale fell to about ``sqrt(eps)`` of its start are the
#: rounding of a smooth minimum's values (the plateau stops of BBOB f3, f4, f15, f19-f22),
#: a local minimum as after ``tolfun``. The two lie decades apart on either side of this
#: (benchmarks/bench_bbob.py).
PLATEAU_SCALE = 1e-4

#: Largest condition number of a carried shape's covariance: above it the learned one is
#: flattened (``carried_shape``), which keeps the orientation while a fresh start does not
#: inherit the variance ratios of where the run stopped.
CARRIED_CONDITION = 1e2


def carried_shape(
    x: SpectralPoint, d_new: torch.Tensor, max_condition: float = CARRIED_CONDITION
) -> SpectralPoint:
    """The precision a new run starts with when it takes over the shape of the precision
    ``x = B Diag(d) B^T`` of a stopped run: ``B Diag(d') B^T`` with
    ``log d' = a (log d - mean log d) + mean log d_new``, ``a = min(1, log(max_condition) /
    log(max d / min d))``. ``d_new`` are the eigenvalues the new run would start with, so
    its geometric-mean standard deviation (its scale, ``sigma0``) is kept; the learned
    covariance is normalised to unit determinant and raised to the power ``a``, which leaves
    its eigenbasis and the order of its eigenvalues and brings its condition down to at most
    ``max_condition``. Nothing is decomposed: ``B`` and ``d`` are the spectral state."""
    log_d = torch.log(x.d)
    centred = log_d - log_d.mean()
    spread = float(centred.max() - centred.min())
    limit = math.log(max_condition)
    if spread > limit:
        centred = centred * (limit / spread)
    return SpectralPoint(x.B.clone(), torch.exp(centred + torch.log(d_new).mean()))


def carry_shape(es: Any, previous: Any, fallen: float) -> str | None:
    """Start the new run ``es`` with the shape of ``previous`` (the last run of its regime,
    or ``None``) when that run ended on ``tolflatfitness`` with its scale ``fallen`` (the
    ratio of its final to its initial geometric-mean standard deviation) at least
    ``PLATEAU_SCALE``: ``es``'s precision becomes ``carried_shape(previous's precision,
    es's)``; its mean (the fresh start) and scale stay. Only between spectral search
    distributions (``NES``; a baseline's ``es_class`` keeps its own start). Returns a label
    of what was changed (``None``: nothing)."""
    if previous is None or "tolflatfitness" not in previous.stop() or fallen < PLATEAU_SCALE:
        return None
    old, new = getattr(previous.dist, "point", None), getattr(es.dist, "point", None)
    if not isinstance(old, SpectralPoint) or not isinstance(new, SpectralPoint):
        return None
    es.dist.point = carried_shape(old, new.d, CARRIED_CONDITION)
    return "shape carried"


def next_run_options(stop: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Options that the run after a run ending with ``stop`` adds to ``options``: after
    ``tolflatfitness``, ``step_size="csa"`` and ``mirrored=False`` (each unless ``options``
    fix it); ``{}`` otherwise (the ``tolx`` rule changes the schedule instead:
    ``adapt_run``)."""
    if "tolflatfitness" not in stop:
        return {}
    plateau = {"step_size": "csa", "mirrored": False}
    return {k: v for k, v in plateau.items() if k not in options}


def adapt_run(es: Any, tolx_seen: bool) -> str | None:
    """Apply the ``tolx`` rule to the new run ``es`` (an ``NESBase``) when an earlier run
    ended on ``tolx`` (``tolx_seen``): its DX-NES scale rate of the *stagnating* phase is
    divided by ``TOLX_SCALE_DAMPING``, the phase of the collapse onto a ridge (traces of
    BBOB f13: nearly all of those generations stagnate, none converges). The moving
    phase keeps ``eta_sigma = 1`` (a moving distribution is not collapsing) and the
    converging one (a path shorter than ``0.1 chi``: no direction left to learn) its fast
    rate, which ends converged runs at the usual cost. Does nothing with
    ``adaptive_rates=False`` or a fixed ``eta_sigma``. Returns a label of what was changed
    (``None``: nothing)."""
    if not tolx_seen or not es.adaptive_rates or es._eta_sigma is not None:
        return None
    moving, stagnating, converging = es.schedule.eta_sigma
    damped = (moving, stagnating / TOLX_SCALE_DAMPING, converging)
    es.schedule = dataclasses.replace(es.schedule, eta_sigma=damped)
    return f"scale rate / {TOLX_SCALE_DAMPING:g}"
