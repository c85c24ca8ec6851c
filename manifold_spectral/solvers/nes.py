"""Natural evolution strategies on the spectral manifold (paper Sec. 4.3, App. C, Fig. 9).

Gradient-free minimisation of ``l(w)`` with a Gaussian search distribution
``q = N(mu, S^-1)`` whose precision ``S = B Diag(d) B^T`` lives on ``SpectralSPD`` and is
learned by the generic Gaussian layer (``manifold_spectral.Gaussian``, ``gamma = 0``, root
``p = 1``, exact exponential) from a curvature estimate that uses function values only.

One generation (``NES.ask`` / ``NES.tell``):

    z_i ~ N(0, I)                      (mirrored pairs z, -z by default)
    w_i = mu + delta_i,  delta_i = B Diag(d^-1/2) z_i        (= S^-1/2 z_i in eigen-coordinates)
    u_i = rank utilities of l(w_i)     (best largest, sum u = 0; NaN/Inf ranked worst)
    H   = sum_i f_i (S delta_i delta_i^T S - S),  g = sum_i f_i S delta_i,  f_i = -u_i
    S  <- RGD step of the Gaussian layer with curvature H and beta2 = eta_B
    mu <- mu - beta1 S^-1 g = mu + eta_mu sum_i u_i delta_i     (beta1 = eta_mu, old S)

``H`` and ``g`` are the REINFORCE (Stein / Bonnet-Price) estimates of ``E_q[hess l]`` and
``E_q[grad l]`` with the shaped values ``f_i`` in place of ``l(w_i)`` (``REINFORCE``). In the
eigenbasis ``B^T H B = Diag(d^1/2) K Diag(d^1/2)`` with ``K = sum_i f_i (z_i z_i^T - I)``: no
dense ``S``, no inverse, no eigendecomposition, no matrix exponential per generation; the
precision moves by one chart step (``d <- d exp(.)``, ``B <- B Cayley(.)``, each eigenvector
pair turned by the exact angle of its 2 x 2 eigenproblem: ``SpectralSearch``, ``jacobi``).

Learning-rate mapping to xNES (Glasmachers et al. 2010). xNES keeps ``Sigma = A A^T`` and, for
the same ``z_i`` and utilities, with ``G = sum_i u_i (z_i z_i^T - I) = -K``,
``G_sigma = tr(G)/n``, ``G_B = G - G_sigma I``, updates
``A <- A expm(eta_sigma/2 G_sigma I + eta_B/2 G_B)``, so
``S_new = Sigma_new^-1 = A^-T (I - eta_sigma G_sigma I - eta_B G_B) A^-1 + O(eta^2)``.
The Gaussian layer's step is ``S_new = S + beta2 H + O(beta2^2)`` (DESIGN.md, Claim 2 with
``gamma = 0``), and with ``A = B Diag(d^-1/2)``, ``H = A^-T K A^-1``. Hence the two agree to
first order when

    beta1 = eta_mu,   beta2 = eta_B,   and the trace part of K is weighted by eta_sigma/eta_B,

i.e. ``REINFORCE(..., scale_weight=eta_sigma / eta_B)`` uses
``K' = K_B + (eta_sigma / eta_B) tr(K)/n I`` (coordinate-free:
``H' = H_B + r tr(S^-1 H)/n S``). The mean steps agree exactly (``mu + eta_mu A sum u z``).
``tests/test_solvers_nes.py`` checks the O(eta^2) agreement on one generation.

Techniques to save function evaluations (paper: "the techniques of Wierstra et al. (2008) and
Fukushima et al. (2011)"), and their defaults:

* rank-based fitness shaping (Wierstra et al. 2008; xNES utilities
  ``max(0, ln(lam/2 + 1) - ln i)``, normalised, minus ``1/lam``): **on** (always). It makes the
  search invariant to monotone transformations of ``l`` and bounds the step.
* mirrored sampling (``z, -z``; Brockhoff et al. 2010, used by DX-NES): **on**. It removes
  the odd-moment noise of the estimates at no cost.
* DX-NES distance-weighted utilities (Fukushima et al. 2011; the DX-NES-IC constants of
  Nomura & Ono 2021): while the evolution path says the distribution is *moving*, the
  positive utilities are multiplied by ``exp(alpha ||z_i||)`` (far good samples count more),
  which lets the mean travel and the distribution widen along the way: **on**.
* DX-NES movement-dependent learning rates: ``eta_sigma`` and ``eta_B`` depend on whether the
  evolution path ``p`` (in the symmetric whitened frame ``B z``, invariant to rotations of
  ``B`` inside near-repeated eigenvalues) is long (moving: ``eta_sigma = 1``), medium
  (stagnating) or short (converging): **on**. The xNES rates (``eta_sigma = eta_B =
  0.6 (3 + ln n) / (n sqrt(n))``) adapt the step size ~n times slower; with the DX-NES rates
  the step size adapts at CMA-ES speed (``manifold-spectral reproduce nes`` runs xNES with
  both).
* rank-one evolution-path term (CMA-ES's cumulation path ``p_c`` of the mean shift, in units
  of the geometric-mean standard deviation, applied while moving as in CR-FM-NES, Nomura &
  Ono 2022): **on**. It enters the same precision step as one more REINFORCE "sample"
  ``delta = s p_c`` (``s = det(Sigma)^(1/2n)``) with weight ``c1 / eta_B``
  (``c1 = 2 / ((n + 1.3)^2 + mu_eff)``, CMA-ES's value) and no trace part
  (``scale_weight = 0``: it shapes, it does not scale), summed with the sample estimate
  (``CurvatureSum``). It learns the direction of travel.
* importance mixing (Wierstra et al. 2008): **not implemented**. It reuses samples when
  consecutive distributions overlap, i.e. with small rates; with the DX-NES rates the
  distribution moves too far per generation for the reuse to pay.

With ``adaptive_rates=False, distance_weights=False, mirrored=False, rank_one=False`` the
driver is plain xNES in spectral coordinates.

NaN or Inf function values (and ``-inf``) are ranked worst, ties share the mean utility of
their ranks; such values never enter the state (the best point, the history and the
termination tests only see finite values), and if every value of a generation is non-finite
the utilities are all zero and the distribution does not move.

Where the pieces live: the generic evolution strategy that spectral NES, xNES (``xnes``) and
Cholesky NES (``cholesky_nes``) specialise is ``es`` (the ask/tell driver ``NESBase`` and
``NESResult``) with ``es_search`` (the search-distribution contract and the shared xNES
whitened gradient), ``es_utilities`` (rank utilities), ``es_rates`` (step-size control),
``es_defaults``, ``es_checks``, ``es_stop`` (termination) and ``es_eval`` (the evaluation
loop and executors). The spectral specialisation is ``nes_search`` (``REINFORCE``,
``SpectralSearch``) and its closed-form step ``nes_step``; this module holds ``NES`` and the
front door ``minimize`` and re-exports the names above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..validation import check_flag

# The generic evolution strategy (es*) and the spectral search (nes_search), re-exported: the
# public names of this module before it was split keep working.
from .es import NESBase, NESResult
from .es_checks import check_incpopsize
from .es_defaults import default_max_evals
from .es_eval import (  # noqa: F401
    _check_callables,
    _check_mapper,
    _check_vectorized,
    run_optimizer,
)
from .es_rates import DXSchedule, xnes_rate
from .es_search import SearchDistribution
from .es_stop import convergence_stops  # noqa: F401 (re-exported)
from .es_utilities import rank_utilities, utility_weights
from .nes_search import REINFORCE, CurvatureSum, SpectralSearch
from .result import OptimizeResult  # noqa: F401 (re-exported)

__all__ = [
    "REINFORCE",
    "CurvatureSum",
    "rank_utilities",
    "utility_weights",
    "DXSchedule",
    "xnes_rate",
    "SearchDistribution",
    "SpectralSearch",
    "NESBase",
    "NES",
    "NESResult",
    "minimize",
]


class NES(NESBase):
    """Spectral NES (paper Sec. 4.3): ask/tell in pycma's style.

    ``es = NES(x0, sigma0)``; ``while not es.stop(): X = es.ask(); es.tell(X, f(X))``;
    ``es.result``. The search distribution is ``N(mean, S^-1)`` with ``S = B Diag(d) B^T`` on
    ``SpectralSPD``, updated by ``Gaussian`` with the ``REINFORCE`` curvature (module
    docstring).

    Args:
        x0: initial mean, shape (n,), numpy/list (then ``ask`` returns numpy) or torch.
        sigma0: initial standard deviation (> 0), a scalar or one per coordinate.
        popsize: samples per generation; default ``4 + floor(3 ln n)``, rounded up to even
            with mirrored sampling.
        seed: seed of the sampler (default: fresh entropy; stored in ``result.seed``).
        eta_mu: mean learning rate ``beta1`` (default 1).
        eta_sigma, eta_B: scale and shape learning rates; ``None`` (default): the DX-NES
            schedule (``adaptive_rates=True``) or the xNES value
            ``0.6 (3 + ln n)/(n sqrt n)``. A number fixes that rate.
        mirrored: mirrored sampling ``z, -z`` (default on).
        distance_weights: DX-NES distance-weighted utilities while moving (default on).
        adaptive_rates: DX-NES movement-dependent ``eta_sigma``, ``eta_B`` (default on).
        rank_one: the rank-one evolution-path term while moving (default on).
        max_evals, target, tolx, tolfun, tolflatfitness, tolstagnation, max_condition:
            termination (see ``stop`` and ``es_stop``; ``0`` turns a test off;
            ``tolstagnation=None``: pycma's default ``int(100 + 100 n^1.5 / popsize)``).
        step_size: ``"dx"`` (default): the xNES scale gradient with the DX-NES rates in every
            phase; ``"csa"``: CMA-ES's cumulative step-size adaptation outside the *moving*
            phase and the rank-one term in every phase, in CMA-ES's form (``es_rates.
            csa_rates``; docs/nes.md: more robust on ridges, slower on smooth unimodal
            functions).
        moving_shape: ``"rank"`` (default): in the *moving* phase the shape (traceless)
            part of the covariance step uses the rank utilities, at
            ``es_rates.rank_moving_shape(n)`` x the DX-NES base rate (3 up to n = 10, 1.5
            from n = 20), while the mean and the scale keep the distance weights (those put
            most of the weight on a few far samples: a noisy shape estimate, which a higher
            rate amplifies); ``"dx"``: DX-NES's update, distance weights for all at
            ``1.5 x`` the base (the baselines' default).
        dtype, device: of the state (default float64, CPU).
        cayley: ``"exact"`` (default) or ``"neumann"`` Cayley map of the precision step.
        jacobi: turn each eigenvector pair by the exact angle of its 2 x 2 eigenproblem
            (default ``True``; ``SpectralSearch``), not the linearised one.
    """

    name = "spectral NES"
    STAGNATING_SHAPE = 4.2
    MOVING_SHAPE = "rank"

    def _make_distribution(self, stds: Tensor, **options: Any) -> SearchDistribution:
        return SpectralSearch(stds, **options)


def minimize(
    f: Callable[[Any], Any],
    x0: Any,
    sigma0: Any,
    *,
    max_evals: int | None = None,
    target: float | None = None,
    seed: int | None = None,
    callback: Callable[[NESBase], Any] | None = None,
    popsize: int | None = None,
    vectorized: bool | None = False,
    executor: Any = None,
    map: Callable[..., Any] | None = None,
    restarts: int = 0,
    bipop: bool = False,
    incpopsize: float = 2.0,
    **options: Any,
) -> NESResult:
    """Minimise ``f`` with spectral NES; returns a ``NESResult`` (x, fun, nfev, nit, history,
    time, ...).

    ``f`` takes one point (``vectorized=False``, default) or a batch (``vectorized=True``),
    declared, never guessed; a wrong declaration is a ``ValueError`` (see
    ``NESBase.optimize``), so ``result.fun`` is always ``f(result.x)``. Numpy or torch
    following ``x0``. ``max_evals`` defaults to ``popsize (100 + 150 (n + 3)^2 / sqrt(popsize))``
    (pycma's default iteration budget); ``target`` stops at the first value at or below it.
    ``options`` go to ``NES`` (rates, switches, ``tolx``, ``tolfun``, dtype, ...); an unknown
    one is a ``TypeError`` naming it (pycma's ``maxfevals``, ``ftarget``: ``max_evals``,
    ``target`` here).
    ``executor`` / ``map`` evaluate each generation's candidates in parallel, one call per
    candidate, with results bitwise equal to the serial run (see ``NESBase.optimize``).

    Restarts (``manifold_spectral.solvers.restarts.RestartNES``): ``restarts=k`` runs up to
    ``k`` more NES runs after a run stops on its own (``tolx``, ``tolfun``,
    ``tolflatfitness``, ``tolstagnation``, ``condition``), IPOP (popsize times ``incpopsize``
    each restart) or, with ``bipop=True``, BIPOP (IPOP runs interleaved with small-population,
    small-step runs); ``max_evals`` is the budget of all runs together. ``x0`` may then be a
    callable returning a fresh start per run. ``adapt`` (default ``True``) lets each restart
    learn from why the previous run ended (``restart_rules``); it means nothing without one.
    """
    _check_callables(f, callback)  # before anything is built (a callable x0 is called)
    vectorized = _check_vectorized(vectorized)
    _check_mapper(executor, map, vectorized)
    es: Any
    if restarts or bipop or callable(x0):
        from .restarts import RestartNES

        es = RestartNES(
            x0,
            sigma0,
            popsize,
            seed,
            restarts=restarts,
            bipop=bipop,
            incpopsize=incpopsize,
            max_evals=max_evals,
            target=target,
            **options,
        )
    else:
        # Rules of restarts, meaningless in a single run, but a wrong value is still an error.
        check_flag(options.pop("adapt", True), "adapt")
        check_incpopsize(incpopsize)
        es = NES(x0, sigma0, popsize, seed, max_evals=max_evals, target=target, **options)
        if es.max_evals is None:
            es.max_evals = default_max_evals(es.popsize, es.n)
    return es.optimize(f, callback=callback, vectorized=vectorized, executor=executor, map=map)
