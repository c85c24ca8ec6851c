"""The generic evolution strategy: the ask/tell state machine ``NESBase`` and its result.

One generation, whatever the search distribution ``N(mu, Sigma)``, ``Sigma = A A^T``:

    z_i ~ N(0, I)                      (mirrored pairs z, -z; ``ask``)
    w_i = mu + A z_i                   (``SearchDistribution.transform``)
    u_i = rank utilities of f(w_i)     (``es_utilities``; distance-weighted while moving)
    eta_sigma, eta_B from the phase of the evolution path   (``es_rates.DXSchedule``)
    mu, Sigma <- SearchDistribution.update(mu, z, A z, u, eta_mu, eta_sigma, eta_B, p_c, c1)

The specialisations choose ``A`` and its update (``_make_distribution``) and the defaults of
the switches: spectral NES (``nes.NES``), xNES (``xnes.XNES``) and Cholesky NES
(``cholesky_nes.CholeskyNES``). The evaluation loop is ``es_eval``, the stopping tests
``es_stop``, the argument checks ``es_checks``; the techniques and their defaults are
described in the ``nes`` module docstring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ..validation import check_flag, resolve_device
from .es_checks import (
    check_choice,
    check_max_evals,
    check_nonneg,
    check_options,
    check_popsize,
    check_population,
    check_rate,
    check_seed,
    check_sigma0,
    check_sigma0_range,
    check_state_dtype,
    check_target,
    check_values,
    check_x0,
)
from .es_defaults import SWITCHES, default_tolstagnation
from .es_eval import _check_vectorized, run_optimizer
from .es_inject import whiten_population
from .es_rates import DXSchedule, csa_rates, rank_moving_shape, rank_one_rates, xnes_rate
from .es_search import SearchDistribution
from .es_stop import convergence_stops, record_generation, succeeded
from .es_utilities import distance_utilities, rank_utilities, utility_weights
from .result import NESResult, history, result_message

__all__ = ["NESBase", "NESResult"]


class NESBase:
    """The ask/tell driver shared by spectral NES and the NES baselines (pycma-style API).

    Subclasses choose the covariance representation (``_make_distribution``) and the
    defaults of the four switches. See ``NES`` for the arguments.
    """

    #: Defaults of the switches ``mirrored``, ``distance_weights``, ``adaptive_rates`` and
    #: ``rank_one`` for this class.
    DEFAULTS = dict(SWITCHES)
    name = "NES"
    #: Factor of the DX-NES shape rate while the path stagnates (``DXSchedule``).
    STAGNATING_SHAPE = 1.4
    #: Default of ``moving_shape``: DX-NES's own update for the baselines.
    MOVING_SHAPE = "dx"
    #: Keyword options of the search distribution (``_make_distribution``).
    DISTRIBUTION_OPTIONS: tuple[str, ...] = ("cayley", "jacobi")

    def __init__(
        self,
        x0: Any,
        sigma0: Any,
        popsize: int | None = None,
        seed: int | None = None,
        *,
        eta_mu: float = 1.0,
        eta_sigma: float | None = None,
        eta_B: float | None = None,
        mirrored: bool | None = None,
        distance_weights: bool | None = None,
        adaptive_rates: bool | None = None,
        rank_one: bool | None = None,
        max_evals: int | None = None,
        target: float | None = None,
        tolx: float = 1e-11,
        tolfun: float = 1e-11,
        tolflatfitness: float = 2,
        tolstagnation: float | None = None,
        max_condition: float = 1e14,
        step_size: str = "dx",
        moving_shape: str | None = None,
        dtype: torch.dtype = torch.float64,
        device: Any = None,
        **distribution_options: Any,
    ) -> None:
        self._start = time.perf_counter()
        check_options(distribution_options, NESBase.__init__, self.DISTRIBUTION_OPTIONS, self.name)
        x0_t, self._torch_io = check_x0(x0)
        # Torch in, torch out in the input's floating dtype and on its device (the state
        # keeps ``dtype`` and ``device``); an integer tensor's points come in ``dtype``.
        self._io_dtype = x0_t.dtype if x0_t.is_floating_point() else dtype
        self._io_device = x0_t.device
        n = x0_t.shape[0]
        self.n = n
        check_state_dtype(dtype)
        if not bool(torch.isfinite(x0_t.to(dtype)).all()):  # finite in its own dtype only
            raise ValueError(
                f"x0: an entry is beyond the range of the search dtype {dtype} "
                f"(largest {torch.finfo(dtype).max:.3g}); pass dtype=torch.float64"
            )
        sigma = check_sigma0(sigma0, n)
        check_sigma0_range(sigma, dtype)
        # the start's own condition (per-coordinate sigma0): the `condition` stop measures
        # what the run learned on top of it, as pycma's (CMA_stds scale C, not its test)
        self._cond0 = float((sigma.max() / sigma.min()) ** 2)
        self.mirrored = self._switch("mirrored", mirrored)
        self.distance_weights = self._switch("distance_weights", distance_weights)
        self.adaptive_rates = self._switch("adaptive_rates", adaptive_rates)
        self.rank_one = self._switch("rank_one", rank_one)
        self.popsize = popsize = check_popsize(popsize, n, self.mirrored)
        self.eta_mu = cast(float, check_rate(eta_mu, "eta_mu", optional=False))
        self._eta_sigma = check_rate(eta_sigma, "eta_sigma")
        self._eta_B = check_rate(eta_B, "eta_B")
        self.max_evals = check_max_evals(max_evals)
        self.target = check_target(target)
        self.tolx = check_nonneg(tolx, "tolx")
        self.tolfun = check_nonneg(tolfun, "tolfun")
        self.tolflatfitness = check_nonneg(tolflatfitness, "tolflatfitness")
        stag = default_tolstagnation(n, popsize) if tolstagnation is None else tolstagnation
        self.tolstagnation = check_nonneg(stag, "tolstagnation")
        self.max_condition = check_nonneg(max_condition, "max_condition")
        self.step_size = check_choice(step_size, "step_size", ("dx", "csa"))
        moving_shape = self.MOVING_SHAPE if moving_shape is None else moving_shape
        self.moving_shape = check_choice(moving_shape, "moving_shape", ("dx", "rank"))
        self.seed = check_seed(seed)
        device = resolve_device(device)  # ValueError naming device (e.g. no CUDA here)
        self._generator = torch.Generator(device=device).manual_seed(self.seed)
        self.dtype = dtype
        self.device = device
        self.mean = x0_t.to(dtype=dtype, device=device).clone()
        self.dist = self._make_distribution(sigma.to(device, dtype), **distribution_options)
        moving = rank_moving_shape(n) if self.moving_shape == "rank" else 1.5
        self.schedule = DXSchedule.make(n, popsize, self.STAGNATING_SHAPE, moving)
        self._w_hat, self._u_rank = utility_weights(popsize)
        self.path = torch.zeros(n, dtype=dtype, device=device)
        self.path_c = torch.zeros(n, dtype=dtype, device=device)
        self.c_c, c1 = rank_one_rates(n, self.schedule.mu_eff)
        self.c1 = c1 if self.rank_one else 0.0
        # step_size="csa": CMA-ES's step-size path and constants (es_rates.csa_rates)
        self.path_s = torch.zeros(n, dtype=dtype, device=device)
        self._csa = csa_rates(n, self.schedule.mu_eff, popsize)
        self.phase = "converging"
        self.rates = (self.eta_mu, 0.0, 0.0)
        self.countiter = 0
        self.countevals = 0
        self.xbest: Tensor | None = None
        self.fbest = math.inf
        self.evals_best = 0
        self._gen_best: list[float] = []
        self._gen_range = math.inf
        self._flat_gens = 0  # consecutive generations whose best ties the 75th percentile
        # every 5th generation's best and median value (pycma's histbest / histmedian,
        # oldest first), for the tolstagnation test
        self._hist5_best: list[float] = []
        self._hist5_median: list[float] = []
        self._hist_nfev: list[int] = []
        self._hist_fun: list[float] = []
        self._hist_time: list[float] = []
        self._busy = 0.0  # seconds spent in ask/tell
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None
        self._stop_extra: dict[str, Any] = {}

    def _switch(self, name: str, value: bool | None) -> bool:
        """The switch ``name``: ``value``, or this class's default when ``None``."""
        return check_flag(self.DEFAULTS[name] if value is None else value, name)

    # Hooks ----------------------------------------------------------------------------

    def _make_distribution(self, stds: Tensor, **options: Any) -> SearchDistribution:
        """The search distribution with standard deviations ``stds``; each specialisation
        overrides it (the spectral search here keeps ``NESBase(...)`` itself working)."""
        from .nes_search import SpectralSearch

        return SpectralSearch(stds, **options)

    def _fixed_rates(self) -> tuple[float, float]:
        r = xnes_rate(self.n)
        return (
            r if self._eta_sigma is None else self._eta_sigma,
            r if self._eta_B is None else self._eta_B,
        )

    # ask / tell -----------------------------------------------------------------------

    def ask(self) -> Any:
        """A new population, shape (popsize, n): numpy, or torch when ``x0`` was a tensor.

        With mirrored sampling rows ``i`` and ``i + popsize/2`` are ``mu + delta`` and
        ``mu - delta``. Asking again replaces the pending population.
        """
        start = time.perf_counter()
        lam, n = self.popsize, self.n
        k = lam // 2 if self.mirrored else lam
        z = torch.randn(k, n, generator=self._generator, dtype=self.dtype, device=self.device)
        if self.mirrored:
            z = torch.cat([z, -z])
        delta = self.dist.transform(z)
        X = self.mean[None, :] + delta
        out = self._output(X)
        if torch.finfo(self._io_dtype).bits < torch.finfo(self.dtype).bits:
            # A coarser start (float32, as torch.ones(n)) rounds the points: tell must still
            # know them as asked (their own samples, not re-whitened and clipped as injected).
            X = torch.as_tensor(out).to(device=self.device, dtype=self.dtype)
        self._pending = (z, delta, X)
        self._busy += time.perf_counter() - start
        return out

    def _output(self, X: Tensor) -> Any:
        if self._torch_io:
            return X.to(device=self._io_device, dtype=self._io_dtype, copy=True)
        return X.detach().cpu().to(self._io_dtype, copy=True).numpy()

    def tell(self, X: Any, fvals: Any) -> None:
        """Update the distribution from the population ``X`` and its values ``fvals``.

        ``X`` is normally what ``ask`` returned; other points of the same shape (repaired or
        injected) are accepted, whitened against the current distribution and clipped to a
        whitened length ``sqrt(n) + 2n / (n + 2)`` as pycma does (``es_inject``). ``fvals``:
        shape (popsize,), real; NaN/Inf are ranked worst (see the module docstring).
        """
        start = time.perf_counter()
        T = check_population(X, self.popsize, self.n, self.dtype, self.device)
        f = check_values(fvals, self.popsize)
        z, delta = whiten_population(self.dist, self.mean, T, self._pending)
        self._pending = None
        u_rank = rank_utilities(f, self._u_rank)
        if np.any(u_rank != 0):
            try:
                self._update(z, delta, f, u_rank)
            except FloatingPointError as exc:  # _update commits nothing when it fails
                self._stop_extra["numerical"] = str(exc)
        self._busy += time.perf_counter() - start
        # The best point as told: a coarser state (float32, a float64 start) would round a
        # point that ask did not produce, and result.fun would not be f(result.x).
        told = T
        if torch.finfo(self._io_dtype).bits > torch.finfo(self.dtype).bits:
            told = check_population(X, self.popsize, self.n, self._io_dtype, self.device)
        record_generation(self, told, f)

    def _update(self, z: Tensor, delta: Tensor, f: np.ndarray, u_rank: np.ndarray) -> None:
        """One DX-NES generation; the state is committed only when every step succeeded."""
        sched = self.schedule
        u_rank_t = torch.as_tensor(u_rank, dtype=self.dtype, device=self.device)
        c = sched.c_sigma
        step = self.dist.path_coordinates(u_rank_t @ z)
        path = (1 - c) * self.path + math.sqrt(c * (2 - c) * sched.mu_eff) * step
        state = sched.state(float(torch.linalg.vector_norm(path)))
        u, u_shape = u_rank_t, None
        if self.distance_weights and state == 0:
            u = distance_utilities(f, z, self._w_hat, sched.alpha, self.popsize)
            if self.moving_shape == "rank":  # shape from the rank utilities (es_rates)
                u_shape = u_rank_t
        if self.adaptive_rates:
            eta_sigma = sched.eta_sigma[state] if self._eta_sigma is None else self._eta_sigma
            eta_B = sched.eta_B[state] if self._eta_B is None else self._eta_B
        else:
            eta_sigma, eta_B = self._fixed_rates()
        csa = self.step_size == "csa"
        path_s, log_scale = self.path_s, 0.0
        if csa:
            # Cumulative step-size adaptation (CMA-ES) in place of the xNES scale gradient
            # while the path is not moving (the moving phase keeps DX-NES's eta_sigma = 1).
            c_s, d_s, expected = self._csa
            path_s = (1 - c_s) * path_s + math.sqrt(c_s * (2 - c_s) * sched.mu_eff) * step
            if state > 0:
                eta_sigma = 0.0
                norm = float(torch.linalg.vector_norm(path_s))
                log_scale = c_s / d_s * (norm / expected - 1.0)
        path_c, whitened_c, c1 = self.path_c, None, 0.0
        if self.c1 > 0:
            # Cumulation path of the mean shift in units of the geometric-mean std (CMA-ES's
            # p_c); its rank-one term is applied while moving (CR-FM-NES).
            scale = self.dist.scale()
            cc = self.c_c
            shift = (u @ delta) / scale
            path_c = (1 - cc) * path_c + math.sqrt(cc * (2 - cc) * sched.mu_eff) * shift
            if state == 0 or csa:
                whitened_c = self.dist.whiten(path_c[None, :])[0] * scale
                c1 = self.c1
                if csa:  # CMA-ES's rank-one term c1 (y y^T - I): its trace part scales
                    y2 = float(whitened_c @ whitened_c)
                    log_scale += 0.5 * c1 * (y2 / self.n - 1.0)
        rates = (self.eta_mu, eta_sigma, eta_B)
        mean = self.dist.update(self.mean, z, delta, u, *rates, whitened_c, c1, u_shape)
        # (the fast spectral step has checked the mean with the new point)
        if not getattr(self.dist, "fast", False) and not bool(torch.isfinite(mean).all()):
            raise FloatingPointError("NES.tell: the mean became non-finite")
        if log_scale != 0.0:
            # At most a factor e per generation, as pycma's CSA (``exp(min(1, .))``): a long
            # rank-one path (|y|^2 / n >> 1) cannot overflow the scale.
            self.dist.rescale(math.exp(max(-1.0, min(1.0, log_scale))))
        self.mean, self.path, self.path_c, self.path_s = mean, path, path_c, path_s
        self.phase = DXSchedule.STATES[state]
        self.rates = (self.eta_mu, eta_sigma, eta_B)

    # Termination and results ----------------------------------------------------------

    def stop(self) -> dict[str, Any]:
        """Termination criteria that hold now (empty dict: continue), pycma style.

        ``ftarget`` (a value at or below ``target``, as pycma's ``f <= ftarget``),
        ``maxfevals``, ``callback`` (set by ``optimize``), ``numerical`` (a step failed in
        floating point: the state was left unchanged), and the tests of ``es_stop``:
        ``tolx``, ``tolfun``, ``tolflatfitness``, ``tolstagnation``, ``condition`` and,
        always on, ``noeffectcoord``, ``flatfitness``, ``scalerange`` (a run continued past
        convergence stops cleanly instead of overflowing).
        """
        out: dict[str, Any] = dict(self._stop_extra)
        if self.target is not None and self.fbest <= self.target:
            out["ftarget"] = self.target
        if self.max_evals is not None and self.countevals >= self.max_evals:
            out["maxfevals"] = self.max_evals
        if self.countiter == 0:
            return out
        out.update(convergence_stops(self))
        return out

    @property
    def result(self) -> NESResult:
        """The current ``NESResult`` (best point, counts, history, time)."""
        stop = self.stop()
        x = self.xbest if self.xbest is not None else self.mean
        return NESResult(
            x=self._output(x),
            fun=self.fbest if self.xbest is not None else math.nan,
            nfev=self.countevals,
            nit=self.countiter,
            success=self.xbest is not None and succeeded(stop, self.target),
            stop=stop,
            message=result_message(stop, self.xbest is not None or not self.countevals),
            method=self.name,
            history=history(self._hist_nfev, self._hist_fun, self._hist_time),
            time=time.perf_counter() - self._start,
            xmean=self._output(self.mean),
            stds=self._output(self.dist.stds()),
            evals_best=self.evals_best,
            popsize=self.popsize,
            seed=self.seed,
        )

    def optimize(
        self,
        f: Callable[[Any], Any],
        *,
        callback: Callable[[NESBase], Any] | None = None,
        vectorized: bool | None = False,
        executor: Any = None,
        map: Callable[..., Any] | None = None,
    ) -> NESResult:
        """Run ask/evaluate/tell until ``stop()``; return ``result``.

        The contract of ``f`` is declared, never guessed: ``vectorized=False`` (default)
        calls ``f`` once per point (n,) and each call must return a real scalar;
        ``vectorized=True`` calls it on a batch (k, n) that must return shape (k,) (the first
        generation is evaluated as two batches, its first row and the rest, so that a
        per-point ``f`` declared vectorised fails the shape test even when n == popsize; no
        extra evaluation). A wrong declaration raises ``ValueError`` naming ``vectorized``.
        ``vectorized=None`` (the former probing default) is deprecated and means ``False``
        with a ``FutureWarning``. ``f`` gets numpy arrays, or torch tensors when ``x0`` was one.
        ``callback(self)`` runs after every generation; a true bool or int scalar returned
        (``validation.callback_stops``) or ``StopIteration`` raised stops it (``callback``).

        Parallel fitness evaluation: ``executor`` (a ``concurrent.futures.Executor``-like
        object with ``.map``) or ``map`` (a callable with the builtin ``map`` signature), not
        both: one call ``f(x)`` per candidate row, bitwise the serial run for a fixed seed
        (the contract in full: ``es_eval.run_optimizer``).

        Raises ``ValueError`` if both ``executor`` and ``map`` are given or ``vectorized=True``
        is combined with one of them, ``TypeError`` (naming the argument) if ``executor`` lacks
        a callable ``.map`` or ``map`` is not callable; nothing is evaluated or changed then.
        """
        vectorized = _check_vectorized(vectorized)
        return run_optimizer(
            self, f, callback=callback, vectorized=vectorized, executor=executor, map=map
        )

    def covariance(self) -> Tensor:
        """Dense covariance ``Sigma`` of the search distribution (for inspection)."""
        return self.dist.covariance()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.n}, popsize={self.popsize}, "
            f"evals={self.countevals}, fbest={self.fbest:.3e})"
        )
